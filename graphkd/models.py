"""GNN families of any depth and width that return every layer's output.

Each homogeneous architecture only says how one layer is built (as PyG's
``basic_gnn.py`` does); :class:`GNN` owns the stacking, activation, dropout
and the collection of hidden outputs that distillation needs. :class:`RGCN` is
the heterogeneous model used for ``ogbn-mag`` (one weight per relation and one
root weight per node type, mean aggregation: the R-GCN of the OGB and G-CRD
MAG baselines).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv
from torch_geometric.utils import scatter

from graphkd.feature_dropout import feature_dropout
from graphkd.gcnii import GCNII
from graphkd.graph_info import EdgeType, HeteroSchema
from graphkd.outputs import GNNOutput


class GNN(nn.Module):
    """A stack of ``num_layers`` message-passing layers; subclasses build one layer.

    Args:
        in_channels: input feature width.
        hidden_channels: width of every hidden layer (per head for GAT).
        out_channels: number of classes (or tasks).
        num_layers: number of layers, at least 1.
        dropout: dropout probability applied to each layer's input.
        norm: add BatchNorm after each hidden layer (helps deep teachers).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int,
        dropout: float = 0.5,
        norm: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        self.dropout = dropout
        widths = [in_channels, *[self.hidden_width(hidden_channels)] * (num_layers - 1), out_channels]
        self.convs = nn.ModuleList(
            self.build_layer(widths[i], hidden_channels if i < num_layers - 1 else out_channels, i == num_layers - 1)
            for i in range(num_layers)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(w) if norm else nn.Identity() for w in widths[1:-1]
        )
        self.layer_dims = widths[1:]

    def hidden_width(self, hidden_channels: int) -> int:
        """Width of a hidden layer's output (GAT concatenates its heads)."""
        return hidden_channels

    def build_layer(self, in_channels: int, out_channels: int, last: bool) -> nn.Module:
        raise NotImplementedError

    def apply_layer(self, layer: nn.Module, x: Tensor, edge_index: Tensor) -> Tensor:
        return layer(x, edge_index)

    def forward(self, x: Tensor, edge_index: Tensor) -> GNNOutput:
        """``x (N, in)``, ``edge_index (2, E)`` -> logits ``(N, out)`` and hidden outputs."""
        hidden: list[Tensor] = []
        for i, layer in enumerate(self.convs):
            x = feature_dropout(x, self.dropout, self.training)
            x = self.apply_layer(layer, x, edge_index)
            if i < self.num_layers - 1:
                x = F.relu(self.norms[i](x))
                hidden.append(x)
        return GNNOutput(logits=x, hidden=hidden)


class GCN(GNN):
    """Kipf & Welling graph convolution with symmetric normalisation and self-loops."""

    def build_layer(self, in_channels: int, out_channels: int, last: bool) -> nn.Module:
        return GCNConv(in_channels, out_channels, cached=False)


class GraphSAGE(GNN):
    """GraphSAGE with mean aggregation and a separate root weight."""

    def build_layer(self, in_channels: int, out_channels: int, last: bool) -> nn.Module:
        return SAGEConv(in_channels, out_channels)


class GAT(GNN):
    """Graph attention: hidden layers concatenate ``heads`` heads, the last averages one head."""

    def __init__(self, *args: Any, heads: int = 4, **kwargs: Any) -> None:
        self.heads = heads
        super().__init__(*args, **kwargs)

    def hidden_width(self, hidden_channels: int) -> int:
        return hidden_channels * self.heads

    def build_layer(self, in_channels: int, out_channels: int, last: bool) -> nn.Module:
        return GATConv(in_channels, out_channels, heads=1 if last else self.heads, concat=not last)


class MLP(GNN):
    """The same stack with linear layers: ignores edges (the graph-free reference)."""

    def build_layer(self, in_channels: int, out_channels: int, last: bool) -> nn.Module:
        return nn.Linear(in_channels, out_channels)

    def apply_layer(self, layer: nn.Module, x: Tensor, edge_index: Tensor) -> Tensor:
        return layer(x)


