"""METIS partitions of the generated MAG graph round-trip through PyG's distributed stores."""
from __future__ import annotations

import collections
import copy
import dataclasses
import importlib.util
import inspect
import multiprocessing
import socket
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch_geometric.typing
import yaml
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

import datamodules.partitioned as partitioned
import datamodules.pyg_workarounds as pyg_workarounds
from datamodules.ogb import SyntheticMAGDataModule
from datamodules.partitioned import (
    EqualStepBatches,
    PartitionedNodeDataModule,
    PartitionError,
    edge_cut,
    load_partition,
    metis_available,
    owners_of,
    seed_order,
    verify_partition,
    write_partitions,
)
from datamodules.pyg_workarounds import accept_stack_level, load_partition_file
from tests.graph_fixtures import TINY_MAG

NUM_PARTS = 2
needs_metis = pytest.mark.skipif(not metis_available(), reason="METIS missing: run `make setup-sampling`")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "partition_graph.py"


@pytest.fixture(scope="module")
def mag_root(tmp_path_factory):
    return tmp_path_factory.mktemp("mag")


@pytest.fixture(scope="module", params=[False, True], ids=["homo", "hetero"])
def source(request, mag_root):
    """The generated MAG datamodule (paper-citation graph or all four node types)."""
    return SyntheticMAGDataModule(TINY_MAG, root=str(mag_root), hetero=request.param)


