"""The base of every node-classification datamodule: one graph, full batch or NeighborLoader.

Under DDP (``strategy=ddp``) every process holds the whole graph, and:

* mini-batches: each rank draws ``batch_size`` seeds per step from its own share of the split
  (a ``DistributedSampler`` over the seed positions, given to PyG's ``NeighborLoader`` here, so
  the global batch is ``world_size * batch_size``). Lightning leaves a loader that already has a
  ``DistributedSampler`` alone; the one it would inject instead always shuffles training seeds,
  which would ignore ``shuffle: false``. The sampler pads the shares to equal length by repeating
  a few seeds, which the model drops again before scoring (``NodeClassifier._log_metric``);
* full batch: Lightning's sampler pads the one-graph loader to one item per rank, i.e. every rank
  trains on the whole graph (identical gradients, so the run equals a 1-process run).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, DistributedSampler
from torch_geometric.data import Data, HeteroData

from foundation.errors import InputError
from graphkd.graph_info import GraphInfo


class DatasetNotFoundError(InputError, FileNotFoundError):
    """A dataset folder is missing or incomplete; the message says which files to put where."""


def preparation_lock(path: str | Path) -> FileLock:
    """An exclusive lock on ``<path>.lock`` (beside a dataset folder) held while its files are written.

    Processes started together (``torchrun``, ``srun``, several nodes on one shared file system)
    each load the dataset before any ``Trainer`` barrier exists (``main.py`` links the dataset's
    facts into the model first); the lock makes the first one download/generate/process the
    files and the others wait and read them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.parent / f".{path.name}.lock"))


class NodeDataModule(L.LightningDataModule):
    """Serves one graph with ``train/val/test`` masks on the classified node type.

    Subclasses implement :meth:`load`, which returns the graph (``Data`` or
    ``HeteroData``; for hetero graphs the target type carries ``x``, ``y`` and
    the masks) plus its facts. The facts are read by ``main.py`` and linked into
    the model (``num_features``, ``num_classes``, ``graph_info``), so the graph is
    loaded on first access, in the process that asks.

    Args:
        batch_size: ``None`` trains full-batch (small graphs); an int trains on
            ``NeighborLoader`` mini-batches of that many seed nodes per process (large
            graphs; needs ``pyg-lib`` or ``torch-sparse``).
        num_neighbors: neighbours sampled per layer (per relation for hetero graphs).
        num_workers: DataLoader workers for mini-batches.
        shuffle: reshuffle the training seeds every epoch (mini-batches); off, an N-process
            run sees the same global batches as a 1-process run with N times the batch size.
    """

    def __init__(self, batch_size: int | None = None, num_neighbors: list[int] | None = None, num_workers: int = 0,
                 shuffle: bool = True) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_neighbors = num_neighbors or [15, 10]
        self.num_workers = num_workers
        self.shuffle = shuffle
        self._graph: Data | HeteroData | None = None
        self._info: GraphInfo | None = None

    def load(self) -> tuple[Data | HeteroData, GraphInfo]:
        """Return the graph and its facts."""
        raise NotImplementedError

    def _ensure_loaded(self) -> None:
        if self._graph is None:
            self._graph, self._info = self.load()

    @property
    def graph(self) -> Data | HeteroData:
        self._ensure_loaded()
        return self._graph

    @property
    def graph_info(self) -> GraphInfo:
        """The facts the model is built from (linked by ``main.py``)."""
        self._ensure_loaded()
        return self._info

    @property
    def target_store(self) -> Any:
        """The node store that is classified (the graph itself when homogeneous)."""
        hetero = self.graph_info.hetero
        return self.graph[hetero.target] if hetero else self.graph

    @property
    def num_features(self) -> int:
        return int(self.target_store.x.size(-1))

    @property
    def num_classes(self) -> int:
        return self.graph_info.num_classes

    def prepare_data(self) -> None:
        """Download/generate and process the dataset's files; Lightning runs this on one process per node first.

        The graph is kept: ``setup`` reuses it here and loads it in every other process.
        """
        self._ensure_loaded()

    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def _rank_share(self, num_seeds: int, shuffle: bool) -> DistributedSampler | None:
        """This process's share of ``num_seeds`` seed positions under a distributed strategy, else None.

        Every rank shuffles with the same seed (``seed_everything``'s, 0 without it) and Lightning
        advances the epoch, so the shares stay disjoint and change every epoch.
        """
        sharding = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        if not sharding:
            return None
        return DistributedSampler(range(num_seeds), shuffle=shuffle, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
                                  **sharding)

    def _loader(self, split: str, shuffle: bool) -> Any:
        if self.batch_size is None:
            return DataLoader([self.graph], batch_size=None, collate_fn=lambda graph: graph)
        from torch_geometric.loader import NeighborLoader  # needs pyg-lib or torch-sparse

        hetero = self.graph_info.hetero
        seeds = torch.nonzero(getattr(self.target_store, f"{split}_mask")).view(-1)
        share = self._rank_share(seeds.numel(), shuffle)
        try:
            return NeighborLoader(
                self.graph,
                num_neighbors=self.num_neighbors,
                input_nodes=(hetero.target, seeds) if hetero else seeds,
                batch_size=self.batch_size,
                shuffle=shuffle and share is None,
                sampler=share,
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
        return self._loader("train", shuffle=self.shuffle)

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
