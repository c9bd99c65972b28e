"""Any single-graph ``torch_geometric.datasets`` class from local files (Amazon, Coauthor, WikiCS, Planetoid ...).

The dataset is named by its class path and built with its own init arguments, e.g.::

    data:
      class_path: datamodules.pyg_dataset.PyGDataModule
      init_args: {dataset: torch_geometric.datasets.Amazon, dataset_args: {name: Computers}, root: data/pyg}

``root`` is handed to the class unchanged, so the files sit where that class looks for them
(``Amazon``/``Coauthor``/``Planetoid``: ``root/<name>/raw/``; ``WikiCS``: ``root/raw/``). Nothing is
downloaded: missing raw files end in :class:`DatasetNotFoundError` naming them and where to get them.

Split: the dataset's public split when it has one (``train_mask``/``val_mask``/``test_mask``; a
dataset with several public splits, such as WikiCS's 20, gives column ``public_split``); otherwise
the protocol of Shchur et al. 2018 ("Pitfalls of GNN evaluation"): per class ``train_per_class``
(20) training and ``val_per_class`` (30) validation nodes drawn at random, every other node a test
node. The draw depends only on ``split_seed`` (a private generator), so every method run with the
same seed sees the same split.
"""
from __future__ import annotations

import importlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data, Dataset
from torch_geometric.transforms import NormalizeFeatures

from datamodules.graph import DatasetNotFoundError, NodeDataModule, preparation_lock
from foundation.errors import InputError
from graphkd.graph_info import GraphInfo
from graphkd.sparse_csr import csr_beta_warning_silenced

SPLITS = ("train", "val", "test")
SPARSE_DENSITY = 0.05
"""Largest share of non-zero features stored as CSR: Amazon's 35% dense features train 20x slower as CSR (whose
backward transposes the matrix every step) than dense."""


class DatasetArgumentError(InputError, ValueError):
    """The dataset class path or its init arguments are not usable."""


def dataset_class(path: str) -> type[Dataset]:
    """``torch_geometric.datasets.Amazon`` (or just ``Amazon``) -> the class."""
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name or "torch_geometric.datasets"), name)
    except (ImportError, AttributeError) as error:
        raise DatasetArgumentError(f"no dataset class {path!r}: give a class path such as "
                                   "torch_geometric.datasets.Amazon") from error
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise DatasetArgumentError(f"{path!r} is not a torch_geometric Dataset class")
    return cls


def offline(cls: type[Dataset]) -> type[Dataset]:
    """``cls`` with ``download`` replaced by a :class:`DatasetNotFoundError` naming the missing raw files.

    PyG calls ``download`` only when a raw file is absent, so complete folders load as usual.
    """

    def refuse(self: Dataset) -> None:
        missing = [os.path.basename(path) for path in self.raw_paths if not os.path.isfile(path)]
        source = f" (from {cls.url})" if isinstance(getattr(cls, "url", None), str) else ""
        raise DatasetNotFoundError(
            f"{cls.__name__} raw files missing in {self.raw_dir}: {', '.join(missing)}. Put the files that "
            f"torch_geometric.datasets.{cls.__name__} downloads{source} into {self.raw_dir}/; no download is attempted"
        )

    return type(cls.__name__, (cls,), {"download": refuse})


def per_class_split(y: Tensor, train_per_class: int, val_per_class: int, seed: int) -> dict[str, Tensor]:
    """Shchur et al.'s split: per class ``train_per_class`` + ``val_per_class`` random nodes, the rest test.

    ``y (N,)`` -> ``{train,val,test}_mask`` bool ``(N,)``, disjoint and covering every node; the same
    ``seed`` always gives the same masks.

    Raises:
        DatasetArgumentError: a class has too few nodes to leave any for testing.
    """
    generator = torch.Generator().manual_seed(seed)
    masks = {f"{split}_mask": torch.zeros(y.numel(), dtype=torch.bool) for split in SPLITS}
    masks["test_mask"][:] = True
    for label in torch.unique(y).tolist():
        nodes = torch.nonzero(y == label).view(-1)
        if nodes.numel() <= train_per_class + val_per_class:
            raise DatasetArgumentError(
                f"class {label} has {nodes.numel()} nodes, too few for {train_per_class} train + {val_per_class} "
                "validation nodes and a test rest; lower train_per_class/val_per_class"
            )
        nodes = nodes[torch.randperm(nodes.numel(), generator=generator)]
        masks["train_mask"][nodes[:train_per_class]] = True
        masks["val_mask"][nodes[train_per_class: train_per_class + val_per_class]] = True
    masks["test_mask"] &= ~(masks["train_mask"] | masks["val_mask"])
    return masks