@pytest.fixture(scope="module")
def parts(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("parts") / "mag"
    info = write_partitions(source.graph, source.graph_info, source.num_classes, out, NUM_PARTS)
    return out, info, [load_partition(out, pid) for pid in range(NUM_PARTS)]


def node_groups(source) -> list[str | None]:
    hetero = source.graph_info.hetero
    return list(hetero.node_types) if hetero else [None]


def stored_ids(partition, group: str | None) -> torch.Tensor:
    """Ids of the nodes a partition stores (per type for a heterogeneous graph), in feature-row order."""
    return partition.feature_store.get_global_id(group)


@needs_metis
def test_every_node_in_exactly_one_partition(source, parts):
    _, _, loaded = parts
    for group in node_groups(source):
        store = source.graph[group] if group else source.graph
        ids = torch.cat([stored_ids(p, group) for p in loaded])
        assert torch.equal(ids.sort().values, torch.arange(store.num_nodes)), group


@needs_metis
def test_features_and_labels_match_the_source_by_global_id(source, parts):
    _, _, loaded = parts
    target = source.target_store
    group = source.graph_info.hetero.target if source.graph_info.hetero else None
    for partition in loaded:
        ids = stored_ids(partition, group)
        x = partition.feature_store.get_tensor(group, "x") if group else partition.feature_store.get_tensor(None, "x")
        assert torch.equal(x, target.x[ids])
        assert x.untyped_storage().nbytes() == x.numel() * x.element_size()  # its own rows on disk, not the whole matrix
        assert torch.equal(partition.feature_store.labels[ids], target.y[ids])


@needs_metis
def test_edges_are_kept_with_their_destination(source, parts):
    out, _, loaded = parts
    owner = owners_of(out, source.graph_info)
    graph = source.graph
    originals = graph.edge_index_dict if source.graph_info.hetero else {None: graph.edge_index}
    for edge_type, edge_index in originals.items():
        held = []
        for partition in loaded:
            attr = next(a for a in partition.graph_store.get_all_edge_attrs() if a.edge_type == edge_type)
            stored = partition.graph_store.get_edge_index(attr)
            destination_owner = owner[edge_type[-1]] if edge_type else owner
            assert (destination_owner[stored[1]] == partition.index).all()
            held.append(stored)
        held = torch.cat(held, 1)
        assert held.size(1) == edge_index.size(1)
        assert torch.equal(torch.unique(held, dim=1), torch.unique(edge_index, dim=1)), edge_type


@needs_metis
def test_split_seeds_are_owned_and_complete(source, parts):
    _, info, loaded = parts
    for split in ("train", "val", "test"):
        seeds = torch.cat([p.seeds[split] for p in loaded])
        assert torch.equal(seeds.sort().values, torch.nonzero(source.target_store[f"{split}_mask"]).view(-1))
        assert info["split_sizes"][split] == [len(p.seeds[split]) for p in loaded]
    for partition in loaded:
        verify_partition(partition)


@needs_metis
def test_verification_catches_seeds_of_another_partition(parts):
    _, _, loaded = parts
    first, second = loaded
    swapped = dataclasses.replace(first, seeds={**first.seeds, "train": second.seeds["train"]})
    with pytest.raises(PartitionError, match="train_idx.pt lists nodes of other partitions"):
        verify_partition(swapped)


@needs_metis
def test_metis_cuts_fewer_edges_than_a_random_split(source, parts):
    out, info, _ = parts
    owner = owners_of(out, source.graph_info)
    generator = torch.Generator().manual_seed(0)

    def shuffled(assignment: torch.Tensor) -> torch.Tensor:  # same part sizes, random membership
        return assignment[torch.randperm(len(assignment), generator=generator)]

    random_owner = {t: shuffled(o) for t, o in owner.items()} if isinstance(owner, dict) else shuffled(owner)
    random_cut = edge_cut(source.graph, random_owner)
    assert info["edge_cut"] == pytest.approx(edge_cut(source.graph, owner))
    assert info["edge_cut"] < 0.8 * random_cut, (info["edge_cut"], random_cut)


@needs_metis
def test_datamodule_loads_and_checks_its_rank(source, parts):
    out, _, _ = parts
    dm = PartitionedNodeDataModule(str(out), batch_size=16)
    assert dm.graph_info == source.graph_info
    assert (dm.num_features, dm.num_classes) == (source.num_features, source.num_classes)
    connector = SimpleNamespace(use_distributed_sampler=False)
    alone = SimpleNamespace(reduce_boolean_decision=lambda ok, all=True: ok)  # a one-process job's decision
    dm.trainer = SimpleNamespace(world_size=NUM_PARTS, global_rank=1, _accelerator_connector=connector, strategy=alone)
    dm.setup("fit")
    assert dm.partition.index == 1
    dm.trainer = SimpleNamespace(world_size=3, global_rank=0, _accelerator_connector=connector, strategy=alone)
    with pytest.raises(PartitionError, match="has 2 partitions but the job has 3 processes"):
        dm.setup("fit")
    # this rank loaded fine, another did not: this rank stops too instead of waiting for it in DDP set-up
    other_failed = SimpleNamespace(reduce_boolean_decision=lambda ok, all=True: False)
    dm.trainer = SimpleNamespace(world_size=NUM_PARTS, global_rank=0, _accelerator_connector=connector,
                                 strategy=other_failed)
    with pytest.raises(PartitionError, match="another rank could not load its partition"):
        dm.setup("fit")


@needs_metis
@pytest.mark.skipif(torch_geometric.typing.WITH_PYG_LIB, reason="pyg-lib is installed: DistNeighborLoader can run")
def test_loader_without_pyg_lib_says_how_to_get_it(parts):
    dm = PartitionedNodeDataModule(str(parts[0]))
    with pytest.raises(ImportError, match="DistNeighborLoader samples with pyg-lib.*make setup-sampling"):
        dm.train_dataloader()


@needs_metis
def test_edge_features_survive_partitioning(source, tmp_path):
    """PyG saves edge features in a defaultdict its own loader cannot read; the writer saves plain dicts."""
    graph = copy.copy(source.graph)
    stores = graph.edge_stores
    generator = torch.Generator().manual_seed(0)
    for store in stores:
        store.edge_attr = torch.randn(store.num_edges, 3, generator=generator)
    write_partitions(graph, source.graph_info, source.num_classes, tmp_path / "parts", NUM_PARTS)
    held = 0
    for pid in range(NUM_PARTS):
        features = load_partition(tmp_path / "parts", pid).feature_store
        for store in stores:
            group = store._key if source.graph_info.hetero else (None, None)
            ids = features.get_global_id(group)
            assert torch.equal(features.get_tensor(group, "edge_attr"), store.edge_attr[ids]), group
            held += len(ids)
    assert held == sum(store.num_edges for store in stores)  # every edge's features, once


def test_partition_files_with_defaultdicts_read_as_plain_dicts(tmp_path):
    """What PyG's Partitioner writes (a defaultdict holding tensors) reads back as dicts; PyG's allow-list is kept."""
    saved = collections.defaultdict(dict)
    saved[("paper", "cites", "paper")].update({"global_id": torch.arange(3), "feats": {"edge_attr": torch.ones(3, 2)}})
    torch.save(saved, tmp_path / "edge_feats.pt")
    allowed = {str(entry) for entry in torch.serialization.get_safe_globals()}
    for _ in range(3):
        loaded = load_partition_file(tmp_path / "edge_feats.pt")
        assert type(loaded) is dict and type(loaded[("paper", "cites", "paper")]) is dict
        assert torch.equal(loaded[("paper", "cites", "paper")]["feats"]["edge_attr"], torch.ones(3, 2))
    assert {str(entry) for entry in torch.serialization.get_safe_globals()} == allowed


def test_stack_level_warning_call_is_shimmed_only_where_present(monkeypatch):
    """PyG 2.8.1's deprecation warning passes ``stack_level=``; after the shim it warns instead of raising."""
    import torch_geometric.distributed.dist_neighbor_sampler as sampler_module

    if "stack_level=" not in inspect.getsource(sampler_module):
        pytest.skip("this PyG passes stacklevel correctly: nothing to shim")
    monkeypatch.setattr(sampler_module, "warn", warnings.warn)
    with pytest.raises(TypeError, match="stack_level"):
        sampler_module.warn("deprecated", stack_level=2)
    assert "torch_geometric.distributed.dist_neighbor_sampler" in accept_stack_level()
    with pytest.warns(UserWarning, match="deprecated"):
        sampler_module.warn("deprecated", stack_level=2)
    assert accept_stack_level() == []  # once is enough
    monkeypatch.setattr(pyg_workarounds, "WARNING_MODULES", ("torch_geometric.distributed.partition",))
    assert accept_stack_level() == []  # a module without the faulty call is left alone


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sample_own_partition(root: str, rank: int, port: int, out: Path) -> None:
    """One process of a 2-process job: load partition ``rank`` through the datamodule and sample an epoch.

    Saves, per training batch, every node type's global ids and features, the classified type's labels
    and seed count, and each edge type's edges in global ids.
    """
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=NUM_PARTS)
    dm = PartitionedNodeDataModule(root, batch_size=24, num_neighbors=[4, 3], concurrency=2)
    environment = SimpleNamespace(main_address="127.0.0.1", main_port=port)
    dm.trainer = SimpleNamespace(world_size=NUM_PARTS, global_rank=rank,
                                 _accelerator_connector=SimpleNamespace(use_distributed_sampler=False),
                                 strategy=SimpleNamespace(cluster_environment=environment,
                                                          reduce_boolean_decision=lambda ok, all=True: ok))
    dm.setup("fit")
    hetero = dm.graph_info.hetero
    batches = []
    for batch in dm.train_dataloader():
        if hetero is None:
            nodes = {None: (batch.n_id, batch.x)}
            edges = {None: torch.stack([batch.n_id[batch.edge_index[0]], batch.n_id[batch.edge_index[1]]])}
            target = batch
        else:
            nodes = {t: (batch[t].n_id, batch[t].x) for t in batch.node_types}
            edges = {e: torch.stack([batch[e[0]].n_id[batch[e].edge_index[0]], batch[e[-1]].n_id[batch[e].edge_index[1]]])
                     for e in batch.edge_types}
            target = batch[hetero.target]
        batches.append({"nodes": nodes, "edges": edges, "y": target.y, "seeds": target.n_id[: target.batch_size]})
    torch.save(batches, out / f"rank{rank}.pt")
    dist.barrier()  # both ranks stay up to answer each other's remote lookups until both are done
    torch.distributed.rpc.shutdown()
    dist.destroy_process_group()


