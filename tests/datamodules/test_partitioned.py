"""METIS partitions of the generated MAG graph round-trip through PyG's distributed stores."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch_geometric.typing
import yaml

import datamodules.partitioned as partitioned
from datamodules.ogb import SyntheticMAGDataModule
from datamodules.partitioned import (
    EqualStepBatches,
    PartitionedNodeDataModule,
    PartitionError,
    edge_cut,
    load_partition,
    metis_available,
    owners_of,
    verify_partition,
    write_partitions,
)
from tests.graph_fixtures import TINY_MAG

NUM_PARTS = 2
needs_metis = pytest.mark.skipif(not metis_available(), reason="METIS missing: `make setup-sampling` builds torch-sparse with it")
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
    """Per-type ids of the nodes a partition stores (PyG keeps hetero ids in the homogenised space)."""
    ids = partition.feature_store.get_global_id(group)
    if group is None:
        return ids
    return ids - partition.feature_store.meta["node_offset"][partition.info["graph_info"]["hetero"]["node_types"].index(group)]


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
    with pytest.raises(ImportError, match="DistNeighborLoader samples with pyg-lib.*wheel index"):
        dm.train_dataloader()


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
    in_order = list(EqualStepBatches(10, 4, shuffle=False))
    assert in_order == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]  # sizes differ by at most one, no seed twice
    shuffled = EqualStepBatches(10, 4, shuffle=True, seed=3)
    first = list(shuffled)
    assert len(shuffled) == len(first) == 4 and sorted(sum(first, [])) == list(range(10))
    assert list(shuffled) == first  # the same epoch draws the same batches (exact resume)
    shuffled.set_epoch(1)
    assert list(shuffled) != first and sorted(sum(list(shuffled), [])) == list(range(10))
    # fewer seeds than steps: every seed once, then one seed per step that would be empty
    assert list(EqualStepBatches(2, 4, shuffle=False)) == [[0], [1], [0], [1]]
    with pytest.raises(PartitionError, match="owns no node"):
        EqualStepBatches(0, 2, shuffle=False)
