"""Any PyG dataset from local files: the shared Amazon/Coauthor graphs, Shchur et al.'s split, clear errors."""
from __future__ import annotations

import shutil

import pytest
import torch

from datamodules.graph import DatasetNotFoundError
from datamodules.pyg_dataset import DatasetArgumentError, PyGDataModule, per_class_split
from graphkd.graph_info import GraphInfo

SHARED = {"Computers": "Amazon", "Physics": "Coauthor"}
# nodes, directed edges, features, classes (shared/assets/README.md)
FACTS = {"Computers": (13752, 491722, 767, 10), "Physics": (34493, 495924, 8415, 5)}


@pytest.fixture(scope="module", params=sorted(SHARED))
def shared_graph(request, shared_assets, tmp_path_factory):
    """A datamodule on a writable copy of one shared graph, plus the copy's root."""
    name = request.param
    root = tmp_path_factory.mktemp("pyg")
    shutil.copytree(shared_assets / "graphs" / "pyg" / name, root / name)
    return name, root, PyGDataModule(f"torch_geometric.datasets.{SHARED[name]}", {"name": name}, root=str(root))


def test_shared_graph_loads_with_a_20_30_per_class_split(shared_graph):
    name, _, dm = shared_graph
    data = dm.graph
    assert (data.num_nodes, data.edge_index.size(1), dm.num_features, dm.num_classes) == FACTS[name]
    assert dm.graph_info == GraphInfo(dataset=name, task="multiclass", num_classes=FACTS[name][3])
    train, val, test = data.train_mask, data.val_mask, data.test_mask
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    assert bool((train | val | test).all())
    assert torch.bincount(data.y[train], minlength=dm.num_classes).tolist() == [20] * dm.num_classes
    assert torch.bincount(data.y[val], minlength=dm.num_classes).tolist() == [30] * dm.num_classes


def test_split_is_the_same_for_a_seed_and_differs_for_another(shared_graph):
    name, root, dm = shared_graph
    again = PyGDataModule(SHARED[name], {"name": name}, root=str(root), split_seed=0).graph  # processed files reused
    other = PyGDataModule(SHARED[name], {"name": name}, root=str(root), split_seed=1).graph
    for split in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(dm.graph[split], again[split])
    assert not torch.equal(dm.graph.train_mask, other.train_mask)
    assert torch.equal(dm.graph.x, other.x) and torch.equal(dm.graph.edge_index, other.edge_index)


def test_per_class_split_by_hand():
    y = torch.tensor([0] * 6 + [1] * 8 + [2] * 7)
    masks = per_class_split(y, train_per_class=2, val_per_class=3, seed=4)
    for label, size in ((0, 6), (1, 8), (2, 7)):
        rows = y == label
        assert [int((masks[m] & rows).sum()) for m in ("train_mask", "val_mask", "test_mask")] == [2, 3, size - 5]
    with pytest.raises(DatasetArgumentError, match="class 1 has 5 nodes, too few for 2 train \\+ 3 validation"):
        per_class_split(torch.tensor([0] * 9 + [1] * 5), 2, 3, seed=0)


def test_public_split_is_kept(shared_assets, tmp_path):
    raw = tmp_path / "Cora" / "raw"
    raw.mkdir(parents=True)
    for file in (shared_assets / "graphs" / "planetoid").glob("ind.cora.*"):
        shutil.copy(file, raw)
    dm = PyGDataModule("torch_geometric.datasets.Planetoid", {"name": "Cora"}, root=str(tmp_path), split_seed=3,
                       normalize_features=True)
    data = dm.graph
    assert [int(data[f"{s}_mask"].sum()) for s in ("train", "val", "test")] == [140, 500, 1000]
    assert torch.equal(data.train_mask[:140], torch.ones(140, dtype=torch.bool))  # Planetoid's first 140 nodes
    assert torch.allclose(data.x.sum(1), torch.ones(data.num_nodes))  # row-normalised (no empty rows in Cora)


def test_missing_folder_names_the_files_and_downloads_nothing(tmp_path):
    dm = PyGDataModule("torch_geometric.datasets.Amazon", {"name": "Computers"}, root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError,
                       match=r"Amazon raw files missing in .*Computers/raw: amazon_electronics_computers\.npz.*"
                             r"gnn-benchmark.*no download is attempted"):
        dm.graph_info
    assert not list((tmp_path / "nowhere").rglob("*.npz"))


def test_truncated_raw_file_is_a_clear_error(shared_assets, tmp_path):
    raw = tmp_path / "Computers" / "raw"
    raw.mkdir(parents=True)
    data = (shared_assets / "graphs" / "pyg" / "Computers" / "raw" / "amazon_electronics_computers.npz").read_bytes()
    (raw / "amazon_electronics_computers.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetNotFoundError, match="incomplete or corrupt.*replace the raw files"):
        PyGDataModule("Amazon", {"name": "Computers"}, root=str(tmp_path)).graph_info


@pytest.mark.parametrize("dataset, args, message", [
    ("torch_geometric.datasets.Nope", {}, "no dataset class 'torch_geometric.datasets.Nope'"),
    ("torch.nn.Linear", {}, "not a torch_geometric Dataset class"),
    ("Amazon", {"root": "x"}, "give the dataset folder as root"),
])
def test_bad_dataset_arguments(dataset, args, message):
    with pytest.raises(DatasetArgumentError, match=message):
        PyGDataModule(dataset, args)


def test_unknown_dataset_name_is_an_input_error(tmp_path):
    with pytest.raises(DatasetArgumentError, match=r"Amazon refused dataset_args \{'name': 'Bogus'\}"):
        PyGDataModule("Amazon", {"name": "Bogus"}, root=str(tmp_path)).graph_info