@needs_metis
@pytest.mark.skipif(not torch_geometric.typing.WITH_PYG_LIB, reason="DistNeighborLoader needs pyg-lib: `make setup-sampling`")
def test_dist_neighbor_loader_on_two_processes_samples_the_whole_graph(source, parts, tmp_path):
    """Two processes on 127.0.0.1, each holding one partition: every seed once, remote neighbours with their own features.

    The processes are forked from this one (already imported: seconds, not the minute two fresh
    interpreters take here). Their RPC fetches the features of nodes the other partition owns.
    """
    out, _, loaded = parts
    port = free_port()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=sample_own_partition, args=(str(out), rank, port, tmp_path)) for rank in range(NUM_PARTS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * NUM_PARTS
    graph, hetero = source.graph, source.graph_info.hetero
    owner = owners_of(out, source.graph_info)
    runs = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(NUM_PARTS)]
    assert len(runs[0]) == len(runs[1]) > 1  # the same number of steps on both processes
    remote = 0
    for rank, (batches, partition) in enumerate(zip(runs, loaded)):
        seeds = torch.cat([batch["seeds"] for batch in batches])
        assert torch.equal(seeds.sort().values, partition.seeds["train"].sort().values)  # each own seed once
        for batch in batches:
            target = source.target_store
            assert torch.equal(batch["y"], target.y[batch["nodes"][hetero.target if hetero else None][0]])
            for node_type, (ids, x) in batch["nodes"].items():
                store = graph[node_type] if node_type else graph
                if "x" in store:
                    assert torch.equal(x, store.x[ids]), node_type
                else:  # featureless (learned embeddings): zero columns
                    assert x.shape == (len(ids), 0)
                remote += int(((owner[node_type] if node_type else owner)[ids] != rank).sum())
            for edge_type, pairs in batch["edges"].items():
                store = graph[edge_type] if edge_type else graph
                size = (graph[edge_type[-1]] if edge_type else graph).num_nodes
                known = store.edge_index[0] * size + store.edge_index[1]
                assert torch.isin(pairs[0] * size + pairs[1], known).all(), edge_type
    assert remote > 0  # neighbours owned by the other process were sampled and their features fetched