def public_split(data: Data, column: int) -> dict[str, Tensor] | None:
    """The dataset's own ``{train,val,test}_mask`` (column ``column`` of 2-D masks), or None without one."""
    if not all(isinstance(data.get(f"{split}_mask"), Tensor) for split in SPLITS):
        return None
    masks = {}
    for split in SPLITS:
        mask = data[f"{split}_mask"]
        if mask.dim() == 2:
            if not 0 <= column < mask.size(1):
                raise DatasetArgumentError(f"public_split={column} but the dataset has {mask.size(1)} public splits")
            mask = mask[:, column]
        masks[f"{split}_mask"] = mask.bool()
    return masks


class PyGDataModule(NodeDataModule):
    """One node-classification graph of a ``torch_geometric.datasets`` class, full batch or mini-batches.

    Args:
        dataset: class path (``torch_geometric.datasets.Amazon``; a bare name is looked up there).
        dataset_args: the class's init arguments besides ``root`` (``{name: Computers}``).
        root: the folder handed to the class as ``root`` (must be writable: PyG adds ``processed/``).
        split_seed: seed of the random per-class split (datasets without a public split).
        train_per_class: training nodes per class of the random split.
        val_per_class: validation nodes per class of the random split.
        public_split: which public split, for datasets that ship several as mask columns.
        normalize_features: divide each node's features by their sum (GCNII's preprocessing).
        sparse_features: keep the features as a sparse CSR matrix when at most ``SPARSE_DENSITY`` of them are
            non-zero (bag-of-words graphs such as Cora and CiteSeer): the first layer's product and the feature
            dropout then touch only the stored entries, several times faster on a CPU, with the same result.
            Full batch only (``batch_size: null``).
        **kwargs: ``batch_size``, ``num_neighbors``, ``num_workers`` and ``shuffle`` of
            :class:`NodeDataModule` (full batch by default).
    """

    def __init__(
        self,
        dataset: str = "torch_geometric.datasets.Amazon",
        dataset_args: dict[str, Any] | None = None,
        root: str = "data/pyg",
        split_seed: int = 0,
        train_per_class: int = 20,
        val_per_class: int = 30,
        public_split: int = 0,
        normalize_features: bool = False,
        sparse_features: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sparse_features and self.batch_size is not None:
            raise DatasetArgumentError("sparse_features needs full-batch training (batch_size: null): sampled "
                                       "batches index feature rows, which a CSR matrix does not serve")
        self.sparse_features = sparse_features
        self.dataset_class = dataset_class(dataset)
        self.dataset_args = dict(dataset_args or {})
        if "root" in self.dataset_args:
            raise DatasetArgumentError("give the dataset folder as root, not inside dataset_args")
        self.root = root
        self.split_seed = split_seed
        self.train_per_class = train_per_class
        self.val_per_class = val_per_class
        self.public_split = public_split
        self.normalize_features = normalize_features
        self.name = str(self.dataset_args.get("name", self.dataset_class.__name__))

    def open_dataset(self) -> Dataset:
        """The dataset from ``root``, processed on first use; never downloads."""
        cls = self.dataset_class
        try:
            with preparation_lock(Path(self.root) / self.name):
                return offline(cls)(root=self.root, **self.dataset_args)
        except DatasetNotFoundError:
            raise
        except (TypeError, AssertionError) as error:  # PyG checks names with assert
            reason = str(error) or "an assertion failed, e.g. an unknown name"
            raise DatasetArgumentError(f"{cls.__name__} refused dataset_args {self.dataset_args}: {reason}; see the "
                                       f"documentation of torch_geometric.datasets.{cls.__name__}") from error
        except (EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as error:
            raise DatasetNotFoundError(
                f"{cls.__name__} files under {self.root} are incomplete or corrupt ({type(error).__name__}: {error}); "
                f"replace the raw files and delete the processed/ folder beside them"
            ) from error

    def load(self) -> tuple[Data, GraphInfo]:
        dataset = self.open_dataset()
        if len(dataset) != 1:
            raise DatasetArgumentError(f"{self.name} holds {len(dataset)} graphs; this module needs a single graph")
        data = dataset[0]
        if data.y is None or data.y.dim() != 1:
            raise DatasetArgumentError(f"{self.name} has no per-node class labels (y of shape (N,))")
        masks = public_split(data, self.public_split) or per_class_split(
            data.y, self.train_per_class, self.val_per_class, self.split_seed)
        x = NormalizeFeatures()(Data(x=data.x)).x if self.normalize_features else data.x
        if self.sparse_features and float((x != 0).float().mean()) <= SPARSE_DENSITY:
            with csr_beta_warning_silenced():
                x = x.to_sparse_csr()
        info = GraphInfo(dataset=self.name, task="multiclass", num_classes=int(data.y.max()) + 1)
        return Data(x=x, edge_index=data.edge_index, y=data.y, **masks), info
