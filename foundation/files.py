"""All-or-nothing writing: a file or a folder appears complete, or not at all.

A writer puts its output in a hidden temporary sibling (same file system, so the final ``os.replace`` / rename is
atomic) and moves it into place only when every byte is written; on any failure the temporaries are removed
and what was there before is left untouched.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield unused temporary paths next to ``paths``; rename them onto ``paths`` (in order) only if the body succeeds.

    On any exception every temporary file is removed and the destinations are left untouched.
    """
    targets = [Path(p) for p in paths]
    temporaries = [target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp") for target in targets]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporaries
        for temporary, target in zip(temporaries, targets):
            os.replace(temporary, target)
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

    Args:
        target: the folder to produce.
        replace: an existing ``target`` is replaced (kept aside until the move is done, see
            :func:`replace_folder`); with ``False`` the staged folder is only renamed into place and an existing
            ``target`` raises :class:`FileExistsError` (e.g. another process finished the same folder first).

    Raises:
        FileExistsError: ``replace=False`` and ``target`` exists by the time the body is done.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
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
