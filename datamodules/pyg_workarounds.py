"""Two bugs of PyG 2.8.1's ``torch_geometric.distributed`` worked around, each only while it is there.

1. ``torch_geometric/distributed/partition.py`` (``Partitioner.generate_partition``) saves each part's
   ``edge_feats.pt`` as a ``collections.defaultdict``. PyG allow-lists ``defaultdict`` for
   ``torch.load(weights_only=True)``, but torch's weights-only unpickler fills only ``dict``,
   ``OrderedDict`` and ``Counter`` (``SETITEMS``), so ``LocalFeatureStore.from_partition``
   (``local_feature_store.py``) cannot read the file of any graph with edge features or edge times.
   :func:`save_plain_edge_features` rewrites the file as plain dicts, read through the project's one
   checkpoint reader with ``defaultdict`` mapped to ``dict`` (:func:`load_partition_file`).
2. ``dist_neighbor_sampler.py``, ``dist_neighbor_loader.py`` and ``dist_link_neighbor_loader.py`` pass
   ``stack_level=`` to ``warnings.warn`` (which takes ``stacklevel``) in their deprecation warning: a
   ``TypeError`` on every Python, so no ``DistNeighborLoader`` can be built.
   :func:`accept_stack_level` gives exactly those modules a ``warn`` that also takes ``stack_level``,
   and only when their source still has the faulty call.

The upstream bug reports are in docs/large_graphs.md ("PyG bugs worked around").
"""
from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any

import torch

from foundation.checkpoints import load_checkpoint

WARNING_MODULES = ("torch_geometric.distributed.dist_neighbor_sampler",
                   "torch_geometric.distributed.dist_neighbor_loader",
                   "torch_geometric.distributed.dist_link_neighbor_loader")
FAULTY_CALL = "stack_level="


def _plain_dict(default_factory: Any = None) -> dict:
    """What ``collections.defaultdict(default_factory)`` unpickles to here: a plain ``dict`` (the factory is dropped)."""
    return {}


def load_partition_file(path: str | Path) -> Any:
    """A partition file read with ``weights_only=True``, every ``defaultdict`` in it coming back as a ``dict``."""
    with torch.serialization.safe_globals([(_plain_dict, "collections.defaultdict"), dict]):
        return load_checkpoint(path, what="PyG partition file")


def save_plain_edge_features(part_dir: str | Path) -> None:
    """Rewrite ``part_dir/edge_feats.pt`` (written by PyG's ``Partitioner``) with plain dicts, if it exists.

    Works around ``torch_geometric/distributed/partition.py`` saving a ``defaultdict`` that
    ``LocalFeatureStore.from_partition`` cannot load once it holds edge features (see the module
    docstring). A file of plain dicts is written unchanged.
    """
    path = Path(part_dir) / "edge_feats.pt"
    if path.is_file():
        torch.save(load_partition_file(path), path)


def _warn(message: Any, category: type[Warning] | None = None, stacklevel: int = 1, source: Any = None, *,
          stack_level: int | None = None) -> None:
    """``warnings.warn`` that also takes the ``stack_level=`` spelling of PyG's distributed modules."""
    warnings.warn(message, category, (stack_level if stack_level is not None else stacklevel) + 1, source)


def accept_stack_level() -> list[str]:
    """Give the PyG modules whose deprecation warning passes ``stack_level=`` a ``warn`` that accepts it.

    Only modules whose source still contains that call are changed (a fixed PyG is left alone);
    calling this again changes nothing. Returns the names of the modules changed by this call.
    """
    changed = []
    for name in WARNING_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "warn", None) is _warn:
            continue
        try:
            faulty = FAULTY_CALL in inspect.getsource(module)
        except OSError:  # no source shipped: nothing to check, nothing changed
            faulty = False
        if faulty:
            module.warn = _warn
            changed.append(name)
    return changed
