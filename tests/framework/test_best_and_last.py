"""The checkpoint policy's one callback: ``best.ckpt`` by the monitored score, ``last.ckpt`` every epoch, one write
per epoch (``last.ckpt`` a relative link to ``best.ckpt`` when they hold the same epoch), resumable and movable."""
from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins import CheckpointIO
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cli.checkpoint_policy import CheckpointPolicy, resolve_checkpoint

SCORES = (0.5, 0.7, 0.6, 0.6, 0.8)  # val/acc by epoch: improves at 0, 1 and 4
IMPROVED = (True, True, False, False, True)


class ScriptedScore(L.LightningModule):
    """A linear model (and an embedding table, like a featureless node type's) logging ``SCORES[epoch]``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.table = nn.Embedding(256, 8)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return ((self.layer(inputs + self.table.weight[:1, :4]) - targets) ** 2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/acc", SCORES[self.current_epoch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator)),
                      batch_size=8)


class FolderProbe(L.Callback):
    """What ``folder`` holds after every epoch's checkpoint: taken at the next epoch's first optimiser step (written in
    the background, the files have landed by then) and at the fit's end."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.seen = folder, []

    def _look(self) -> None:
        best, last = self.folder / "best.ckpt", self.folder / "last.ckpt"
        self.seen.append({
            "link": os.readlink(last) if last.is_symlink() else None,
            "same_inode": best.stat().st_ino == last.stat().st_ino,
            "regular_bytes": sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file() and not p.is_symlink()),
            "best_bytes": best.stat().st_size, "best_sha": hashlib.sha256(best.read_bytes()).hexdigest(),
            "best_epoch": torch.load(best, weights_only=True)["epoch"],
            "last_epoch": torch.load(last, weights_only=True)["epoch"],
            "names": sorted(p.name for p in self.folder.iterdir()),
        })

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.current_epoch > 0 and len(self.seen) < trainer.current_epoch:
            self._look()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._look()


def fit(folder: Path, epochs: int, ckpt_path: str | None = None, probe: L.Callback | None = None) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    callbacks = [*CheckpointPolicy(dirpath=str(folder.parent)).callbacks(folder), *([probe] if probe else [])]
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=callbacks, default_root_dir=folder)
    trainer.fit(ScriptedScore(), loader(), loader(), ckpt_path=ckpt_path)
    return trainer


def test_each_epoch_writes_one_file_and_last_links_to_best_when_they_coincide(tmp_path):
    folder = tmp_path / "version_0"
    probe = FolderProbe(folder)
    fit(folder, len(SCORES), probe=probe)
    assert len(probe.seen) == len(SCORES)
    for epoch, (seen, improved) in enumerate(zip(probe.seen, IMPROVED)):
        assert seen["last_epoch"] == epoch, epoch  # last.ckpt: every epoch end
        assert seen["names"] == ["best.ckpt", "last.ckpt"], epoch  # no temporaries left behind
        if improved:  # the same state: one file's bytes on disk, last.ckpt a relative link to it
            assert seen["link"] == "best.ckpt" and seen["same_inode"] and seen["best_epoch"] == epoch, epoch
            assert seen["regular_bytes"] == seen["best_bytes"], epoch
        else:  # last.ckpt its own file; best.ckpt untouched byte for byte since its epoch
            assert seen["link"] is None and not seen["same_inode"] and seen["best_epoch"] == 1, epoch
            assert seen["best_sha"] == probe.seen[1]["best_sha"], epoch
            assert seen["regular_bytes"] > seen["best_bytes"], epoch


def test_checkpoint_state_names_both_files_and_keeps_modelcheckpoint_key(tmp_path):
    folder = tmp_path / "version_0"
    trainer = fit(folder, 3)
    (callback,) = trainer.checkpoint_callbacks
    assert trainer.checkpoint_callback is callback and callback.best_model_path == str(folder / "best.ckpt")
    for name in ("best.ckpt", "last.ckpt"):
        (state,) = torch.load(folder / name, weights_only=True)["callbacks"].values()
        assert state["last_model_path"] == str(folder / "last.ckpt") and state["best_model_path"] == str(folder / "best.ckpt")
    # the key of Lightning's ModelCheckpoint, so runs checkpointed by a plain ModelCheckpoint resume with it
    assert callback.state_key.startswith("ModelCheckpoint{'monitor': 'val/acc'")


def final_state(trainer: L.Trainer) -> tuple[dict[str, torch.Tensor], float]:
    (callback,) = trainer.checkpoint_callbacks
    return trainer.lightning_module.state_dict(), float(callback.best_model_score)


