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

Only Lightning's public surface is used: the saving hooks of ``Callback``, ``Trainer.save_checkpoint`` for the
state (every callback's ``state_dict``/``on_save_checkpoint`` included), and the strategy's ``CheckpointIO`` for
the bytes. The state is taken by handing ``Trainer.save_checkpoint`` a ``CheckpointIO`` that keeps the dictionary
instead of writing it (for that one call); strategies that save on their own (FSDP, DeepSpeed, ...) write it
at once. ``ModelCheckpoint`` stays the base class for what Lightning and loggers read from a checkpoint
callback: its state (and state key, so its checkpoints resume with their best score), ``best_model_path`` for
``ckpt_path="best"``, and the ``last.ckpt`` lookup of ``ckpt_path="last"``; its own saving is not used.

On an accelerator the files are written in a background thread while the next epoch trains (``background``:
``None``, the default, means "when the model is not on the CPU"): at the epoch's save the state is copied (tensors
cloned on their device, containers copied; shared storages stay shared), so the files hold that epoch's state
whatever the optimiser does meanwhile; the write, renames and link then run in order in the thread, one epoch's
write in flight at a time (the next save waits for it). It has landed before the next epoch's first optimiser step
(the next ``on_after_backward``) and before ``fit`` returns or fails; an error in it is raised in the training
thread there. On the CPU the copy costs the training thread about as much as the write it would move (the
tensors are copied in host memory either way; docs/performance.md), so the files are written at once there.
The stock ``TorchCheckpointIO`` is written with ``torch.save`` into an open hidden sibling (the same bytes,
without Lightning's in-memory buffer, which the rename makes unneeded); another ``CheckpointIO`` writes it itself.

A full or unwritable checkpoint folder ends the fit with one :class:`CheckpointWriteError` naming the folder,
the checkpoint's size and the space left; the hidden sibling is removed, the previous files stay whole, and a
run folder the fit made but never filled is removed.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from weakref import proxy

import lightning as L
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from foundation.errors import InputError
from foundation.files import NO_SPACE, OutputWriteError, write_failure

BEST, LAST = "best", "last"
FIX = "set checkpoint.dirpath to another folder"


class CheckpointWriteError(InputError, RuntimeError):
    """A checkpoint that could not be written: its folder's file system is full or not writable."""


class MonitorError(InputError, ValueError):
    """The monitored metric is not among the metrics the model logs."""


class _KeptState(CheckpointIO):
    """A ``CheckpointIO`` that keeps the state ``Trainer.save_checkpoint`` hands it instead of writing it."""

    def __init__(self, wrapped: CheckpointIO) -> None:
        self.wrapped = wrapped
        self.kept: dict[str, Any] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        self.kept = checkpoint

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return self.wrapped.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        self.wrapped.remove_checkpoint(path)


class BestAndLastCheckpoint(ModelCheckpoint):
    """``dirpath/best.ckpt`` by ``monitor`` and ``dirpath/last.ckpt`` at every epoch end, one write per epoch.

    Args:
        dirpath: the run's checkpoint folder.
        monitor: the logged validation metric ``best.ckpt`` follows.
        mode: ``max`` or ``min``: whether a higher or a lower ``monitor`` is better.
        background: write the files in a thread while training goes on (the state is copied first, so the files
            hold the epoch's state); None: when the model is not on the CPU. Off, or under a strategy with its own
            checkpoint saving (FSDP, DeepSpeed, ...), they are written before training goes on.
    """

    def __init__(self, dirpath: str | os.PathLike[str], monitor: str, mode: Literal["max", "min"] = "max",
                 background: bool | None = None) -> None:
        super().__init__(dirpath=dirpath, filename=BEST, monitor=monitor, mode=mode, save_top_k=1, save_last=True,
                         enable_version_counter=False)
        self.background = background
        self._step_of_saved_epoch: int | None = None  # global step at the last epoch saved (an epoch saves once)
        self._writing: _Writing | None = None
        self._made: list[str] = []  # folders this fit will have created, innermost first

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint``'s key, so a checkpoint written by a plain ``ModelCheckpoint`` resumes with its best score."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The folder is the one given (every rank agrees on it); nothing is written before the first epoch ends."""
        self.dirpath = trainer.strategy.broadcast(self.dirpath)
        self.last_model_path = self._path(LAST)  # part of the state in both files, whichever is written
        folder = Path(str(self.dirpath))
        self._made = [str(p) for p in (folder, *folder.parents) if not p.exists()]

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

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """Nothing is saved mid-epoch but at a validation (``val_check_interval``)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saves_at_epoch_end(trainer):
            self._save_epoch(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._saves_at_epoch_end(trainer):
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

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Let the write in flight finish (the files are then whole; its own error, if any, is warned about, not
        raised over ``exception``); folders this fit made and left empty are removed."""
        try:
            self.wait_for_writes(trainer)
        except Exception as error:  # noqa: BLE001 - the exception that ends the fit is the one to raise
            rank_zero_warn(f"{error}: while fit was failing with {type(exception).__name__}: {exception}")
        if trainer.is_global_zero:
            for folder in self._made:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only when empty

    def wait_for_writes(self, trainer: L.Trainer) -> None:
        """Block until the background write (if any) has landed; raise its error, if it failed."""
        writing, self._writing = self._writing, None
        if writing is None:
            return
        writing.thread.join()
        if writing.error is not None:
            raise self._write_error(writing.files, writing.error, " in the background") from writing.error
        self._notify_loggers(trainer, len(writing.files))

    def _saves_at_epoch_end(self, trainer: L.Trainer) -> bool:
        """Whether this epoch's checkpoint is taken at the training epoch's end (validation, if any, has run by then)
        rather than when a validation ends (several per epoch, or not every epoch)."""
        if trainer.check_val_every_n_epoch != 1:
            return False
        batches = trainer.num_val_batches
        return sum(batches) == 0 or trainer.val_check_interval == 1.0

    def _save_epoch(self, trainer: L.Trainer) -> None:
        """``best.ckpt`` if the score improved, then ``last.ckpt`` (a link to it, or the file): the state is taken
        now, the files are written in order, in the background or at once."""
        if (trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING
                or self._step_of_saved_epoch == trainer.global_step):
            return
        self.wait_for_writes(trainer)  # one write in flight: files land in order, one copy held at a time
        improved = self._update_best(trainer)
        self._step_of_saved_epoch = trainer.global_step
        # Strategy.save_checkpoint hands rank 0's state to the CheckpointIO; strategies with their own (collective)
        # saving write it themselves, at once
        standard = type(trainer.strategy).save_checkpoint is Strategy.save_checkpoint
        background = self.background if self.background is not None else trainer.strategy.root_device.type != "cpu"
        threaded = background and standard
        target = self.best_model_path if improved else self.last_model_path
        checkpoint = self._take_state(trainer, target, threaded)
        files = [target, self.last_model_path] if improved else [target]
        jobs: list[Callable[[], object]] = []
        if checkpoint is not None:
            jobs.append(lambda: self._write(trainer, checkpoint, target))
        if improved:
            jobs.append(lambda: self._last_from_best(trainer, checkpoint, threaded, standard))
        if threaded:
            if checkpoint is not None:  # rank 0
                self._writing = _Writing(files, jobs)
            return
        try:
            for job in jobs:
                job()
        except OSError as error:
            raise self._write_error(files, error, "") from error
        trainer.strategy.barrier()
        self._notify_loggers(trainer, len(files))

    def _update_best(self, trainer: L.Trainer) -> bool:
        """Whether this epoch's ``monitor`` improves on the best so far (the ranks agree); if so it becomes the best."""
        current = trainer.callback_metrics.get(self.monitor)
        if current is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise MonitorError(f"checkpoint.monitor {self.monitor!r} is not a metric this model logs (it logs "
                               f"{logged}); set checkpoint.monitor (and checkpoint.mode) to one of them")
        current = current.detach().clone()
        if torch.isnan(current):
            current = torch.tensor(float("inf" if self.mode == "min" else "-inf"), device=current.device)
        best = self.best_model_score
        better = best is None or bool(current < best if self.mode == "min" else current > best)
        if not trainer.strategy.reduce_boolean_decision(better, all=True):
            return False
        path = self._path(BEST)
        self.best_model_score = self.current_score = self.kth_value = current
        self.best_model_path = self.kth_best_model_path = path
        self.best_k_models = {path: current}
        return True

    def _take_state(self, trainer: L.Trainer, filepath: str, threaded: bool) -> dict[str, Any] | None:
        """The trainer's state, as ``Trainer.save_checkpoint`` hands it to the strategy's ``CheckpointIO`` (copied
        when written in the background: training goes on meanwhile); None on the ranks that write nothing, and where
        the strategy wrote it itself (to the hidden sibling, then renamed onto ``filepath``)."""
        strategy = trainer.strategy
        original = strategy.checkpoint_io
        keeper = _KeptState(original)
        temporary = self._sibling(filepath, "part")
        strategy.checkpoint_io = keeper
        try:
            trainer.save_checkpoint(temporary, self.save_weights_only)
        except OSError as error:
            if trainer.is_global_zero:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
            raise self._write_error([filepath], error, "") from error
        finally:
            strategy.checkpoint_io = original
        if keeper.kept is not None:
            return copy.deepcopy(keeper.kept) if threaded else keeper.kept
        if trainer.is_global_zero and os.path.lexists(temporary):
            os.replace(temporary, filepath)
        return None

    def _last_from_best(self, trainer: L.Trainer, checkpoint: dict[str, Any] | None, threaded: bool,
                        standard: bool) -> None:
        """``last.ckpt`` as a link to the ``best.ckpt`` just written, or as a file where links are refused."""
        if self._link(trainer, self.best_model_path, self.last_model_path, agree=not threaded):
            return
        if checkpoint is not None:
            self._write(trainer, checkpoint, self.last_model_path)
        elif not standard:  # the strategy saves collectively: every rank takes part again
            self._take_state(trainer, self.last_model_path, threaded=False)

    def _write(self, trainer: L.Trainer, checkpoint: dict[str, Any], filepath: str) -> bool:
        """``checkpoint`` into a hidden sibling, renamed onto ``filepath`` (replacing a link, never writing through
        it); the sibling is removed if the write fails. Rank 0 alone writes."""
        if not trainer.is_global_zero:
            return True
        temporary = self._sibling(filepath, "part")
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)  # left by a killed run (it may be a link)
        try:
            checkpoint_io = trainer.strategy.checkpoint_io
            if type(checkpoint_io) is TorchCheckpointIO:
                os.makedirs(os.path.dirname(temporary), exist_ok=True)
                with open(temporary, "wb") as file:  # a Python file: ENOSPC is an OSError, not a C++ stream error
                    torch.save(checkpoint, file)
            else:
                checkpoint_io.save_checkpoint(checkpoint, temporary)
            os.replace(temporary, filepath)
        except (OSError, RuntimeError) as raised:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            error = _os_error(raised)
            if error is None:
                raise
            needed = checkpoint_size(checkpoint) if error.errno in NO_SPACE else None
            failure = write_failure(error, os.path.dirname(filepath), f"checkpoint {os.path.basename(filepath)}",
                                    needed, FIX)
            if failure is None:
                raise
            raise failure from error
        return True

    def _write_error(self, files: list[str], error: BaseException, where: str) -> Exception:
        """What a failed write raises: :class:`CheckpointWriteError` for a full or unwritable folder (one line),
        else a ``RuntimeError`` naming the files (a bug, shown with its traceback)."""
        named = ", ".join(files)
        problem = error if isinstance(error, OutputWriteError) else write_failure(
            error, os.path.dirname(files[0]), f"checkpoint {os.path.basename(files[0])}", fix=FIX)
        if problem is None:
            return RuntimeError(f"BestAndLastCheckpoint: writing {named}{where} failed ({type(error).__name__}: "
                                f"{error}); the files of the previous checkpoint are whole")
        return CheckpointWriteError(f"writing {named}{where} failed ({os.strerror(problem.errno)}): {problem}; "
                                    "the files of the previous checkpoint are whole")

    def _notify_loggers(self, trainer: L.Trainer, written: int) -> None:
        if trainer.is_global_zero:
            for _ in range(written):
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))

    def _link(self, trainer: L.Trainer, target: str, link: str, agree: bool) -> bool:
        """Make ``link`` a relative symbolic link to ``target`` (made beside it, renamed onto it); False where the
        file system refuses links (the caller then writes the file). Rank 0 makes it; with ``agree`` (written at
        once: a strategy's own saving may be collective) every rank gets rank 0's answer."""
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
        return bool(trainer.strategy.broadcast(linked)) if agree else linked

    def _path(self, name: str) -> str:
        return os.path.join(str(self.dirpath), name + self.FILE_EXTENSION)

    @staticmethod
    def _sibling(path: str, kind: str) -> str:
        """``.<name>.<kind>`` beside ``path``: hidden, and not ``*.ckpt`` (``--ckpt_path last`` never picks it)."""
        return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{kind}")


def _os_error(error: BaseException) -> OSError | None:
    """The ``OSError`` behind ``error``: torch's zip writer answers a failed write (ENOSPC) with a ``RuntimeError``
    of its own on closing, the ``OSError`` left as its context."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def checkpoint_size(checkpoint: dict[str, Any]) -> int | None:
    """The bytes ``torch.save`` writes for ``checkpoint`` (counted, not kept), None if it cannot be pickled."""
    counter = _ByteCounter()
    try:
        torch.save(checkpoint, counter)
    except Exception:  # noqa: BLE001 - only for a message: the write's own error is the one raised
        return None
    return counter.count


class _ByteCounter(io.RawIOBase):
    """A writable stream that counts what is written to it."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.count += size
        return size


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

