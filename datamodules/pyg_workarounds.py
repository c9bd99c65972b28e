"""Three bugs of PyG 2.8.1's ``torch_geometric.distributed`` worked around, each only while it is there.

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
3. ``local_feature_store.py`` (``LocalFeatureStore.from_partition``) indexes a heterogeneous part's
   node features by the homogenised ids ``partition.py`` saves as ``global_id`` (the type's offset
   added), while ``DistNeighborSampler`` samples, and looks features up, by per-type ids (those of
   ``graph.pt`` and ``node_map/<type>.pt``). Every node type but the first gets other nodes' rows, or
   the last row for ids the map does not hold (-1), silently. :func:`index_features_by_type_ids`
   re-indexes the loaded store by per-type ids where it finds homogenised ones.

Two more are avoided by how :mod:`datamodules.partitioned` writes and batches: ``DistNeighborSampler``
drops a seed repeated within a batch (so no batch repeats one) and looks up ``x`` of every node type (so
featureless types get zero columns). The upstream bug reports of all five are in docs/large_graphs.md
("PyG bugs worked around").
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import warnings
from collections import defaultdict
from collections.abc import Iterator
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


def _is_defaultdict(entry: Any) -> bool:
    """Whether an allow-list entry (a global, or a ``(global, name)`` pair) stands for ``collections.defaultdict``."""
    return entry is defaultdict or (isinstance(entry, tuple) and entry[1] == "collections.defaultdict")


@contextlib.contextmanager
def _defaultdict_read_as_dict() -> Iterator[None]:
    """``torch.load(weights_only=True)`` reads ``defaultdict`` as ``dict`` inside this block.

    The allow-list maps each name to one global, so PyG's own ``defaultdict`` entry is taken out for
    the block (else which entry wins would depend on set order) and the whole list restored after.
    """
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals([*(g for g in saved if not _is_defaultdict(g)),
                                          (_plain_dict, "collections.defaultdict"), dict])
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def load_partition_file(path: str | Path) -> Any:
    """A partition file read with ``weights_only=True``, every ``defaultdict`` in it coming back as a ``dict``."""
    with _defaultdict_read_as_dict():
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


def index_features_by_type_ids(feature_store: Any) -> list[str]:
    """Re-index a loaded heterogeneous ``LocalFeatureStore``'s node features by per-type ids where PyG used homogenised ones.

    A type is changed only when its registered ids are not the per-type ids its partition owns
    (``node_map``) but are those ids plus the type's offset: a PyG that registers per-type ids is
    left alone. Returns the node types changed.
    """
    meta = feature_store.meta
    if not meta["is_hetero"]:
        return []
    changed = []
    for node_type, offset in zip(meta["node_types"], meta["node_offset"]):
        ids = feature_store.get_global_id(node_type)
        owned = torch.nonzero(feature_store.node_feat_pb[node_type] == feature_store.partition_idx).view(-1)
        if ids is None or not offset or torch.equal(ids.sort().values, owned):
            continue
        if torch.equal((ids - offset).sort().values, owned):
            feature_store.put_global_id(ids - offset, group_name=node_type)
            changed.append(node_type)
    return changed


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