@needs_metis
def test_script_partitions_a_config_and_refuses_to_overwrite(mag_root, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("partition_graph", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config = tmp_path / "mag.yaml"
    init_args = {"synthetic": TINY_MAG.__dict__, "root": str(mag_root), "hetero": False}
    config.write_text(yaml.safe_dump({"data": {"class_path": "datamodules.ogb.SyntheticMAGDataModule", "init_args": init_args}}))
    out = tmp_path / "parts"
    assert script.main(["--config", str(config), "--num-parts", "2", "--out", str(out)]) == 0
    assert "edge cut" in capsys.readouterr().out and (out / "partition_info.json").is_file()
    assert script.main(["--config", str(config), "--num-parts", "2", "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({"data": {"class_path": "datamodules.ffhq.FFHQDataModule"}}))
    assert script.main(["--config", str(config), "--num-parts", "2", "--out", str(tmp_path / "other")]) == 1
    assert "must be a datamodules.graph.NodeDataModule" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mag.yaml", "parts"]  # no staging folder left behind


def test_missing_metis_says_how_to_build_it(mag_root, tmp_path, monkeypatch):
    source = SyntheticMAGDataModule(TINY_MAG, root=str(mag_root), hetero=False)
    monkeypatch.setattr(partitioned, "metis_available", lambda: False)
    with pytest.raises(ImportError, match="make setup-sampling"):
        write_partitions(source.graph, source.graph_info, source.num_classes, tmp_path / "parts", 2)
    assert list(tmp_path.iterdir()) == []


@needs_metis
def test_failed_partitioning_leaves_nothing(mag_root, tmp_path, monkeypatch):
    source = SyntheticMAGDataModule(TINY_MAG, root=str(mag_root), hetero=False)

    def fail_midway(self):
        (Path(self.root) / "part_0").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(partitioned.Partitioner, "generate_partition", fail_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        write_partitions(source.graph, source.graph_info, source.num_classes, tmp_path / "parts", 2)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_says_how_to_write_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/partition_graph.py --config CONFIG --num-parts N"):
        PartitionedNodeDataModule(str(tmp_path / "nowhere"))


def test_equal_step_batches_cover_each_seed_once_in_the_same_number_of_steps():
    in_order = list(EqualStepBatches(seed_order(10, shuffle=False), 4))
    assert in_order == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]  # sizes differ by at most one, no seed twice
    # fewer seeds than steps: every seed once, then one seed per step that would be empty
    assert list(EqualStepBatches(seed_order(2, shuffle=False), 4)) == [[0], [1], [0], [1]]
    with pytest.raises(PartitionError, match="owns no node"):
        EqualStepBatches(seed_order(0, shuffle=False), 2)


def test_equal_step_batches_reshuffle_when_lightning_moves_the_epoch():
    """Lightning sets the epoch on ``loader.batch_sampler.sampler``: a new order each epoch, the same on a rerun."""
    loader = DataLoader(range(10), batch_sampler=EqualStepBatches(seed_order(10, shuffle=True, seed=3), 4))
    orders = []
    for epoch in (0, 1, 0):
        _set_sampler_epoch(loader, epoch)
        batches = [batch.tolist() for batch in loader]
        assert len(batches) == 4 and sorted(sum(batches, [])) == list(range(10))
        orders.append(batches)
    assert orders[0] != orders[1] and orders[0] == orders[2]