def relation_key(edge_type: EdgeType) -> str:
    """``('author', 'writes', 'paper')`` -> ``'author__writes__paper'`` (a valid ModuleDict key)."""
    return "__".join(edge_type)


class RelationalConv(nn.Module):
    """One R-GCN layer: ``h'_v = W_root[type(v)] h_v + sum_r mean_{u in N_r(v)} W_r h_u``."""

    def __init__(self, in_channels: int, out_channels: int, node_types: list[str], edge_types: list[EdgeType]) -> None:
        super().__init__()
        self.root = nn.ModuleDict({t: nn.Linear(in_channels, out_channels) for t in node_types})
        self.relation = nn.ModuleDict(
            {relation_key(e): nn.Linear(in_channels, out_channels, bias=False) for e in edge_types}
        )

    def forward(self, x_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor]) -> dict[str, Tensor]:
        out = {t: self.root[t](x) for t, x in x_dict.items()}
        for edge_type, edge_index in edge_index_dict.items():
            src, _, dst = edge_type
            messages = self.relation[relation_key(edge_type)](x_dict[src])[edge_index[0]]
            out[dst] = out[dst] + scatter(messages, edge_index[1], dim=0, dim_size=out[dst].size(0), reduce="mean")
        return out


class RGCN(nn.Module):
    """Heterogeneous R-GCN returning the target node type's logits and hidden outputs.

    Node types without features get a learned embedding table of width
    ``in_channels``; following the G-CRD MAG setting these embeddings are *not*
    counted as model parameters by :func:`count_parameters` (they are a lookup
    table of the data, the same for teacher and student widths).

    Args:
        in_channels: feature width of featured node types (and of the embeddings).
        hidden_channels: hidden width.
        out_channels: number of classes of the target type.
        num_layers: number of relational layers.
        node_types: all node types.
        edge_types: all ``(src, relation, dst)`` types the layers use.
        num_nodes: node count of every featureless type (embedding rows).
        target: the node type that is classified.
        dropout: dropout on each layer's input.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int,
        node_types: list[str],
        edge_types: list[EdgeType],
        num_nodes: dict[str, int],
        target: str,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.target = target
        self.edge_types: list[EdgeType] = [(e[0], e[1], e[2]) for e in edge_types]
        self.dropout = dropout
        self.num_layers = num_layers
        self.embeddings = nn.ModuleDict({t: nn.Embedding(n, in_channels) for t, n in num_nodes.items()})
        widths = [in_channels, *[hidden_channels] * (num_layers - 1), out_channels]
        self.convs = nn.ModuleList(
            RelationalConv(widths[i], widths[i + 1], node_types, self.edge_types) for i in range(num_layers)
        )
        self.layer_dims = widths[1:]

    def freeze_unreachable(self) -> None:
        """Freeze the parameters that cannot reach the target type's logits.

        Every layer updates every node type, but only the target's last output is used: the last
        layer's other types, and whatever feeds only them, never get a gradient. Training is the same
        with them frozen, and DDP then needs no ``find_unused_parameters`` (which would otherwise be
        required, at the cost of an extra autograd traversal per step).
        """
        needed = {self.target}  # types whose output of the current layer reaches the logits
        used: set[str] = set()
        for layer in reversed(range(len(self.convs))):
            into_needed = [e for e in self.edge_types if e[2] in needed]
            used |= {f"convs.{layer}.root.{t}." for t in needed}
            used |= {f"convs.{layer}.relation.{relation_key(e)}." for e in into_needed}
            needed = needed | {e[0] for e in into_needed}
        used |= {f"embeddings.{t}." for t in needed}
        for name, parameter in self.named_parameters():
            if not any(name.startswith(prefix) for prefix in used):
                parameter.requires_grad_(False)

    def input_features(
        self, x_dict: dict[str, Tensor], node_ids: dict[str, Tensor] | None, num_nodes: dict[str, int]
    ) -> dict[str, Tensor]:
        """Add embedding rows for featureless types (``node_ids`` are global ids in mini-batches)."""
        features = dict(x_dict)
        for node_type, table in self.embeddings.items():
            ids = node_ids[node_type] if node_ids is not None else torch.arange(num_nodes[node_type], device=table.weight.device)
            features[node_type] = table(ids)
        return features

    def forward(
        self,
        x_dict: dict[str, Tensor],
        edge_index_dict: dict[EdgeType, Tensor],
        node_ids: dict[str, Tensor] | None = None,
        num_nodes: dict[str, int] | None = None,
    ) -> GNNOutput:
        """Return logits/hidden of ``target`` rows; ``node_ids`` or ``num_nodes`` locate embedding rows."""
        x_dict = self.input_features(x_dict, node_ids, num_nodes or {})
        hidden: list[Tensor] = []
        for i, conv in enumerate(self.convs):
            x_dict = {t: F.dropout(x, p=self.dropout, training=self.training) for t, x in x_dict.items()}
            x_dict = conv(x_dict, edge_index_dict)
            if i < self.num_layers - 1:
                x_dict = {t: F.relu(x) for t, x in x_dict.items()}
                hidden.append(x_dict[self.target])
        return GNNOutput(logits=x_dict[self.target], hidden=hidden)


ARCHITECTURES: dict[str, type[nn.Module]] = {"gcn": GCN, "sage": GraphSAGE, "gat": GAT, "mlp": MLP, "gcnii": GCNII}


def build_gnn(
    arch: str,
    in_channels: int,
    hidden_channels: int,
    out_channels: int,
    num_layers: int,
    dropout: float = 0.5,
    heads: int = 4,
    norm: bool = False,
    hetero: HeteroSchema | None = None,
    arch_options: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a model by name: ``gcn``, ``sage``, ``gat``, ``mlp``, ``gcnii`` or ``rgcn``.

    ``hetero`` (the graph's schema) is required for ``rgcn`` and refused by the others.
    ``arch_options`` are further keyword arguments of the architecture (e.g. GCNII's ``alpha``).
    Options out of range are refused here, before any data is touched.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}: it is the probability of zeroing a feature")
    if num_layers < 1 or hidden_channels < 1:
        raise ValueError(f"num_layers and hidden_channels must be at least 1, got {num_layers} and {hidden_channels}")
    if arch == "rgcn":
        if norm:
            raise ValueError("arch 'rgcn' has no norm option; set norm: false")
        if hetero is None:
            raise ValueError("arch 'rgcn' needs a heterogeneous graph; use a hetero datamodule (e.g. ogbn-mag with hetero: true)")
        return RGCN(
            in_channels, hidden_channels, out_channels, num_layers,
            node_types=list(hetero.node_types), edge_types=list(hetero.edge_types),
            num_nodes=hetero.featureless_num_nodes, target=hetero.target, dropout=dropout,
        )
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted([*ARCHITECTURES, 'rgcn'])}")
    if hetero is not None:
        raise ValueError(f"arch {arch!r} is homogeneous but the data is heterogeneous; use arch 'rgcn' or hetero: false")
    kwargs: dict[str, Any] = {"heads": heads} if arch == "gat" else {}
    return ARCHITECTURES[arch](in_channels, hidden_channels, out_channels, num_layers, dropout=dropout, norm=norm, **kwargs,
                               **(arch_options or {}))


def count_parameters(model: nn.Module) -> int:
    """Model parameters (frozen or not), excluding embedding tables of featureless node types."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embeddings."))


def widest_within(budget: int, build: Callable[[int], nn.Module]) -> int:
    """The largest hidden width ``h`` whose ``build(h)`` has at most ``budget`` parameters (:func:`count_parameters`).

    Used to size a student by compression ratio (``budget = teacher parameters / ratio``). The count grows with
    the width: doubling brackets the answer, then a binary search finds it, so no model built on the way has
    more than about twice ``budget`` parameters (a search over a fixed range would build huge ones).

    Raises:
        ValueError: even width 1 exceeds ``budget``.
    """
    if count_parameters(build(1)) > budget:
        raise ValueError(f"no width fits in {budget:,} parameters: width 1 already has {count_parameters(build(1)):,}; "
                         "lower the compression ratio")
    low, high = 1, 2
    while count_parameters(build(high)) <= budget:
        low, high = high, 2 * high
    high -= 1
    while low < high:
        middle = (low + high + 1) // 2
        if count_parameters(build(middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    return low
