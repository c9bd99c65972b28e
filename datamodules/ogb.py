"""OGB node-property datasets through ``ogb``'s own loader, plus the offline synthetic MAG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ogb.nodeproppred
import pandas as pd
import torch_geometric.transforms as T
from ogb.nodeproppred import PygNodePropPredDataset
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage
from torch_geometric.utils import scatter, to_undirected

from datamodules.graph import DatasetNotFoundError, NodeDataModule, preparation_lock, split_masks
from foundation.checkpoints import allowed_globals
from graphkd.graph_info import GraphInfo, HeteroSchema
from graphkd.synthetic_mag import SyntheticMAGConfig, read_marker, write_synthetic_mag

OGB_DATASETS = ("ogbn-arxiv", "ogbn-products", "ogbn-proteins", "ogbn-mag")
MASTER = pd.read_csv(Path(ogb.nodeproppred.__file__).parent / "master.csv", index_col=0, keep_default_na=False)
# ogb's processed files pickle PyG containers; torch>=2.6 loads with weights_only=True,
# which refuses them unless these classes are allow-listed.
PYG_SAFE_GLOBALS = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]

REQUIRED_RAW = {
    "ogbn-arxiv": ["raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz", "split/time/train.csv.gz"],
    "ogbn-products": ["raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz", "split/sales_ranking/train.csv.gz"],
    "ogbn-proteins": ["raw/edge.csv.gz", "raw/edge-feat.csv.gz", "raw/node-label.csv.gz", "split/species/train.csv.gz"],
    "ogbn-mag": ["raw/num-node-dict.csv.gz", "raw/triplet-type-list.csv.gz", "raw/node-feat/paper/node-feat.csv.gz",
                 "raw/node-label/paper/node-label.csv.gz", "raw/relations/paper___cites___paper/edge.csv.gz",
                 "split/time/paper/train.csv.gz"],
}


def dataset_folder(name: str, root: str | Path) -> Path:
    """Where ``ogb`` keeps ``name`` under ``root`` (``ogbn-mag`` -> ``root/ogbn_mag``)."""
    return Path(root) / name.replace("-", "_")


def check_dataset_folder(name: str, root: str | Path) -> None:
    """Raise :class:`DatasetNotFoundError` naming the missing files, before ``ogb`` would block on ``input()``."""
    if name not in OGB_DATASETS:
        raise ValueError(f"unknown OGB node dataset {name!r}; supported: {', '.join(OGB_DATASETS)}")
    folder = dataset_folder(name, root)
    release = folder / f"RELEASE_v{MASTER[name]['version']}.txt"
    processed = (folder / "processed" / "geometric_data_processed.pt").is_file()
    missing = [f for f in REQUIRED_RAW[name] if not (folder / f).is_file()]
    if processed:
        missing = [f for f in missing if f.startswith("split/")]
    if not release.is_file():
        missing.insert(0, release.name)
    if missing:
        url = MASTER[name]["url"]
        raise DatasetNotFoundError(
            f"{name} is missing or incomplete at {folder}: missing {', '.join(missing)}. "
            f"Download {url}, unzip it and move the extracted '{MASTER[name]['download_name']}' folder to {folder} "
            f"(it must hold raw/, split/ and {release.name}), or set download: true on a machine with internet."
        )


def load_ogb(name: str, root: str | Path, download: bool = False) -> PygNodePropPredDataset:
    """Open an OGB node dataset with ``ogb``'s loader (processing the raw CSVs on first use)."""
    if not download:
        check_dataset_folder(name, root)
    with allowed_globals(PYG_SAFE_GLOBALS):
        return PygNodePropPredDataset(name, root=str(root))


def homogeneous_graph(dataset: PygNodePropPredDataset, name: str) -> Data:
    """One ``Data`` with undirected edges, features, labels and split masks."""
    raw = dataset[0]
    split = dataset.get_idx_split()
    if name == "ogbn-mag":  # the paper-citation subgraph
        x, y = raw.x_dict["paper"], raw.y_dict["paper"]
        edge_index = raw.edge_index_dict[("paper", "cites", "paper")]
        split = {k: v["paper"] for k, v in split.items()}
    else:
        x, y, edge_index = raw.x, raw.y, raw.edge_index
    if name == "ogbn-proteins":  # no node features: mean of incident edge features, as OGB's examples do
        x = scatter(raw.edge_attr, edge_index[1], dim=0, dim_size=raw.num_nodes, reduce="mean")
    y = y.float() if name == "ogbn-proteins" else y.view(-1)
    num_nodes = x.size(0)
    edge_index = to_undirected(edge_index, num_nodes=num_nodes)
    return Data(x=x, edge_index=edge_index, y=y, **split_masks(num_nodes, split))