def assert_same(expected: tuple[dict[str, torch.Tensor], float], actual: tuple[dict[str, torch.Tensor], float]) -> None:
    assert expected[0].keys() == actual[0].keys() and expected[1] == actual[1]
    assert all(torch.equal(expected[0][key], actual[0][key]) for key in expected[0])


def test_last_resumes_exactly_through_the_link_and_after_moving_the_folder(tmp_path):
    whole = final_state(fit(tmp_path / "whole", len(SCORES)))
    stopped = tmp_path / "stopped"
    fit(stopped, 2)  # epoch 1 improved: last.ckpt is the link
    assert os.readlink(stopped / "last.ckpt") == "best.ckpt"
    moved = tmp_path / "moved"
    shutil.move(stopped, moved)
    copied, dereferenced = tmp_path / "copied", tmp_path / "dereferenced"
    shutil.copytree(moved, copied, symlinks=True)
    shutil.copytree(moved, dereferenced)  # the link's bytes copied as a file
    assert os.readlink(copied / "last.ckpt") == "best.ckpt" and not (dereferenced / "last.ckpt").is_symlink()
    assert resolve_checkpoint("ckpt_path", str(tmp_path / "copied")) == str(copied / "best.ckpt")
    for folder in (copied, dereferenced):
        assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(moved, 3, ckpt_path="last")  # epoch 2 scores 0.6 < 0.7: the moved run keeps its best score and file
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert torch.load(moved / "best.ckpt", weights_only=True)["epoch"] == 1 and not (moved / "last.ckpt").is_symlink()
    assert_same(whole, final_state(fit(moved, len(SCORES), ckpt_path="last")))
    assert_same(whole, final_state(fit(copied, len(SCORES), ckpt_path="last")))
    assert_same(whole, final_state(fit(dereferenced, len(SCORES), ckpt_path="last")))
    for folder in (moved, copied, dereferenced):
        assert torch.load(folder / "best.ckpt", weights_only=True)["epoch"] == 4 and os.readlink(folder / "last.ckpt") == "best.ckpt"

def test_writing_last_replaces_the_link_and_never_writes_through_it(tmp_path):
    """A stale temporary (a killed run's) and a link at last.ckpt: the write lands in last.ckpt alone."""
    folder = tmp_path / "version_0"
    fit(folder, 2)
    best_bytes = (folder / "best.ckpt").read_bytes()
    os.symlink("best.ckpt", folder / ".last.ckpt.part")
    fit(folder, 3, ckpt_path="last")  # epoch 2 does not improve: last.ckpt is written
    assert (folder / "best.ckpt").read_bytes() == best_bytes and not (folder / "last.ckpt").is_symlink()
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]



def test_without_symbolic_links_last_is_written_as_a_file(tmp_path, monkeypatch):
    """A file system that refuses links (e.g. Windows without the privilege): both files written, as before."""
    def refuse(*args, **kwargs):
        raise OSError("symbolic links not permitted")
    monkeypatch.setattr(os, "symlink", refuse)
    folder = tmp_path / "version_0"
    fit(folder, 2)
    assert not (folder / "last.ckpt").is_symlink()
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1 == torch.load(folder / "best.ckpt", weights_only=True)["epoch"]
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]


class KeptState(CheckpointIO):
    def __init__(self) -> None:
        self.kept: list[tuple[dict, str]] = []

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        self.kept.append((checkpoint, str(path)))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        raise AssertionError("not read")

    def remove_checkpoint(self, path) -> None:
        raise AssertionError("not removed")


class SaveThroughKeeper(L.Callback):
    """At an epoch end, ``Trainer.save_checkpoint`` with the strategy's ``CheckpointIO`` swapped for a keeper."""

    def __init__(self, path: Path) -> None:
        self.path, self.keeper = path, KeptState()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        original = trainer.strategy.checkpoint_io
        trainer.strategy.checkpoint_io = self.keeper
        try:
            trainer.save_checkpoint(self.path)
        finally:
            trainer.strategy.checkpoint_io = original


def test_lightning_hands_the_whole_state_to_the_strategys_checkpoint_io(tmp_path):
    """Pins the Lightning behaviour ``BestAndLastCheckpoint`` takes the state by: ``Trainer.save_checkpoint`` gives
    the ``CheckpointIO`` the strategy holds at the call the whole state (every callback's included) and writes
    nothing itself."""
    probe = SaveThroughKeeper(tmp_path / "kept.ckpt")
    fit(tmp_path / "version_0", 1, probe=probe)
    ((checkpoint, path),) = probe.keeper.kept
    assert path == str(tmp_path / "kept.ckpt") and not (tmp_path / "kept.ckpt").exists()
    assert {"state_dict", "optimizer_states", "loops", "callbacks", "epoch", "global_step"} <= set(checkpoint)
    assert any(key.startswith("ModelCheckpoint{") for key in checkpoint["callbacks"])
