"""Planetoid from local raw files; a clear error when they are absent."""
from __future__ import annotations

import pytest

from datamodules.graph import DatasetNotFoundError
from datamodules.planetoid import PlanetoidDataModule
from tests.graph_fixtures import copy_planetoid


def test_real_cora_loads(shared_assets, tmp_path):
    dm = PlanetoidDataModule("Cora", root=str(copy_planetoid(shared_assets, tmp_path, "Cora")))
    data = dm.graph
    assert (data.num_nodes, data.edge_index.shape[1], dm.num_features, dm.num_classes) == (2708, 10556, 1433, 7)
    assert (int(data.train_mask.sum()), int(data.val_mask.sum()), int(data.test_mask.sum())) == (140, 500, 1000)


def test_missing_raw_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"Cora raw files missing.*ind\.cora\.x.*kimiyoung/planetoid"):
        PlanetoidDataModule("Cora", root=str(tmp_path)).graph_info


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown Planetoid dataset 'Amazon'"):
        PlanetoidDataModule("Amazon")
