"""One batch as a node classifier sees it: the classified nodes, their labels, splits and global ids.

A batch is the full graph (every node, split masks on the classified store) or a ``NeighborLoader``
subgraph (its ``batch_size`` seed nodes first, all from the split being iterated, with their global
ids in ``n_id``), of a homogeneous ``Data`` or a heterogeneous ``HeteroData``. :meth:`NodeBatch.of`
resolves which, once per step, so the training code asks the view instead of the batch's layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data, HeteroData

from graphkd.graph_info import GraphInfo
from graphkd.outputs import GNNOutput


@dataclass(frozen=True)
class NodeBatch:
    """A batch and the facts about it that every step needs.

    Attributes:
        graph: the batch itself (``Data`` or ``HeteroData``).
        info: the dataset's facts.
        store: the classified node store (the graph itself when homogeneous); holds ``x``, ``y``, masks.
        seed_count: seed rows of a sampled batch (they come first); None for the full graph.
    """

    graph: Data | HeteroData
    info: GraphInfo
    store: Any
    seed_count: int | None

    @classmethod
    def of(cls, graph: Data | HeteroData, info: GraphInfo) -> "NodeBatch":
        """Resolve the classified store and whether ``graph`` is a sampled batch (it then has ``batch_size``)."""
        store = graph[info.hetero.target] if info.hetero else graph
        seeds = getattr(store, "batch_size", None)
        return cls(graph, info, store, None if seeds is None else int(seeds))

    @property
    def sampled(self) -> bool:
        """Whether this is a ``NeighborLoader`` subgraph rather than the full graph."""
        return self.seed_count is not None

    @property
    def labels(self) -> Tensor:
        """``(N,)`` class ids or ``(N, tasks)`` binary labels of every classified row."""
        return self.store.y

    @property
    def device(self) -> torch.device:
        return self.store.x.device

    def split_rows(self, split: str) -> Tensor:
        """``(N,)`` bool mask of the rows that belong to ``split``: a sampled batch's seeds, else the split mask."""
        if self.sampled:
            rows = torch.zeros(self.store.num_nodes, dtype=torch.bool, device=self.device)
            rows[: self.seed_count] = True
            return rows
        return self.store[f"{split}_mask"]

    def node_ids(self, rows: Tensor) -> Tensor:
        """Global ids of the classified nodes selected by the bool mask ``rows``."""
        if self.sampled:
            return self.store.n_id[rows]
        return torch.nonzero(rows).view(-1)

    def seed_rows(self) -> slice:
        """The rows a prediction is made for: a sampled batch's seeds, else every row."""
        return slice(None, self.seed_count)

    def seed_node_ids(self) -> Tensor:
        """``(S,)`` global ids of the :meth:`seed_rows`."""
        if self.sampled:
            return self.store.n_id[: self.seed_count]
        return torch.arange(self.store.num_nodes, device=self.device)

    def target_edges(self) -> Tensor:
        """``(2, E)`` edges between classified rows: all edges, or the target-to-target relations of a hetero graph."""
        if not self.info.hetero:
            return self.graph.edge_index
        target = self.info.hetero.target
        edges = [self.graph[e].edge_index for e in self.graph.edge_types if e[0] == target and e[2] == target]
        return torch.cat(edges, dim=1) if edges else torch.empty(2, 0, dtype=torch.long, device=self.device)

    def run(self, model: nn.Module) -> GNNOutput:
        """Call a homogeneous GNN, or the R-GCN (with the embedding rows of this batch's nodes), on the batch."""
        if not self.info.hetero:
            return model(self.graph.x, self.graph.edge_index)
        graph = self.graph
        node_ids = {t: graph[t].n_id for t in graph.node_types} if self.sampled else None
        num_nodes = {t: graph[t].num_nodes for t in graph.node_types}
        return model(graph.x_dict, graph.edge_index_dict, node_ids=node_ids, num_nodes=num_nodes)
