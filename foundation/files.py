"""All-or-nothing writing: a file or a folder appears complete, or not at all.

A writer puts its output in a hidden temporary sibling (same file system, so the final ``os.replace`` / rename is
atomic) and moves it into place only when every byte is written; on any failure the temporaries are removed
and what was there before is left untouched. A write that fails for lack of space or permission becomes one
:class:`OutputWriteError` naming the folder, what was being written and the space it needed and found. Folders
are made with the user's umask, like ``mkdir``.
"""
from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from foundation.errors import InputError

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
"""What a write raises when the file system (or the user's quota) is full."""
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""What a write raises in a folder that cannot be written."""


class OutputWriteError(InputError, OSError):
    """An output that could not be written: its file system is full, read-only, or the folder is not writable."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno N]"


def size_text(count: int) -> str:
    """``count`` bytes for people: ``512 B``, ``3.2 KiB``, ``4.0 MiB``, ``1.5 GiB``."""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def free_space(folder: Path) -> int | None:
    """Bytes free for this user on ``folder``'s file system (its nearest existing ancestor's), None if unknown."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    try:
        return shutil.disk_usage(existing).free if existing is not None else None
    except OSError:
        return None


def write_failure(error: BaseException, folder: str | Path, what: str, needed: int | None = None,
                  fix: str = "write somewhere else") -> OutputWriteError | None:
    """The one-line error for ``error`` when it is a full or unwritable file system under ``folder``, else None (then
    the caller re-raises ``error``: a bug, or a file elsewhere).

    Args:
        folder: the folder being written (named absolute in the message).
        what: what was being written (``"checkpoint best.ckpt"``).
        needed: bytes the write needed, where known.
        fix: what the user can do besides freeing space (``"set checkpoint.dirpath to another folder"``).
    """
    if not isinstance(error, OSError) or error.errno not in NO_SPACE | NOT_WRITABLE:
        return None
    folder = Path(folder).absolute()
    if error.errno in NOT_WRITABLE and error.filename:
        path = Path(str(error.filename)).absolute()
        if not (path == folder or folder in path.parents or path in folder.parents):
            return None  # e.g. an input file the body could not read
    if error.errno in NOT_WRITABLE:
        reason = "a read-only file system" if error.errno == errno.EROFS else "permission denied"
        failure = OutputWriteError(error.errno, f"cannot write {what} in {folder}: {reason}; {fix}")
    else:
        free = free_space(folder)
        amounts = ", ".join(part for part in (f"{size_text(needed)} needed" if needed is not None else "",
                                              f"{size_text(free)} free" if free is not None else "") if part)
        failure = OutputWriteError(error.errno, f"no space left on the file system of {folder} for {what}"
                                                f"{f' ({amounts})' if amounts else ''}; free space there or {fix}")
    failure.filename = str(folder)
    return failure


def make_folder(folder: Path) -> None:
    """``folder`` and its missing parents, with the user's umask; a full or unwritable disk is an OutputWriteError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failure(error, folder.parent, f"the folder {folder.name}") or error from error


def used_bytes(*paths: Path) -> int:
    """The bytes the files under ``paths`` hold (what a failed write had written so far)."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return total


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield unused temporary paths next to ``paths``; rename them onto ``paths`` (in order) only if the body succeeds.

    On any exception every temporary file is removed and the destinations are left untouched; a full or
    unwritable file system raises :class:`OutputWriteError`.
    """
    targets = [Path(p) for p in paths]
    temporaries = [target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp") for target in targets]
    for target in targets:
        make_folder(target.parent)
    try:
        yield temporaries
        for temporary, target in zip(temporaries, targets):
            os.replace(temporary, target)
    except OSError as error:
        written = used_bytes(*temporaries)
        names = ", ".join(target.name for target in targets)
        failure = write_failure(error, targets[0].parent, names, needed=None)
        if failure is None or isinstance(error, OutputWriteError):
            raise
        if written and error.errno in NO_SPACE:
            failure.strerror = f"{failure.strerror} ({size_text(written)} written before the disk filled)"
        raise failure from error
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def replace_folder(new: Path, target: Path) -> None:
    """Move the complete folder ``new`` onto ``target``; an old ``target`` is kept aside until the move is done."""
    previous = target.with_name(f".{target.name}.previous")
    if target.exists():
        shutil.rmtree(previous, ignore_errors=True)
        target.replace(previous)
    new.replace(target)
    shutil.rmtree(previous, ignore_errors=True)


@contextmanager
def staged_folder(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``target`` to write into; it becomes ``target`` when the body succeeds.

    The sibling (so ``target``) gets the user's umask, like a folder ``mkdir`` makes.

    Args:
        target: the folder to produce.
        replace: an existing ``target`` is replaced (kept aside until the move is done, see
            :func:`replace_folder`); with ``False`` the staged folder is only renamed into place and an existing
            ``target`` raises :class:`FileExistsError` (e.g. another process finished the same folder first).

    Raises:
        FileExistsError: ``replace=False`` and ``target`` exists by the time the body is done.
        OutputWriteError: the file system is full or the folder is not writable (nothing is left behind).
    """
    target = Path(target)
    make_folder(target.parent)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        staging.mkdir()
    except OSError as error:
        raise write_failure(error, target.parent, f"the folder {target.name}") or error from error
    try:
        yield staging
        if replace:
            replace_folder(staging, target)
        else:
            try:
                staging.rename(target)
            except OSError as error:
                if target.exists():
                    raise FileExistsError(f"{target} already exists") from error
                raise
    except OSError as error:
        if isinstance(error, (OutputWriteError, FileExistsError)):
            raise
        failure = write_failure(error, target.parent, f"the folder {target.name}")
        if failure is None:
            raise
        if error.errno in NO_SPACE:
            failure.strerror = f"{failure.strerror} ({size_text(used_bytes(staging))} written before the disk filled)"
        raise failure from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def creation_blocker(folder: Path) -> tuple[Path, Literal["file", "read-only"]] | None:
    """Why ``folder`` could not be created or written into, checked before any work (nothing is created).

    Returns ``folder``'s nearest existing ancestor (or itself) with ``"file"`` when that is a file or
    ``"read-only"`` when it is not writable, or None when the folder can be made. Writability is ``os.access``:
    as root it is always granted.
    """
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        return existing, "file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return existing, "read-only"
    return None
