"""The generated ogbn-mag folder is read by ogb's own loader, and bad folders fail clearly."""
from __future__ import annotations

import shutil

import lightning as L
import numpy as np
import pytest
import torch
from ogb.nodeproppred import PygNodePropPredDataset
from torch_geometric.utils import to_undirected

from datamodules.graph import DatasetNotFoundError
from datamodules.ogb import PYG_SAFE_GLOBALS, OGBNodeDataModule, SyntheticMAGDataModule
from graphkd.synthetic_mag import TRIPLETS, generate, write_synthetic_mag
from lightning_modules.node_classifier import NodeClassifier
from tests.datamodules.ogb_layout import write_homogeneous_ogb
from tests.graph_fixtures import TINY_MAG, require_neighbor_sampler


@pytest.fixture(scope="module")
def mag_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mag")
    write_synthetic_mag(root, TINY_MAG)
    return root


def test_generated_folder_loads_through_ogb(mag_root):
    graph = generate(TINY_MAG)
    for attempt in range(2):  # the second load reads ogb's processed file (weights_only pitfall)
        with torch.serialization.safe_globals(PYG_SAFE_GLOBALS):
            dataset = PygNodePropPredDataset("ogbn-mag", root=str(mag_root))
        data = dataset[0]
        assert data.num_nodes_dict == graph["num_nodes"]
        assert data.x_dict["paper"].shape == (TINY_MAG.num_papers, TINY_MAG.feature_dim)
        assert torch.equal(data.y_dict["paper"].view(-1), torch.from_numpy(graph["labels"]))
        for triplet in TRIPLETS:
            assert torch.equal(data.edge_index_dict[triplet], torch.from_numpy(graph["edges"][triplet]))
        split = dataset.get_idx_split()
        years = torch.from_numpy(graph["years"])
        assert (years[split["train"]["paper"]] < 2018).all() and (years[split["test"]["paper"]] == 2019).all()
    assert (mag_root / "ogbn_mag" / "processed" / "geometric_data_processed.pt").is_file()


def test_hetero_datamodule_schema(mag_root):
    dm = SyntheticMAGDataModule(TINY_MAG, root=str(mag_root), hetero=True)
    info = dm.graph_info
    assert info.hetero.target == "paper" and dm.num_classes == TINY_MAG.num_classes
    assert dm.num_features == TINY_MAG.feature_dim
    assert len(info.hetero.edge_types) == 7  # cites made undirected + 3 relations and their reverses
    assert set(info.hetero.featureless_num_nodes) == {"author", "institution", "field_of_study"}
    paper = dm.graph["paper"]
    assert int(paper.train_mask.sum() + paper.val_mask.sum() + paper.test_mask.sum()) == TINY_MAG.num_papers


def test_homogeneous_paper_subgraph(mag_root):
    dm = SyntheticMAGDataModule(TINY_MAG, root=str(mag_root), hetero=False)
    data = dm.graph
    assert dm.graph_info.hetero is None and data.num_nodes == TINY_MAG.num_papers
    cites = torch.from_numpy(generate(TINY_MAG)["edges"][TRIPLETS[2]])
    assert data.edge_index.shape[1] == torch.unique(torch.cat([cites, cites.flip(0)], 1), dim=1).shape[1]


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown OGB node dataset 'ogbn-foo'.*ogbn-arxiv"):
        OGBNodeDataModule(name="ogbn-foo")


def test_missing_dataset_says_where_to_put_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"ogbn-arxiv is missing.*RELEASE_v1.txt.*arxiv.zip"):
        OGBNodeDataModule(name="ogbn-arxiv", root=str(tmp_path)).graph_info


def test_partial_dataset_folder_names_missing_files(mag_root, tmp_path):
    partial = tmp_path / "ogbn_mag"
    shutil.copytree(mag_root / "ogbn_mag", partial, ignore=shutil.ignore_patterns("processed"))
    (partial / "raw" / "node-feat" / "paper" / "node-feat.csv.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing raw/node-feat/paper/node-feat.csv.gz"):
        OGBNodeDataModule(name="ogbn-mag", root=str(tmp_path)).graph_info


