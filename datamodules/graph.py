"""The base of every node-classification datamodule: one graph, full batch or NeighborLoader."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Data, HeteroData


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or incomplete; the message says which files to put where."""


class NodeDataModule(L.LightningDataModule):
    """Serves one graph with ``train/val/test`` masks on the classified node type.

    Subclasses implement :meth:`load`, which returns the graph (``Data`` or
    ``HeteroData``; for hetero graphs the target type carries ``x``, ``y`` and
    the masks) plus its facts. The facts are read by ``main.py`` and linked into
    the model (``num_features``, ``num_classes``, ``graph_info``), so the graph is
    loaded on first access, in the process that asks.

    Args:
        batch_size: ``None`` trains full-batch (small graphs); an int trains on
            ``NeighborLoader`` mini-batches of that many seed nodes (large graphs;
            needs ``pyg-lib`` or ``torch-sparse``).
        num_neighbors: neighbours sampled per layer (per relation for hetero graphs).
        num_workers: DataLoader workers for mini-batches.
    """

    def __init__(self, batch_size: int | None = None, num_neighbors: list[int] | None = None, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_neighbors = num_neighbors or [15, 10]
        self.num_workers = num_workers
        self._graph: Data | HeteroData | None = None
        self._info: dict[str, Any] | None = None

    def load(self) -> tuple[Data | HeteroData, dict[str, Any]]:
        """Return ``(graph, info)``; info has ``dataset``, ``task``, ``num_classes``, ``hetero``."""
        raise NotImplementedError

    def _ensure_loaded(self) -> None:
        if self._graph is None:
            self._graph, self._info = self.load()

    @property
    def graph(self) -> Data | HeteroData:
        self._ensure_loaded()
        return self._graph

    @property
    def graph_info(self) -> dict[str, Any]:
        """JSON-friendly facts the model is built from (linked by ``main.py``)."""
        self._ensure_loaded()
        return self._info

    @property
    def target_store(self) -> Any:
        """The node store that is classified (the graph itself when homogeneous)."""
        hetero = self.graph_info["hetero"]
        return self.graph[hetero["target"]] if hetero else self.graph

    @property
    def num_features(self) -> int:
        return int(self.target_store.x.size(-1))

    @property
    def num_classes(self) -> int:
        return int(self.graph_info["num_classes"])

    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def _loader(self, split: str, shuffle: bool) -> Any:
        if self.batch_size is None:
            return DataLoader([self.graph], batch_size=None, collate_fn=lambda graph: graph)
        from torch_geometric.loader import NeighborLoader  # needs pyg-lib or torch-sparse

        hetero = self.graph_info["hetero"]
        seeds = torch.nonzero(getattr(self.target_store, f"{split}_mask")).view(-1)
        try:
            return NeighborLoader(
                self.graph,
                num_neighbors=self.num_neighbors,
                input_nodes=(hetero["target"], seeds) if hetero else seeds,
                batch_size=self.batch_size,
                shuffle=shuffle,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        except ImportError as error:
            raise ImportError(
                f"mini-batches (batch_size={self.batch_size}) need PyG's neighbour sampler: install pyg-lib from "
                "PyG's wheel index, or run `make setup-sampling` (builds torch-sparse from PyPI); "
                f"or set batch_size: null for full-batch training ({error})"
            ) from error

    def train_dataloader(self) -> Any:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> Any:
        """Full batch: the graph (validation and test rows are both scored); mini-batch: val and test seeds."""
        if self.batch_size is None:
            return self._loader("val", shuffle=False)
        return [self._loader("val", shuffle=False), self._loader("test", shuffle=False)]

    def test_dataloader(self) -> Any:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> Any:
        """Full graph (or every target node in mini-batches): predictions for all nodes."""
        if self.batch_size is None:
            return self._loader("test", shuffle=False)
        store = self.target_store
        store.all_mask = torch.ones(store.num_nodes, dtype=torch.bool)
        return self._loader("all", shuffle=False)


def split_masks(num_nodes: int, split: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OGB-style ``{'train','valid','test'}`` index tensors -> ``{train,val,test}_mask``."""
    masks = {}
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[split[theirs]] = True
        masks[f"{ours}_mask"] = mask
    return masks
