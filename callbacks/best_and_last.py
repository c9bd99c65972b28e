"""``best.ckpt`` and ``last.ckpt`` from one ``ModelCheckpoint``, each epoch's state written once.

Two ``ModelCheckpoint`` callbacks (one monitored, one for every epoch end) pickle and write the whole state
(weights, the featureless node types' embedding tables, the optimiser's moments) twice on every epoch where
the score improves. Here an epoch writes one file: ``best.ckpt`` when the monitored score improves, and then
``last.ckpt`` becomes a relative symbolic link to it (the same state, so the same bytes); otherwise
``last.ckpt`` is written as a file of its own and ``best.ckpt`` stays as it was.

Every file is written to a hidden sibling and renamed into place: a write never opens an existing file (which
``last.ckpt`` may link to, or a reader may hold), and a killed run leaves the previous file whole. The link is
relative (``last.ckpt -> best.ckpt``), so the run folder can be moved or copied (``cp -r``, ``shutil.copytree``
with or without ``symlinks``, ``tar``) and ``last.ckpt`` still loads. Lightning's ``save_last="link"`` is not
used: on epochs that do not improve it re-links ``last.ckpt`` to the old best, so ``--ckpt_path last`` would
resume from an older epoch.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Literal
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

BEST, LAST = "best", "last"


class BestAndLastCheckpoint(ModelCheckpoint):
    """``dirpath/best.ckpt`` by ``monitor`` and ``dirpath/last.ckpt`` at every epoch end, one write per epoch.

    Args:
        dirpath: the run's checkpoint folder.
        monitor: the logged validation metric ``best.ckpt`` follows.
        mode: ``max`` or ``min``: whether a higher or a lower ``monitor`` is better.
    """

    def __init__(self, dirpath: str | os.PathLike[str], monitor: str, mode: Literal["max", "min"] = "max") -> None:
        super().__init__(dirpath=dirpath, filename=BEST, monitor=monitor, mode=mode, save_top_k=1, save_last=True,
                         enable_version_counter=False)

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint``'s key, so a checkpoint of the earlier two-callback layout resumes with its best score."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.last_model_path = self._path(LAST)  # part of the state in both files, whichever is written

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run folder resumed after a move or copy (it holds its ``best.ckpt``) keeps its best score.

        ``ModelCheckpoint`` drops the score whenever the folder's absolute path changed, and would then take the
        next epoch for the best whatever its score; the paths are this folder's files, so only they change.
        """
        moved = state_dict.get("dirpath") != self.dirpath and os.path.isfile(self._path(BEST))
        if moved and state_dict.get("best_model_score") is not None:
            best = self._path(BEST)
            state_dict = {**state_dict, "dirpath": self.dirpath, "best_model_path": best, "kth_best_model_path": best,
                          "best_k_models": {best: state_dict["best_model_score"]}, "last_model_path": self._path(LAST)}
        super().load_state_dict(state_dict)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_epoch(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_epoch(trainer)

    def _save_epoch(self, trainer: L.Trainer) -> None:
        """``best.ckpt`` if the score improved, then ``last.ckpt`` (a link to it, or the file)."""
        if self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        self.last_model_path = self._path(LAST)
        best_is_this_state = (self._last_global_step_saved == trainer.global_step
                              and self._last_checkpoint_saved == self.best_model_path)
        if not (best_is_this_state and self._link(trainer, self.best_model_path, self.last_model_path)):
            self._save_checkpoint(trainer, self.last_model_path)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """``Trainer.save_checkpoint`` into a hidden sibling, renamed onto ``filepath`` (replacing a link, never
        writing through it); then ``ModelCheckpoint``'s bookkeeping."""
        temporary = self._sibling(filepath, "part")
        if trainer.is_global_zero:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)  # left by a killed run (it may be a link)
        trainer.save_checkpoint(temporary, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(temporary, filepath)
        trainer.strategy.barrier()
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _link(self, trainer: L.Trainer, target: str, link: str) -> bool:
        """Make ``link`` a relative symbolic link to ``target`` (made beside it, renamed onto it); False where the
        file system refuses links (the caller then writes the file)."""
        linked = True
        if trainer.is_global_zero:
            temporary = self._sibling(link, "link")
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
            try:
                os.symlink(os.path.relpath(target, os.path.dirname(link)), temporary)
                os.replace(temporary, link)
            except OSError:
                linked = False
        return bool(trainer.strategy.broadcast(linked))

    def _path(self, name: str) -> str:
        return os.path.join(str(self.dirpath), name + self.FILE_EXTENSION)

    @staticmethod
    def _sibling(path: str, kind: str) -> str:
        """``.<name>.<kind>`` beside ``path``: hidden, and not ``*.ckpt`` (``--ckpt_path last`` never picks it)."""
        return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{kind}")

