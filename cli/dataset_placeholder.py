"""``{dataset}`` in a config's output and checkpoint paths, filled from its data section.

One config then serves several datasets without runs overwriting or picking up each other's files:
``configs/cora_teacher.yaml`` run with ``--data.init_args.name CiteSeer`` writes to
``checkpoints/CiteSeer/gcn_teacher`` and ``configs/cora_abkd.yaml`` with the same option distils that teacher.
"""
from __future__ import annotations

from typing import Any

from foundation.errors import InputError

PLACEHOLDER = "{dataset}"


class DatasetPlaceholderError(InputError, ValueError):
    """A path says ``{dataset}`` but the data section names no dataset."""


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


def fill_dataset(option: str, value: str, dataset: str | None) -> str:
    """``value`` with every ``{dataset}`` replaced by ``dataset``.

    Raises:
        DatasetPlaceholderError: ``value`` holds the placeholder and no dataset is named.
    """
    if PLACEHOLDER not in value:
        return value
    if dataset is None:
        raise DatasetPlaceholderError(f"{option} is {value!r} but the data section names no dataset "
                                      "(data.init_args.name or data.init_args.dataset_args.name); name one or "
                                      "write the path out")
    return value.replace(PLACEHOLDER, dataset)
