"""Cora / CiteSeer / PubMed from local Planetoid raw files (the public split)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch_geometric.data import Data
from torch_geometric.datasets import Planetoid

from datamodules.graph import DatasetNotFoundError, NodeDataModule, preparation_lock
from graphkd.graph_info import GraphInfo

RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


class PlanetoidDataModule(NodeDataModule):
    """A Planetoid citation graph, full batch, with the standard public split.

    Args:
        name: ``Cora``, ``CiteSeer`` or ``PubMed``.
        root: folder holding ``<name>/raw/ind.<name>.*`` (the files of
            kimiyoung/planetoid; no download is attempted).
        **kwargs: ``batch_size``, ``num_neighbors``, ``num_workers`` and ``shuffle`` of
            :class:`NodeDataModule` (full batch by default).
    """

    def __init__(
        self,
        name: str = "Cora",
        root: str = "data/planetoid",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        known = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
        if name.lower() not in known:
            raise ValueError(f"unknown Planetoid dataset {name!r}; choose one of {sorted(known.values())}")
        self.name = known[name.lower()]
        self.root = root

    def load(self) -> tuple[Data, GraphInfo]:
        raw = Path(self.root) / self.name / "raw"
        missing = [f"ind.{self.name.lower()}.{s}" for s in RAW_SUFFIXES if not (raw / f"ind.{self.name.lower()}.{s}").is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{self.name} raw files missing in {raw}: {', '.join(missing)}. Copy the ind.{self.name.lower()}.* files "
                f"of github.com/kimiyoung/planetoid (data/) into {raw}/"
            )
        with preparation_lock(Path(self.root) / self.name):  # PyG writes processed/ on first use
            dataset = Planetoid(self.root, self.name)
        data = dataset[0]
        info = GraphInfo(dataset=self.name, task="multiclass", num_classes=dataset.num_classes)
        return Data(x=data.x, edge_index=data.edge_index, y=data.y, train_mask=data.train_mask,
                    val_mask=data.val_mask, test_mask=data.test_mask), info