def test_synthetic_folder_with_other_config_is_refused(mag_root):
    other = SyntheticMAGDataModule(TINY_MAG.__class__(**{**TINY_MAG.__dict__, "seed": 7}), root=str(mag_root))
    with pytest.raises(ValueError, match="was generated with"):
        other.graph_info


@pytest.mark.parametrize("hetero", [True, False])
def test_neighbor_loader_batches_seed_first(mag_root, hetero):
    require_neighbor_sampler()
    dm = SyntheticMAGDataModule(TINY_MAG, root=str(mag_root), hetero=hetero, batch_size=64, num_neighbors=[5, 3])
    seeds = []
    for batch in dm.train_dataloader():
        store = batch["paper"] if hetero else batch
        seed_ids = store.n_id[: store.batch_size]
        assert dm.target_store.train_mask[seed_ids].all()
        seeds.append(seed_ids)
    assert torch.equal(torch.cat(seeds).sort().values, torch.nonzero(dm.target_store.train_mask).view(-1))


def test_arxiv_layout_loads_undirected_with_masks(tmp_path):
    written = write_homogeneous_ogb(tmp_path, "ogbn-arxiv")
    dm = OGBNodeDataModule("ogbn-arxiv", root=str(tmp_path))
    data = dm.graph
    assert dm.num_classes == 40 and dm.graph_info.task == "multiclass" and dm.num_features == 8
    assert torch.equal(data.y, torch.from_numpy(written["labels"]).view(-1))
    edges = torch.from_numpy(written["edges"]).T
    assert torch.equal(data.edge_index, to_undirected(edges, num_nodes=data.num_nodes))
    assert torch.equal(torch.nonzero(data.val_mask).view(-1), torch.from_numpy(np.sort(written["split"]["valid"])))


def test_proteins_layout_is_multilabel_with_edge_feature_means(tmp_path):
    written = write_homogeneous_ogb(tmp_path, "ogbn-proteins")
    dm = OGBNodeDataModule("ogbn-proteins", root=str(tmp_path))
    data = dm.graph
    assert dm.graph_info.task == "multilabel" and dm.num_classes == 112
    assert data.y.dtype == torch.float32 and torch.equal(data.y, torch.from_numpy(written["labels"]).float())
    assert dm.num_features == 8 and (data.x >= 0).all() and (data.x <= 1).all()  # means of features in [0, 1)
    module = NodeClassifier(dm.num_features, dm.num_classes, dm.graph_info, arch="sage", hidden_channels=8)
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    assert 0.0 <= trainer.callback_metrics["val/rocauc"] <= 1.0


def test_concurrent_writers_of_the_same_graph_agree(tmp_path, monkeypatch):
    """Two processes (e.g. DDP ranks) generating the same graph: the slower one keeps the first copy."""
    import graphkd.synthetic_mag as synthetic_mag

    first = write_synthetic_mag(tmp_path, TINY_MAG)
    monkeypatch.setattr(synthetic_mag.Path, "exists", lambda self: False)  # the second writer checked before the first finished
    assert synthetic_mag.write_synthetic_mag(tmp_path, TINY_MAG) == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # its staging copy is gone


def test_missing_sampler_says_how_to_install_it(mag_root, monkeypatch):
    import torch_geometric.loader

    def no_sampler(*args, **kwargs):
        raise ImportError("'NeighborSampler' requires either 'pyg-lib' or 'torch-sparse'")

    monkeypatch.setattr(torch_geometric.loader, "NeighborLoader", no_sampler)
    dm = SyntheticMAGDataModule(TINY_MAG, root=str(mag_root), batch_size=32)
    with pytest.raises(ImportError, match="make setup-sampling.*batch_size: null"):
        dm.train_dataloader()