def hetero_mag(dataset: PygNodePropPredDataset) -> HeteroData:
    """All four ogbn-mag node types; citations made undirected, reverse relations added (7 edge types)."""
    raw = dataset[0]
    split = {k: v["paper"] for k, v in dataset.get_idx_split().items()}
    data = HeteroData()
    for node_type, count in raw.num_nodes_dict.items():
        data[node_type].num_nodes = count
    paper = data["paper"]
    paper.x = raw.x_dict["paper"]
    paper.y = raw.y_dict["paper"].view(-1)
    for key, mask in split_masks(paper.num_nodes, split).items():
        paper[key] = mask
    for edge_type, edge_index in raw.edge_index_dict.items():
        data[edge_type].edge_index = edge_index
    return T.ToUndirected(merge=True)(data)


def hetero_schema(data: HeteroData, target: str) -> HeteroSchema:
    """The schema an R-GCN is built from."""
    return HeteroSchema(
        node_types=tuple(data.node_types),
        edge_types=tuple(data.edge_types),
        featureless_num_nodes={t: int(data[t].num_nodes) for t in data.node_types if "x" not in data[t]},
        target=target,
    )


class OGBNodeDataModule(NodeDataModule):
    """``ogbn-arxiv``, ``ogbn-products``, ``ogbn-proteins`` (ROC-AUC, 112 tasks) or ``ogbn-mag``.

    Args:
        name: OGB dataset name.
        root: folder holding ``ogbn_<name>/`` as the official zip extracts it.
        hetero: for ``ogbn-mag``: all four node types (R-GCN) if true, else the
            homogeneous paper-citation subgraph.
        download: let ``ogb`` download the dataset when it is absent (needs internet).
        **kwargs: ``batch_size``, ``num_neighbors``, ``num_workers`` and ``shuffle`` of :class:`NodeDataModule`.
    """

    def __init__(
        self,
        name: str = "ogbn-arxiv",
        root: str = "data/ogb",
        hetero: bool = True,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if name not in OGB_DATASETS:
            raise ValueError(f"unknown OGB node dataset {name!r}; supported: {', '.join(OGB_DATASETS)}")
        self.name = name
        self.root = root
        self.hetero = hetero and name == "ogbn-mag"
        self.download = download

    def num_classes_of(self, dataset: PygNodePropPredDataset) -> int:
        return int(dataset.num_tasks if dataset.task_type == "binary classification" else dataset.num_classes)

    def prepare_files(self) -> None:
        """Complete the dataset folder before ``ogb`` opens it (an official download is checked by :func:`load_ogb`)."""

    def open_dataset(self) -> PygNodePropPredDataset:
        """The dataset, its files prepared and processed by one process at a time (:func:`preparation_lock`)."""
        with preparation_lock(dataset_folder(self.name, self.root)):
            self.prepare_files()
            return load_ogb(self.name, self.root, self.download)

    def load(self) -> tuple[Data | HeteroData, GraphInfo]:
        dataset = self.open_dataset()
        graph = hetero_mag(dataset) if self.hetero else homogeneous_graph(dataset, self.name)
        info = GraphInfo(
            dataset=self.name,
            task="multilabel" if dataset.task_type == "binary classification" else "multiclass",
            num_classes=self.num_classes_of(dataset),
            hetero=hetero_schema(graph, "paper") if self.hetero else None,
        )
        return graph, info


class SyntheticMAGDataModule(OGBNodeDataModule):
    """The offline default: a generated graph in the ``ogbn-mag`` layout, read by ``ogb``.

    The folder is generated on first use; an existing folder written with another
    configuration is refused (delete it or change ``root``).

    Args:
        synthetic: size and difficulty of the generated graph.
        root: folder that receives ``ogbn_mag/``.
        hetero: all four node types if true, else the paper-citation subgraph.
        **kwargs: ``batch_size``, ``num_neighbors``, ``num_workers`` and ``shuffle`` of :class:`NodeDataModule`.
    """

    def __init__(
        self,
        synthetic: SyntheticMAGConfig = SyntheticMAGConfig(),
        root: str = "data/synthetic_mag",
        hetero: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__("ogbn-mag", root, hetero, False, **kwargs)
        self.synthetic = synthetic

    def prepare_files(self) -> None:
        """Generate the folder on first use; refuse one written with another configuration or a real download."""
        folder = dataset_folder("ogbn-mag", self.root)
        if not folder.exists():
            write_synthetic_mag(self.root, self.synthetic)
        existing = read_marker(folder)
        if existing is None:
            raise ValueError(f"{folder} holds a real ogbn-mag download, not a synthetic graph; use OGBNodeDataModule or another root")
        if existing != self.synthetic:
            raise ValueError(f"{folder} was generated with {existing}, not the requested {self.synthetic}; delete it or change root")

    def num_classes_of(self, dataset: PygNodePropPredDataset) -> int:
        return self.synthetic.num_classes
