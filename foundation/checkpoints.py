"""Reading checkpoints safely (``weights_only``: no pickled code runs), with one clear error for every bad file."""
from __future__ import annotations

import pickle
import zipfile
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


class CheckpointError(InputError, RuntimeError):
    """A file that is not a readable checkpoint of the expected kind or architecture."""


class MissingFileError(InputError, FileNotFoundError):
    """A file the user named (a checkpoint, a model, an image) does not exist."""


def load_checkpoint(path: str | Path, error: type[Exception] = CheckpointError, what: str = "PyTorch checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; every way a file can be unreadable becomes one ``error``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as failure:
        raise error(f"cannot read {str(path)!r} as a {what} ({failure}); the file is corrupt or truncated") from failure


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
