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

The files are written in a background thread while the next epoch trains (``background``, the default): at the
epoch's save the state is taken and copied (tensors cloned), so the files hold that epoch's state whatever the
optimiser does meanwhile; the write, renames and link then run in order in the thread, one epoch's write in flight at
a time (the next save waits for it). It has landed before the next epoch's first optimiser step (the next
``on_after_backward``) and before ``fit`` returns or fails; an error in it is raised in the training thread there.
The cost: one copy of the checkpoint in memory while it is written.
"""
from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Callable
from typing import Any, Literal
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

BEST, LAST = "best", "last"


class BestAndLastCheckpoint(ModelCheckpoint):
    """``dirpath/best.ckpt`` by ``monitor`` and ``dirpath/last.ckpt`` at every epoch end, one write per epoch.

    Args:
        dirpath: the run's checkpoint folder.
        monitor: the logged validation metric ``best.ckpt`` follows.
        mode: ``max`` or ``min``: whether a higher or a lower ``monitor`` is better.
        background: write the files in a thread while training goes on (the state is copied first, so the files
            hold the epoch's state); off, or under a strategy with its own checkpoint saving (FSDP, DeepSpeed, ...),
            they are written before training goes on.
    """

    def __init__(self, dirpath: str | os.PathLike[str], monitor: str, mode: Literal["max", "min"] = "max",
                 background: bool = True) -> None:
        super().__init__(dirpath=dirpath, filename=BEST, monitor=monitor, mode=mode, save_top_k=1, save_last=True,
                         enable_version_counter=False)
        self.background = background
        self._threaded = False  # this epoch's files are written in the background
        self._jobs: list[Callable[[], object]] = []  # this epoch's file operations, in order
        self._files: list[str] = []  # the checkpoint files they write
        self._checkpoint: dict[str, Any] | None = None  # the state the last queued write holds
        self._writing: _Writing | None = None

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

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The previous epoch's files land before the next epoch's first optimiser step (a run killed from then on
        has them)."""
        self.wait_for_writes(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The last files have landed, for every rank (rank 0 writes them)."""
        self.wait_for_writes(trainer)
        trainer.strategy.barrier()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.wait_for_writes(trainer)
        super().teardown(trainer, pl_module, stage)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Let the write in flight finish (the files are then whole); its own error, if any, is warned about, not
        raised over ``exception``."""
        try:
            self.wait_for_writes(trainer)
        except Exception as error:  # noqa: BLE001 - the exception that ends the fit is the one to raise
            rank_zero_warn(f"{error}: while fit was failing with {type(exception).__name__}: {exception}")

    def wait_for_writes(self, trainer: L.Trainer) -> None:
        """Block until the background write (if any) has landed; raise its error, if it failed."""
        writing, self._writing = self._writing, None
        if writing is None:
            return
        writing.thread.join()
        if writing.error is not None:
            raise RuntimeError(f"BestAndLastCheckpoint: writing {', '.join(writing.files)} in the background failed "
                               f"({type(writing.error).__name__}: {writing.error}); the files of the previous "
                               "checkpoint are whole") from writing.error
        self._notify_loggers(trainer, len(writing.files))

    def _save_epoch(self, trainer: L.Trainer) -> None:
        """``best.ckpt`` if the score improved, then ``last.ckpt`` (a link to it, or the file): the state is taken
        now, the files are written by :attr:`_jobs` in order, in the background or at once."""
        if self._should_skip_saving_checkpoint(trainer):
            return
        self.wait_for_writes(trainer)  # one write in flight: files land in order, one copy held at a time
        # Strategy.save_checkpoint writes on rank 0 alone; strategies with their own (collective) saving write now
        self._threaded = self.background and type(trainer.strategy).save_checkpoint is Strategy.save_checkpoint
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        jobs, files, self._jobs, self._files, self._checkpoint = self._jobs, self._files, [], [], None
        if self._threaded:
            self._writing = _Writing(files, jobs)
        elif jobs:
            for job in jobs:
                job()
            trainer.strategy.barrier()
            self._notify_loggers(trainer, len(files))

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        self.last_model_path = self._path(LAST)
        best_is_this_state = (self._last_global_step_saved == trainer.global_step
                              and self._last_checkpoint_saved == self.best_model_path)
        if best_is_this_state and self._checkpoint is not None:
            checkpoint, best, last = self._checkpoint, self.best_model_path, self.last_model_path
            self._jobs.append(lambda: self._link(trainer, best, last) or self._write(trainer, checkpoint, last))
            self._files.append(last)
        else:
            self._save_checkpoint(trainer, self.last_model_path)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Take the state now (a copy when it is written in the background: training goes on meanwhile) and queue
        its write to ``filepath``; then ``ModelCheckpoint``'s bookkeeping."""
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(self.save_weights_only)
        if self._threaded:
            checkpoint = copy.deepcopy(checkpoint)  # tensors cloned, containers copied: this epoch's state
        self._checkpoint = checkpoint
        self._jobs.append(lambda: self._write(trainer, checkpoint, filepath))
        self._files.append(filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Queued after the writes queued before it (ModelCheckpoint removes a replaced best after writing it)."""
        self._jobs.append(lambda: trainer.strategy.remove_checkpoint(filepath))

    def _write(self, trainer: L.Trainer, checkpoint: dict[str, Any], filepath: str) -> bool:
        """``checkpoint`` into a hidden sibling, renamed onto ``filepath`` (replacing a link, never writing through
        it)."""
        temporary = self._sibling(filepath, "part")
        if trainer.is_global_zero:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)  # left by a killed run (it may be a link)
        trainer.strategy.save_checkpoint(checkpoint, temporary)
        if trainer.is_global_zero:
            os.replace(temporary, filepath)
        return True

    def _notify_loggers(self, trainer: L.Trainer, written: int) -> None:
        if trainer.is_global_zero:
            for _ in range(written):
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))

    def _link(self, trainer: L.Trainer, target: str, link: str) -> bool:
        """Make ``link`` a relative symbolic link to ``target`` (made beside it, renamed onto it); False where the
        file system refuses links (the caller then writes the file). Written in the background, only rank 0 has
        anything to write; written at once, the ranks agree (a strategy's own saving may be collective)."""
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
        return linked if self._threaded else bool(trainer.strategy.broadcast(linked))

    def _path(self, name: str) -> str:
        return os.path.join(str(self.dirpath), name + self.FILE_EXTENSION)

    @staticmethod
    def _sibling(path: str, kind: str) -> str:
        """``.<name>.<kind>`` beside ``path``: hidden, and not ``*.ckpt`` (``--ckpt_path last`` never picks it)."""
        return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{kind}")



class _Writing:
    """One epoch's queued file operations running in a thread of their own; the first error is kept for the caller."""

    def __init__(self, files: list[str], jobs: list[Callable[[], object]]) -> None:
        self.files = files
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(jobs,), name="BestAndLastCheckpoint writer")
        self.thread.start()

    def _run(self, jobs: list[Callable[[], object]]) -> None:
        try:
            for job in jobs:
                job()
        except BaseException as error:  # noqa: BLE001 - raised again in the training thread by wait_for_writes
            self.error = error
