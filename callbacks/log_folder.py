"""The run's log folder: named in its checkpoints, and removed again when a run fails before logging anything.

A checkpoint records the folder its run logs into (``checkpoint["log_folder"] = {"name", "version"}``, relative to
the logger's ``save_dir``), so ``main.py`` can continue it: ``fit --ckpt_path last`` logs into the same
``version_<N>`` (TensorBoard's curves go on), and ``validate``/``test``/``predict`` of that checkpoint log into a
``test_<k>``-style folder inside it instead of a new ``version_<N>`` that would look like another fit.

A run that fails before logging anything (a missing photo, a full disk, a value refused at set-up) would leave a
``version_<N>`` holding only ``config.yaml``, ``hparams.yaml`` and an event file without logged values; such a
folder is removed when the run fails.
"""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger

from foundation.files import NO_SPACE, free_space, write_failure

LOG_FOLDER_KEY = "log_folder"
FULL = 1 << 20
"""Bytes free below which a file system counts as the full one a write without a file name failed on."""
SETTINGS = ("config.yaml", "hparams.yaml")
"""Files a run writes into its log folder before it logs anything."""


def log_folder(logger: Logger | None) -> dict[str, str] | None:
    """``{"name", "version"}`` of ``logger``'s folder relative to its ``save_dir`` (None without a folder logger)."""
    log_dir = getattr(logger, "log_dir", None)
    root = getattr(logger, "root_dir", None)
    if not log_dir or not root or not str(logger.name if logger is not None else ""):
        return None
    return {"name": str(logger.name), "version": os.path.relpath(log_dir, root)}  # type: ignore[union-attr]


def logs_anything(path: Path) -> bool:
    """Whether a TensorBoard event file holds a logged value: anything but its header and the hyper-parameter
    entries a logger writes when the run starts (``hp_metric``'s placeholder, the hparams plugin's summaries)."""
    from tensorboard.compat.proto.event_pb2 import Event  # only when a run failed

    data, offset = path.read_bytes(), 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)  # a record: length, its CRC, the event, the event's CRC
        record = data[offset + 12: offset + 12 + length]
        offset += 12 + length + 4
        if offset > len(data):
            break  # a torn last record
        event = Event.FromString(record)
        if any(value.tag != "hp_metric" and value.metadata.plugin_data.plugin_name != "hparams"
               for value in event.summary.value):
            return True
    return False


def holds_nothing(folder: Path) -> bool:
    """Whether ``folder`` holds only settings files and event files without logged values."""
    for path in folder.rglob("*"):
        if path.is_dir() or path.name in SETTINGS:
            continue
        if ".tfevents." in path.name and not logs_anything(path):
            continue
        return False
    return True


class LogFolder(L.Callback):
    """Writes ``checkpoint["log_folder"]``; when the run fails, names the log folder in a full-disk error that names
    no file, and removes the folder (and the empty folders above it, up to the logger's ``save_dir``) if nothing was
    logged into it (rank zero).

    Lightning makes the folder (the logger's experiment) before any ``setup`` hook runs, so whether this run made
    it is judged by what it holds: settings files and event files without logged values only.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if (folder := log_folder(trainer.logger)) is not None:
            checkpoint[LOG_FOLDER_KEY] = folder

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        log_dir, save_dir = getattr(trainer.logger, "log_dir", None), getattr(trainer.logger, "save_dir", None)
        if not trainer.is_global_zero or not log_dir or not save_dir:
            return
        folder, top = Path(str(log_dir)).absolute(), Path(str(save_dir)).absolute()
        if isinstance(exception, OSError) and not exception.filename and exception.errno in NO_SPACE \
                and (free := free_space(folder)) is not None and free < FULL:
            failure = write_failure(exception, folder, "the run's log files",
                                    fix="set trainer.logger.init_args.save_dir to another folder")
            if failure is not None:  # a write's close names no file
                exception.add_note(str(failure))
        if not folder.is_dir() or not holds_nothing(folder):
            return
        shutil.rmtree(folder, ignore_errors=True)
        for parent in folder.parents:
            if parent != top and top not in parent.parents:
                break
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
