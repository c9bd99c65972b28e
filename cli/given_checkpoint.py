"""The checkpoint a run is given (``--ckpt_path``): read once through the project's reader and checked against the
run's model before Lightning reads it.

LightningCLI reads ``--ckpt_path`` right after parsing (it takes the model's hyper-parameters from it) and the
Trainer reads it again to restore; a text file, a truncated archive or another model's checkpoint would end
there in a traceback, or, worse, silently: a teacher given to a student run would build and train the teacher.
So ``main.py`` reads the file first with :func:`foundation.checkpoints.load_checkpoint` (weights only, every bad
file named for what it is) and refuses, in one line, a file that is not a Lightning checkpoint, one written by
another LightningModule class (its ``_class_path`` hyper-parameter), one whose hyper-parameters this version of the
class no longer takes, one without the optimiser state a fit needs, and (once the model exists) one whose weights
do not fit it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cli.value_checks import imported
from foundation.checkpoints import CheckpointError, load_checkpoint

LOG_FOLDER_KEY = "log_folder"
"""Checkpoint key of the run's log folder, ``{"name", "version"}`` (see :mod:`callbacks.log_folder`)."""
PRIVATE_HPARAMS = ("_class_path", "_instantiator")


class GivenCheckpointError(CheckpointError, ValueError):
    """A ``--ckpt_path`` file that is not a checkpoint this run can use."""


@dataclass
class GivenCheckpoint:
    """A ``--ckpt_path`` file and what it holds."""

    path: Path
    checkpoint: dict[str, Any] = field(repr=False)

    @property
    def hparams(self) -> dict[str, Any]:
        found = self.checkpoint.get("hyper_parameters")
        return found if isinstance(found, dict) else {}

    @property
    def class_path(self) -> str | None:
        """The LightningModule class that wrote it (LightningCLI records it), None if unknown."""
        found = self.hparams.get("_class_path")
        return found if isinstance(found, str) else None

    @property
    def log_folder(self) -> dict[str, str] | None:
        """``{"name", "version"}`` of the log folder of the run that wrote it, None if not recorded."""
        found = self.checkpoint.get(LOG_FOLDER_KEY)
        return found if isinstance(found, dict) and {"name", "version"} <= set(found) else None


def short(class_path: str) -> str:
    return class_path.rpartition(".")[2]


def what_it_holds(checkpoint: Any) -> str:
    """A phrase for a readable file that is not a Lightning checkpoint: ``a plain state dict of 12 tensors``, ..."""
    if not isinstance(checkpoint, dict):
        return f"a {type(checkpoint).__name__}"
    if checkpoint and all(isinstance(value, Tensor) for value in checkpoint.values()):
        return f"a plain state dict of {len(checkpoint)} tensors"
    keys = sorted(map(str, checkpoint))
    return f"a dictionary of {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"


def init_parameters(cls: type) -> set[str] | None:
    """The keyword arguments ``cls`` takes (through its bases' ``**kwargs``), None where it takes any."""
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        if "__init__" not in vars(klass) or klass is object:
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


def read_given(path: str | Path, model_class: str | None, fitting: bool) -> GivenCheckpoint:
    """Read ``path`` and check it can serve a run of ``model_class`` (a class path).

    Raises:
        MissingFileError: nothing at ``path``.
        GivenCheckpointError: not a checkpoint, not a Lightning one, another class's, options this class does not
            take, or (``fitting``) no optimiser state to continue from.
    """
    expected = f"a checkpoint of {short(model_class)}" if model_class else "a Lightning checkpoint"
    shown = Path(path).absolute()
    try:
        checkpoint = load_checkpoint(shown, GivenCheckpointError, "Lightning checkpoint")
    except GivenCheckpointError as unreadable:
        raise GivenCheckpointError(f"ckpt_path: {unreadable}; expected {expected}") from unreadable
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict) \
            or "pytorch-lightning_version" not in checkpoint:
        raise GivenCheckpointError(f"ckpt_path {shown} holds {what_it_holds(checkpoint)}, not a Lightning checkpoint; "
                                   f"expected {expected} (a .ckpt written by main.py fit)")
    given = GivenCheckpoint(Path(path), checkpoint)
    if model_class and given.class_path and given.class_path != model_class:
        raise GivenCheckpointError(
            f"ckpt_path {shown} is a checkpoint of {given.class_path}, but this run's model is {model_class}; "
            f"pass a checkpoint written by a {short(model_class)} fit (or the config of a {short(given.class_path)} run)")
    cls = imported(model_class) if model_class else None
    accepted = init_parameters(cls) if cls is not None else None
    if accepted is not None and given.class_path:
        unknown = sorted(set(given.hparams) - accepted - set(PRIVATE_HPARAMS))
        if unknown:
            raise GivenCheckpointError(
                f"ckpt_path {shown} was written by another version of {short(model_class or '')}: its options "
                f"{', '.join(unknown)} are not options of {short(model_class or '')} now; retrain, or use the code "
                "version that wrote it")
    if fitting and "optimizer_states" not in checkpoint:
        raise GivenCheckpointError(f"ckpt_path {shown} holds weights only (no optimiser or loop state), so a fit "
                                   "cannot continue from it; pass a checkpoint written by main.py fit (last.ckpt)")
    return given


def check_weights(given: GivenCheckpoint, model: nn.Module) -> None:
    """Refuse a checkpoint whose weights do not fit ``model``: keys it does not have, or other shapes.

    Weights a module restores itself are absent from its checkpoints as a whole (a distilled student references its
    frozen teacher's file instead of storing ``teacher.*``); only submodules the checkpoint holds in part, and
    shape differences, are refused here.
    """
    state: dict[str, Any] = given.checkpoint["state_dict"]
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    reshaped = [key for key in state if key in expected and isinstance(state[key], Tensor)
                and tuple(state[key].shape) != tuple(expected[key].shape)]
    held = {key.partition(".")[0] for key in state}
    missing = sorted(key for key in set(expected) - set(state) if key.partition(".")[0] in held)
    if not (unexpected or reshaped or missing):
        return
    problems = []
    if reshaped:
        problems.append("other shapes: " + ", ".join(f"{key} {list(state[key].shape)} there, "
                                                     f"{list(expected[key].shape)} here" for key in reshaped[:3]))
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"not in this model {', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''}")
    differing = [f"{key} {value!r} there, {getattr(model, 'hparams', {}).get(key)!r} here"
                 for key, value in given.hparams.items()
                 if key not in PRIVATE_HPARAMS and key in getattr(model, "hparams", {})
                 and isinstance(value, (int, float, str, bool)) and model.hparams[key] != value]  # type: ignore[index]
    options = f"; its options differ: {', '.join(differing[:4])}" if differing else ""
    raise GivenCheckpointError(f"ckpt_path {given.path.absolute()} does not fit this run's {type(model).__name__} "
                               f"({'; '.join(problems)}){options}; run it with the options it was trained with")
