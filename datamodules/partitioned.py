"""A graph cut into METIS partitions on disk, one partition per DDP process, for graphs that outgrow one machine.

The engine is PyG's ``torch_geometric.distributed`` (no home-made one): ``Partitioner`` cuts the graph
with METIS and writes PyG's partition layout; every process loads its own part into a
``LocalGraphStore``/``LocalFeatureStore`` and draws mini-batches with ``DistNeighborLoader``, which
fetches the neighbours and features that live on other machines over ``torch.distributed.rpc``.

On top of PyG's layout (``META.json``, ``node_map``, ``edge_map``, ``part_<i>/{graph,node_feats,edge_feats}.pt``)
the folder holds what node classification needs, as PyG's distributed examples keep it:

* ``labels.pt``: the labels of every node of the classified type (global ids);
* ``part_<i>/{train,val,test}_idx.pt``: the split's nodes that partition ``i`` owns (each process
  seeds its batches with local nodes, so only the sampled halo crosses the network);
* ``partition_info.json``: the dataset facts ``main.py`` links into the model (``graph_info``,
  ``num_features``, ``num_classes``), the seed counts per partition and the METIS edge cut.

What runs where: writing and loading partitions needs METIS (pyg-lib's, or a torch-sparse built with
it; ``make setup-sampling`` installs one) and nothing else; ``DistNeighborLoader`` calls pyg-lib's
``torch.ops.pyg`` kernels, so training needs pyg-lib (docs/large_graphs.md). Three bugs of PyG 2.8.1
on this path are worked around in :mod:`datamodules.pyg_workarounds`.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch_geometric.typing
from torch import Tensor
from torch.utils.data import DistributedSampler, Sampler
from torch_geometric.data import Data, HeteroData
from torch_geometric.distributed import LocalFeatureStore, LocalGraphStore, Partitioner

from datamodules.pyg_workarounds import (
    accept_stack_level,
    index_features_by_type_ids,
    load_partition_file,
    save_plain_edge_features,
)
from foundation.errors import InputError
from foundation.files import staged_folder
from graphkd.graph_info import GraphInfo

INFO_FILE = "partition_info.json"
LABELS_FILE = "labels.pt"
SPLITS = ("train", "val", "test")
PYG_LIB_HINT = ("run `make setup-sampling` (pyg-lib from ../shared/wheels, the cache or PyG's wheel index), or "
                "install pyg-lib from PyG's wheel index for your torch and CUDA versions (PyG's installation guide "
                "lists the command)")

log = logging.getLogger("lightning.pytorch.datamodules.partitioned")  # shown by Lightning's console handler


class PartitionError(InputError, ValueError):
    """A partition folder does not hold what it should; the message says what and how to fix it."""


def metis_available() -> bool:
    """Whether PyG's ``ClusterData`` (hence ``Partitioner``) can call METIS here.

    It calls ``torch.ops.torch_sparse.partition`` (a torch-sparse built with ``WITH_METIS=1``) or
    ``pyg_lib.partition.metis``. A torch-sparse built without METIS only says so when called, so a
    4-node path graph is partitioned to find out.
    """
    if torch_geometric.typing.WITH_METIS:
        return True
    if not torch_geometric.typing.WITH_TORCH_SPARSE:
        return False
    rowptr, col = torch.tensor([0, 1, 3, 5, 6]), torch.tensor([1, 0, 2, 1, 3, 2])
    try:
        torch.ops.torch_sparse.partition(rowptr, col, None, 2, False)
    except RuntimeError:  # "Not compiled with METIS support"
        return False
    return True


def owners_of(root: str | Path, graph_info: GraphInfo) -> Tensor | dict[str, Tensor]:
    """The partition that owns each node: one tensor (homogeneous) or one per node type (PyG's ``node_map``)."""
    root = Path(root)
    if graph_info.hetero is None:
        return torch.load(root / "node_map.pt")
    return {t: torch.load(root / "node_map" / f"{t}.pt") for t in graph_info.hetero.node_types}


def edge_cut(graph: Data | HeteroData, owner: Tensor | dict[str, Tensor]) -> float:
    """Fraction of edges whose two ends lie in different partitions (all edge types together)."""
    if isinstance(graph, HeteroData):
        cut = total = 0
        for (src, _, dst), edge_index in graph.edge_index_dict.items():
            cut += int((owner[src][edge_index[0]] != owner[dst][edge_index[1]]).sum())
            total += edge_index.size(1)
        return cut / total
    return float((owner[graph.edge_index[0]] != owner[graph.edge_index[1]]).float().mean())


def _write_own_features(staging: Path, graph: Data | HeteroData, num_parts: int) -> None:
    """Rewrite each part's ``node_feats.pt`` with its own feature rows only, each node type with its own ``x``.

    PyG's ``Partitioner`` saves a homogeneous part's features as a view of the whole feature
    matrix, and ``torch.save`` writes a view's whole storage: every part file would hold every
    node's features. For a heterogeneous graph it homogenises first, which keeps only attributes
    every node type has; ogbn-mag has paper features only (the other types are learned
    embeddings), so PyG would store ``x=None`` everywhere. A type without features gets an ``x``
    with zero columns: ``DistNeighborSampler`` (``torch_geometric/distributed/dist_neighbor_sampler.py``,
    ``_collate_fn``) looks up ``x`` for every sampled node type, and the R-GCN replaces those rows
    by its embeddings. Rows follow PyG's ids of the part's nodes.
    """
    for pid in range(num_parts):
        path = staging / f"part_{pid}" / "node_feats.pt"
        node_feats = load_partition_file(path)
        if isinstance(graph, HeteroData):
            for node_type, entry in node_feats.items():
                store = graph[node_type]
                entry["feats"] = {"x": store.x[entry["id"]] if "x" in store else torch.empty(len(entry["id"]), 0)}
        else:
            node_feats["feats"] = {"x": graph.x[node_feats["global_id"]]}
        torch.save(node_feats, path)


def write_partitions(graph: Data | HeteroData, graph_info: GraphInfo, num_classes: int, out: str | Path,
                     num_parts: int, recursive: bool = False) -> dict[str, Any]:
    """Cut ``graph`` into ``num_parts`` METIS partitions under ``out`` and return ``partition_info.json``'s content.

    The folder is assembled in a hidden sibling and renamed into place, so an interrupted run never
    leaves a folder that looks complete. ``graph`` is what a :class:`datamodules.graph.NodeDataModule`
    serves: the classified store carries ``x``, ``y`` and ``{train,val,test}_mask``.
    """
    out = Path(out)
    if num_parts < 2:
        raise PartitionError(f"num_parts must be at least 2, got {num_parts}; one machine needs no partitions")
    if out.exists():
        raise FileExistsError(f"{out} already exists; delete it or choose another output folder")
    if not metis_available():
        raise ImportError(f"partitioning needs METIS (pyg-lib's, or a torch-sparse built with it): {PYG_LIB_HINT}")
    with staged_folder(out, replace=False) as staging:
        Partitioner(graph, num_parts, str(staging), recursive).generate_partition()
        _write_own_features(staging, graph, num_parts)
        for pid in range(num_parts):
            save_plain_edge_features(staging / f"part_{pid}")
        hetero = graph_info.hetero
        target = graph[hetero.target] if hetero else graph
        torch.save(target.y, staging / LABELS_FILE)
        owner = owners_of(staging, graph_info)
        target_owner = owner[hetero.target] if hetero else owner
        split_sizes = {}
        for split in SPLITS:
            seeds = torch.nonzero(target[f"{split}_mask"]).view(-1)
            parts = [seeds[target_owner[seeds] == pid] for pid in range(num_parts)]
            for pid, part in enumerate(parts):
                torch.save(part, staging / f"part_{pid}" / f"{split}_idx.pt")
            split_sizes[split] = [len(part) for part in parts]
        if any(min(sizes) == 0 for sizes in split_sizes.values()):
            raise PartitionError(f"a partition owns no node of a split (nodes per part: {split_sizes}), so it could "
                                 "not seed its batches; use fewer parts for a graph this small")
        info = {
            "graph_info": graph_info.as_dict(),
            "num_features": int(target.x.size(-1)),
            "num_classes": int(num_classes),
            "num_parts": num_parts,
            "split_sizes": split_sizes,
            "edge_cut": edge_cut(graph, owner),
        }
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


def read_partition_info(root: str | Path) -> dict[str, Any]:
    """``partition_info.json`` of a folder written by :func:`write_partitions`."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: write the partitions first with "
                                f"`python scripts/partition_graph.py --config CONFIG --num-parts N --out {root}`")
    return json.loads(path.read_text())


@dataclass
class Partition:
    """One loaded partition: PyG's stores (labels attached as ``feature_store.labels``) and its seed nodes."""

    index: int
    graph_store: LocalGraphStore
    feature_store: LocalFeatureStore
    seeds: dict[str, Tensor]
    info: dict[str, Any]


def load_partition(root: str | Path, index: int) -> Partition:
    """Load partition ``index`` of ``root`` the way a ``DistNeighborLoader`` process does.

    A heterogeneous part's node features are indexed by per-type ids, the ids the sampler looks them
    up by (PyG 2.8.1 indexes them by homogenised ids: ``datamodules/pyg_workarounds.py``).
    """
    info = read_partition_info(root)
    if not 0 <= index < info["num_parts"]:
        raise PartitionError(f"partition {index} does not exist: {root} has {info['num_parts']} parts")
    feature_store = LocalFeatureStore.from_partition(str(root), index)
    index_features_by_type_ids(feature_store)
    feature_store.labels = load_partition_file(Path(root) / LABELS_FILE)
    seeds = {split: load_partition_file(Path(root) / f"part_{index}" / f"{split}_idx.pt") for split in SPLITS}
    return Partition(index, LocalGraphStore.from_partition(str(root), index), feature_store, seeds, info)


def verify_partition(partition: Partition) -> None:
    """Check that a loaded partition is the one PyG's node map describes; raise :class:`PartitionError` if not.

    Its stored nodes are exactly those the map gives it (and each has a feature row when its type
    has features), every stored edge ends at one of its nodes (PyG keeps an edge with its
    destination), and its seed nodes are its own.
    """
    hetero = GraphInfo.from_dict(partition.info["graph_info"]).hetero
    node_map = partition.graph_store.node_pb
    pid = partition.index
    groups = list(hetero.node_types) if hetero else [None]
    for group in groups:
        owner = node_map[group] if hetero else node_map
        owned = torch.nonzero(owner == pid).view(-1)
        stored = partition.feature_store.get_global_id(group)
        if not torch.equal(stored.sort().values, owned):
            raise PartitionError(f"partition {pid} stores {len(stored)} nodes of type {group or 'node'} but its "
                                 f"node map gives it {len(owned)}: the folder is inconsistent, partition again")
        attrs = [a for a in partition.feature_store.get_all_tensor_attrs() if a.group_name == group and a.attr_name == "x"]
        if attrs and partition.feature_store.get_tensor(attrs[0]).size(0) != len(owned):
            raise PartitionError(f"partition {pid}: {group or 'node'} features do not have one row per stored node")
    for attr in partition.graph_store.get_all_edge_attrs():
        destination = partition.graph_store.get_edge_index(attr)[1]
        owner = node_map[attr.edge_type[-1]] if hetero else node_map
        if not (owner[destination] == pid).all():
            raise PartitionError(f"partition {pid} holds {attr.edge_type or 'edges'} whose destination it does not own")
    target_owner = node_map[hetero.target] if hetero else node_map
    for split, seeds in partition.seeds.items():
        if not (target_owner[seeds] == pid).all():
            raise PartitionError(f"partition {pid}: {split}_idx.pt lists nodes of other partitions")


class EqualStepBatches(Sampler[list[int]]):
    """``num_batches`` batches of the positions ``sampler`` yields: each position once, sizes differing by at most one.

    DDP needs every process to run the same number of steps, but METIS balances nodes, not split
    nodes, so the partitions own different numbers of seeds. Padding the shorter seed lists by
    repetition (as Lightning's ``DistributedSampler`` does) would put one node twice into a batch,
    which PyG's ``DistNeighborSampler`` cannot sample: it drops the duplicate seed, and the batch's
    first ``batch_size`` rows are then no longer its seeds (a neighbour takes the last seed row).
    Instead every process cuts its own seeds into the same number of batches. Only a partition with
    fewer seeds than batches repeats some, one seed per otherwise empty batch.

    Args:
        sampler: the order of this process's seed positions; Lightning calls its ``set_epoch`` at
            every epoch (it looks for ``batch_sampler.sampler``), as :func:`seed_order` needs.
        num_batches: batches per epoch, the same on every process.
    """

    def __init__(self, sampler: DistributedSampler, num_batches: int) -> None:
        if len(sampler) < 1 or num_batches < 1:
            raise PartitionError(f"cannot cut {len(sampler)} seed nodes into {num_batches} batches; this "
                                 "partition owns no node of the split: use fewer parts")
        self.sampler, self.num_batches = sampler, num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        for index, chunk in enumerate(torch.tensor_split(order, self.num_batches)):
            yield chunk.tolist() if len(chunk) else [int(order[index % len(order)])]


def seed_order(num_seeds: int, shuffle: bool, seed: int = 0) -> DistributedSampler:
    """All ``num_seeds`` positions, shuffled by ``seed`` + epoch when ``shuffle`` (``set_epoch`` moves the epoch).

    torch's ``DistributedSampler`` over one replica: every position once, the same order for the same seed and
    epoch, so a resumed run draws the batches an uninterrupted one would.
    """
    return DistributedSampler(range(num_seeds), num_replicas=1, rank=0, shuffle=shuffle, seed=seed)


def require_pyg_lib() -> None:
    """Raise an ImportError that says how to get pyg-lib, which ``DistNeighborLoader``'s sampler calls."""
    if not torch_geometric.typing.WITH_PYG_LIB:
        raise ImportError("DistNeighborLoader samples with pyg-lib's kernels (torch.ops.pyg), which are not "
                          f"installed: {PYG_LIB_HINT}. torch-sparse alone is enough for partitioning, not for "
                          "distributed sampling (docs/large_graphs.md)")


class PartitionedNodeDataModule(L.LightningDataModule):
    """Mini-batches from PyG's ``DistNeighborLoader`` over METIS partitions, one partition per process.

    Run it under DDP with as many processes as partitions (e.g. ``--trainer.num_nodes N`` with one
    device each) and ``use_distributed_sampler: false``: each process already seeds with its own
    nodes, so Lightning must not shard them again. The process with global rank ``r`` loads and
    checks partition ``r`` (:func:`verify_partition`); its loaders join the others over
    ``torch.distributed.rpc`` at the DDP main address, on ports after DDP's own.

    Args:
        root: a folder written by ``scripts/partition_graph.py``.
        batch_size: seed nodes per process and batch, at most: every process runs
            ``ceil(largest partition's seeds / batch_size)`` steps, so a partition owning fewer
            seeds cuts them into smaller batches (:class:`EqualStepBatches`).
        num_neighbors: neighbours sampled per layer.
        num_workers: sampler processes per loader (0: sample in the training process).
        concurrency: RPC requests a sampler keeps in flight.
        rpc_port: first of the three RPC ports (train, val, test loaders); default DDP's port + 1.
    """

    def __init__(self, root: str, batch_size: int = 1024, num_neighbors: list[int] | None = None, num_workers: int = 0,
                 concurrency: int = 4, rpc_port: int | None = None) -> None:
        super().__init__()
        self.root = root
        self.batch_size = batch_size
        self.num_neighbors = num_neighbors or [15, 10]
        self.num_workers = num_workers
        self.concurrency = concurrency
        self.rpc_port = rpc_port
        self.info = read_partition_info(root)
        self.partition: Partition | None = None

    @property
    def graph_info(self) -> GraphInfo:
        return GraphInfo.from_dict(self.info["graph_info"])

    @property
    def num_features(self) -> int:
        return int(self.info["num_features"])

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    def setup(self, stage: str | None = None) -> None:
        world_size, rank = self.trainer.world_size, self.trainer.global_rank
        if world_size != self.info["num_parts"]:
            raise PartitionError(f"{self.root} has {self.info['num_parts']} partitions but the job has {world_size} "
                                 "processes; run one process per partition (devices x num_nodes) or partition again")
        # Lightning would wrap each loader in a DistributedSampler and keep 1/world of this rank's own seeds.
        if self.trainer._accelerator_connector.use_distributed_sampler and world_size > 1:
            raise ValueError("set trainer.use_distributed_sampler: false; each process already seeds with its own partition")
        try:
            self.partition = load_partition(self.root, rank)
            verify_partition(self.partition)
            failure = None
        except (OSError, InputError) as error:
            failure = error
        # every rank learns whether all loaded: one rank raising alone would leave the others waiting in DDP set-up
        if not self.trainer.strategy.reduce_boolean_decision(failure is None, all=True):
            raise PartitionError(f"partition {rank} of {self.root}: {failure}" if failure is not None else
                                 f"another rank could not load its partition of {self.root}; see its error")
        sizes = ", ".join(f"{split} {len(seeds)}" for split, seeds in self.partition.seeds.items())
        log.info("[rank %d/%d] loaded and verified partition %d of %s (seed nodes: %s)", rank, world_size, rank,
                 self.root, sizes)

    def _loader(self, split: str, shuffle: bool, port_offset: int) -> Any:
        require_pyg_lib()
        accept_stack_level()
        from torch_geometric.distributed import DistContext, DistNeighborLoader

        trainer = self.trainer
        environment = trainer.strategy.cluster_environment
        context = DistContext(rank=trainer.global_rank, global_rank=trainer.global_rank, world_size=trainer.world_size,
                              global_world_size=trainer.world_size, group_name=f"partitioned-{split}")
        seeds = self.partition.seeds[split]
        steps = math.ceil(max(self.info["split_sizes"][split]) / self.batch_size)  # the same on every process
        batches = EqualStepBatches(seed_order(len(seeds), shuffle, int(os.environ.get("PL_GLOBAL_SEED", 0))), steps)
        hetero = self.graph_info.hetero
        base_port = self.rpc_port if self.rpc_port is not None else environment.main_port + 1
        return DistNeighborLoader(
            (self.partition.feature_store, self.partition.graph_store),
            num_neighbors=self.num_neighbors,
            master_addr=environment.main_address,
            master_port=base_port + port_offset,
            current_ctx=context,
            input_nodes=(hetero.target, seeds) if hetero else seeds,
            batch_sampler=batches,
            num_workers=self.num_workers,
            concurrency=self.concurrency,
            device=torch.device("cpu"),
        )

    def train_dataloader(self) -> Any:
        return self._loader("train", shuffle=True, port_offset=0)

    def val_dataloader(self) -> Any:
        """Validation and test seeds, as :class:`datamodules.graph.NodeDataModule` serves mini-batches."""
        return [self._loader("val", shuffle=False, port_offset=1), self._loader("test", shuffle=False, port_offset=2)]

    def test_dataloader(self) -> Any:
        return self._loader("test", shuffle=False, port_offset=2)

