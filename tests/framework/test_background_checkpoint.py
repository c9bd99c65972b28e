"""``BestAndLastCheckpoint`` writing in the background: the files hold the state of their epoch although training goes
on while they are written, they are complete when ``fit`` returns, and an error in the writer ends ``fit``; the
policy writes in the background only on an accelerator or when asked."""
from __future__ import annotations

import hashlib
import shutil
import threading
import types
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from callbacks import best_and_last
from callbacks.best_and_last import BestAndLastCheckpoint
from tests.framework.test_best_and_last import SCORES, ScriptedScore, loader


class Normalised(ScriptedScore):
    """``ScriptedScore`` with a batch norm: its running statistics change in every training forward, before the next
    optimiser step (so before the writer has to be done)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return super().training_step([self.norm(inputs), targets], batch_idx)


class HeldWriter(L.Callback):
    """Holds every background write until the next training forward has run (``on_before_backward``) or training
    ends, and keeps the module's state at every epoch's checkpoint (``on_validation_end``: this callback runs before
    the checkpoint callback) and when the write is let go."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.go = threading.Event()
        self.at_epoch_end: list[dict[str, torch.Tensor]] = []
        self.at_release: list[dict[str, torch.Tensor]] = []
        self.held = 0
        write = BestAndLastCheckpoint._write

        def held_write(callback: BestAndLastCheckpoint, trainer: L.Trainer, checkpoint: dict, filepath: str) -> bool:
            if threading.current_thread() is not threading.main_thread():
                assert self.go.wait(timeout=60), "the training thread never reached the next forward"
                self.held += 1
            return write(callback, trainer, checkpoint, filepath)
        monkeypatch.setattr(BestAndLastCheckpoint, "_write", held_write)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.go.clear()
        self.at_epoch_end.append({k: v.clone() for k, v in pl_module.state_dict().items()})

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._release(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release(pl_module)

    def _release(self, pl_module: L.LightningModule) -> None:
        if not self.go.is_set() and len(self.at_release) < len(self.at_epoch_end):
            self.at_release.append({k: v.clone() for k, v in pl_module.state_dict().items()})
            self.go.set()


class LastReader(L.Callback):
    """``last.ckpt``'s weights after every epoch, read at the next epoch's first optimiser step and at the fit's end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.states: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if len(self.states) < trainer.current_epoch:
            self._read()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read()

    def _read(self) -> None:
        checkpoint = torch.load(self.folder / "last.ckpt", weights_only=True)
        assert checkpoint["epoch"] == len(self.states)
        self.states.append(checkpoint["state_dict"])


def fit(folder: Path, epochs: int, model: type[L.LightningModule], *callbacks: L.Callback, background: bool = True) -> None:
    L.seed_everything(0, verbose=False)
    module = model()
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=folder,
                        callbacks=[BestAndLastCheckpoint(folder, monitor="val/acc", background=background), *callbacks])
    trainer.fit(module, loader(), loader())


def run_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[HeldWriter, LastReader]:
    held, reader = HeldWriter(monkeypatch), LastReader(tmp_path / "run")
    fit(tmp_path / "run", len(SCORES), Normalised, held, reader)
    assert held.held == len(SCORES)  # every epoch's write waited for the next forward
    return held, reader


def test_files_hold_their_epochs_state_while_training_changes_it(tmp_path, monkeypatch):
    held, reader = run_held(tmp_path, monkeypatch)
    assert len(reader.states) == len(held.at_epoch_end) == len(SCORES)
    for epoch, (written, expected, later) in enumerate(zip(reader.states, held.at_epoch_end, held.at_release)):
        assert written.keys() == expected.keys(), epoch
        assert all(torch.equal(written[key], expected[key]) for key in expected), epoch
        if epoch < len(SCORES) - 1:  # the next forward moved the running statistics before the write went on
            assert not torch.equal(later["norm.running_mean"], expected["norm.running_mean"]), epoch


def test_without_the_copy_the_files_would_hold_a_later_state(tmp_path, monkeypatch):
    """The control: written without copying the state first, the first epoch's file holds the next forward's
    running statistics (so the test above can fail)."""
    monkeypatch.setattr(best_and_last, "copy", types.SimpleNamespace(deepcopy=lambda checkpoint: checkpoint))
    held, reader = run_held(tmp_path, monkeypatch)
    assert not torch.equal(reader.states[0]["norm.running_mean"], held.at_epoch_end[0]["norm.running_mean"])
    assert torch.equal(reader.states[0]["norm.running_mean"], held.at_release[0]["norm.running_mean"])


def records(path: Path) -> dict[str, str]:
    """The digest of every record of a checkpoint's zip archive but the id ``torch.save`` draws anew for each file."""
    with zipfile.ZipFile(path) as archive:
        return {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()
                if not name.endswith("/.data/serialization_id")}


def test_background_and_immediate_writes_give_the_same_bytes(tmp_path):
    digests, folder = [], tmp_path / "run"  # one folder: the callback's state holds its path
    for background in (True, False):
        fit(folder, 3, ScriptedScore, background=background)
        digests.append([records(folder / name) for name in ("best.ckpt", "last.ckpt")])
        assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
        shutil.rmtree(folder)
    assert digests[0] == digests[1]


def test_files_are_complete_when_fit_returns(tmp_path, monkeypatch):
    write = BestAndLastCheckpoint._write

    def slow_write(callback: BestAndLastCheckpoint, trainer: L.Trainer, checkpoint: dict, filepath: str) -> bool:
        threading.Event().wait(0.2)
        return write(callback, trainer, checkpoint, filepath)
    monkeypatch.setattr(BestAndLastCheckpoint, "_write", slow_write)
    folder = tmp_path / "run"
    fit(folder, 3, ScriptedScore)  # epoch 2 (0.6) does not improve on epoch 1 (0.7): last.ckpt is its own file
    assert [thread for thread in threading.enumerate() if thread.name.startswith("BestAndLastCheckpoint")] == []
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(folder / "best.ckpt", weights_only=True)["epoch"] == 1
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 2 and not (folder / "last.ckpt").is_symlink()


def test_an_error_in_the_writer_ends_fit_and_the_previous_files_stay_whole(tmp_path, monkeypatch):
    write = BestAndLastCheckpoint._write

    def failing_write(callback: BestAndLastCheckpoint, trainer: L.Trainer, checkpoint: dict, filepath: str) -> bool:
        if checkpoint["epoch"] == 1:
            raise OSError(28, "No space left on device")
        return write(callback, trainer, checkpoint, filepath)
    monkeypatch.setattr(BestAndLastCheckpoint, "_write", failing_write)
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError, match="best.ckpt.* in the background failed .*No space left on device") as caught:
        fit(folder, len(SCORES), ScriptedScore)
    assert isinstance(caught.value.__cause__, OSError)
    for name in ("best.ckpt", "last.ckpt"):  # epoch 0's files
        assert torch.load(folder / name, weights_only=True)["epoch"] == 0



@pytest.mark.parametrize("background, threaded", [(None, False), (True, True), (False, False)])
def test_the_policy_writes_at_once_on_the_cpu_unless_asked(tmp_path, monkeypatch, background, threaded):
    """On the CPU the copy for a thread costs about what the write does, so ``background: null`` writes at once."""
    from cli.checkpoint_policy import CheckpointPolicy

    started: list[list[str]] = []
    writing = best_and_last._Writing

    def counted(files: list[str], jobs: list) -> object:
        started.append(files)
        return writing(files, jobs)
    monkeypatch.setattr(best_and_last, "_Writing", counted)
    L.seed_everything(0, verbose=False)
    folder = tmp_path / "version_0"
    (callback,) = CheckpointPolicy(dirpath=str(tmp_path), background=background).callbacks(folder)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=folder, callbacks=[callback])
    trainer.fit(ScriptedScore(), loader(), loader())
    assert callback.background is background and len(started) == (3 if threaded else 0)
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
