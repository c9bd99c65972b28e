"""The project's one checkpoint reader: ``weights_only`` (no pickled code runs), one clear error for every bad file.

Every ``.pt``/``.ckpt``/``.pth`` the project reads goes through :func:`load_checkpoint`. Files that hold a few
plain classes besides tensors (``argparse.Namespace`` options, ``pathlib`` paths) name them in ``allow``; the
allow-list is scoped to the one read (:func:`allowed_globals`), also on torch 2.4, which has no scoped form.
A refused or damaged file is reported as what it is (empty, text, truncated archive, a pickle of code) and never
with advice to turn the safe mode off.
"""
from __future__ import annotations

import argparse
import pathlib
import pickle
import re
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from foundation.errors import InputError

UNREADABLE = (RuntimeError, pickle.UnpicklingError, EOFError, OSError, KeyError, ValueError, TypeError,
              AttributeError, zipfile.BadZipFile)
"""Everything ``torch.load`` raises for a corrupt, truncated or foreign file."""
UNPICKLABLE = UNREADABLE + (ImportError, IndexError)
"""Everything ``pickle.load`` raises for a damaged or foreign pickle: the above, a class whose module is gone, a short stack."""


OPTION_CLASSES: tuple[type, ...] = (argparse.Namespace, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath,
                                    pathlib.PureWindowsPath)
"""Plain option objects some official checkpoints carry besides tensors: rosinality ``train.py``'s ``args``,
pSp/e4e/ReStyle ``opts`` (stylegan3-editing's hold ``pathlib`` paths). Pass as ``allow`` to read them."""


class CheckpointError(InputError, RuntimeError):
    """A file that is not a readable checkpoint of the expected kind or architecture."""


class MissingFileError(InputError, FileNotFoundError):
    """A file the user named (a checkpoint, a model, an image) does not exist."""


@contextmanager
def allowed_globals(classes: Sequence[type]) -> Iterator[None]:
    """While inside, a ``weights_only`` load also admits instances of ``classes``.

    torch >= 2.5 scopes this itself (``torch.serialization.safe_globals``); torch 2.4 (the conda environment)
    has only the process-wide ``add_safe_globals``, so the previous allow-list is restored on the way out.
    """
    serialization = torch.serialization
    if not classes:
        yield
    elif hasattr(serialization, "safe_globals"):
        with serialization.safe_globals(list(classes)):
            yield
    else:
        previous = list(serialization.get_safe_globals())
        serialization.add_safe_globals(list(classes))
        try:
            yield
        finally:
            serialization.clear_safe_globals()
            serialization.add_safe_globals(previous)


def file_kind(path: str | Path) -> str:
    """What ``path`` holds, judged from its first bytes, for messages: ``"an empty file"``, ``"a text file"``, ..."""
    with Path(path).open("rb") as handle:
        head = handle.read(512)
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        return "a zip archive that torch cannot read (truncated, or not written by torch.save)"
    if head[:1] == b"\x80":
        return "a pickle that holds more than tensors and plain containers (or a truncated one)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of another format"
    return "a text file"


def load_checkpoint(path: str | Path, error: type[Exception] = CheckpointError, what: str = "PyTorch checkpoint",
                    allow: Sequence[type] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; every way a file can be unreadable becomes one ``error``.

    Args:
        path: the file (a missing one raises :class:`MissingFileError`).
        error: the exception raised for an unreadable or refused file.
        what: what the file should be, for messages (``"teacher checkpoint"``).
        allow: classes admitted besides tensors and plain containers (see :func:`allowed_globals`).
    """
    if not Path(path).is_file():
        problem = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise MissingFileError(f"{what} {str(path)!r} {problem}; fix the path")
    try:
        with allowed_globals(allow):
            return torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as failure:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise error(f"cannot read {str(path)!r} as {article} {what}: {refusal(failure, path)}") from failure


REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def refusal(failure: BaseException, path: str | Path) -> str:
    """Why ``torch.load`` refused ``path``, in one clause without torch's advice to load unsafely."""
    if (refused := REFUSED_GLOBAL.search(str(failure))) is not None:
        return (f"it pickles a {refused.group(1)} object, which a safe (weights-only) read does not construct; "
                "it was not written as a checkpoint of this kind")
    text = str(failure).rpartition("WeightsUnpickler error:")[2]  # after torch's advice, where there is one
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(failure).__name__)
    return f"it is {file_kind(path)} ({first.partition('. ')[0][:160]})"


def load_pickle(path: str | Path, error: type[Exception] = CheckpointError, what: str = "pickle") -> Any:
    """``pickle.load`` of ``path`` (a pickle can run code: only for files you trust, e.g. 3DDFA_V2's ``.pkl``).

    Every way the file can be unreadable becomes one ``error`` naming ``what`` it should be.
    """
    try:
        with Path(path).open("rb") as handle:
            return pickle.load(handle)
    except UNPICKLABLE as failure:
        raise error(f"{str(path)!r} is not a readable pickle ({failure}); expected {what}") from failure


def read_state_dict(path: str | Path, what: str, source: str, error: type[Exception] = CheckpointError) -> dict[str, Tensor]:
    """The tensors of ``path``: a bare state dict or ``{'state_dict': ...}``, with any ``module.`` prefix removed.

    Args:
        path: checkpoint file (read with ``weights_only=True``: no code runs).
        what: what the file should be, for messages (e.g. ``"3DDFA_V2 checkpoint"``).
        source: where a user gets the file, for the not-found message.
        error: the exception type raised for unreadable or non-state-dict files.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: (or ``error``) a corrupt/truncated file, or one that holds no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {str(path)!r} not found; {source} and pass its path")
    checkpoint = load_checkpoint(path, error, what)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise error(f"{str(path)!r} holds a {type(checkpoint).__name__}, not a state dict of tensors ({what})")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_strictly(module: nn.Module, state: dict[str, Tensor], path: str | Path, mismatch: str, architecture: str,
                  error: type[Exception] = CheckpointError) -> None:
    """``module.load_state_dict(state, strict=True)``, every way the two disagree becoming one ``error``.

    Args:
        mismatch: what differing key sets mean, after the path (``"is not a FaceBoxes checkpoint"``);
            the message lists the first five missing and unexpected keys.
        architecture: the module's name in the message for keys that match with wrong shapes.
    """
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise error(f"{str(path)!r} {mismatch}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as failure:
        raise error(f"{str(path)!r} has the {architecture} keys but wrong tensor shapes: {failure}") from failure
