"""``{dataset}`` and ``{distiller}`` in a config's checkpoint, log and checkpoint-option paths, filled from the run.

One config then serves several datasets and KD methods without runs overwriting or picking up each other's files:
``configs/cora_teacher.yaml`` run with ``--data.init_args.name CiteSeer`` writes to
``checkpoints/CiteSeer/gcn_teacher`` (and ``configs/cora_abkd.yaml`` with the same option distils that teacher);
``configs/cora_abkd.yaml`` (``checkpoints/{dataset}/gcn_{distiller}``) run with
``--model.init_args.distiller graphkd.distill.GCRD`` writes to ``checkpoints/Cora/gcn_gcrd``.

A config that writes its folder names out in full still works. When the command line (or a later ``--config``)
swaps the distiller its first config file names, and a name lacks ``{distiller}``, the new method's name is
appended to that name (``checkpoints/my_student`` -> ``checkpoints/my_student_gcrd``), so a swapped method never
writes into, or resumes from, the folder of the method the file was written for.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from foundation.errors import InputError

WHERE = {"dataset": "the data section names no dataset (data.init_args.name or data.init_args.dataset_args.name)",
         "distiller": "the model has no distiller (model.init_args.distiller)"}


class PlaceholderError(InputError, ValueError):
    """A path says ``{dataset}``/``{distiller}`` but the run has no such thing to fill in."""


def dataset_name(data: Any) -> str | None:
    """The dataset a ``data`` config section names: ``init_args.name`` (Planetoid, OGB) or
    ``init_args.dataset_args.name`` (any PyG dataset class), else None."""
    init_args: Any = data.get("init_args") if hasattr(data, "get") else None
    if not hasattr(init_args, "get"):
        return None
    name = init_args.get("name")
    dataset_args: Any = init_args.get("dataset_args")
    if name is None and hasattr(dataset_args, "get"):
        name = dataset_args.get("name")
    return str(name) if name is not None else None


def class_path_of(value: Any) -> str | None:
    """The class path a ``class_path``/``init_args`` value (a mapping or a Namespace) or a bare string names."""
    if isinstance(value, str):
        return value
    path = value.get("class_path") if hasattr(value, "get") else None
    return str(path) if path else None


def distiller_path(model: Any) -> str | None:
    """The class path of ``model.init_args.distiller`` in a ``model`` config section, else None."""
    init_args: Any = model.get("init_args") if hasattr(model, "get") else None
    return class_path_of(init_args.get("distiller")) if hasattr(init_args, "get") else None


def short_name(class_path: str | None) -> str | None:
    """``graphkd.distill.GCRD`` -> ``gcrd``: the class name in lower case (what folder names use)."""
    return class_path.rpartition(".")[2].lower() if class_path else None


def run_values(config: Any) -> dict[str, str | None]:
    """The placeholders' values for a parsed run config (its ``data`` and ``model`` sections)."""
    return {"dataset": dataset_name(config.get("data")), "distiller": short_name(distiller_path(config.get("model")))}


def fill(option: str, value: str, values: dict[str, str | None]) -> str:
    """``value`` with every ``{name}`` of ``values`` replaced.

    Raises:
        PlaceholderError: ``value`` holds a placeholder whose value is None.
    """
    for name, filled in values.items():
        if "{" + name + "}" not in value:
            continue
        if filled is None:
            raise PlaceholderError(f"{option} is {value!r} but {WHERE[name]}; name one or write the path out")
        value = value.replace("{" + name + "}", filled)
    return value


def declared_distiller(config_files: Iterable[Any]) -> str | None:
    """The distiller class path the first config file that names one declares (``model.init_args.distiller``)."""
    for file in config_files:
        absolute = getattr(file, "absolute", None)  # a jsonargparse Path knows the folder it was given in
        path = Path(absolute if isinstance(absolute, str) else str(file))
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if (declared := distiller_path(loaded.get("model") if isinstance(loaded, dict) else None)) is not None:
            return declared
    return None


def swapped_distiller(config: Any) -> str | None:
    """The distiller's short name when it differs from the one the run's first config file declares, else None."""
    final = distiller_path(config.get("model"))
    declared = declared_distiller(config.get("config") or [])
    return short_name(final) if final and declared and final != declared else None


def with_distiller(value: str, swapped: str | None) -> str:
    """``value`` (a folder or logger name) with ``_<swapped>`` appended when the distiller was swapped and the name
    does not place it itself."""
    if swapped is None or "{distiller}" in value:
        return value
    return f"{value.rstrip('/')}_{swapped}"
