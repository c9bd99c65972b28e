"""GCNII (Chen et al., ICML 2020): deep graph convolution with initial residual and identity mapping.

Layer ``l`` (1-based) of ``L`` computes, with the symmetrically normalised adjacency with
self-loops ``P = D^-1/2 (A + I) D^-1/2`` and ``x_0`` the input projection:

    h_l = relu( ((1 - alpha) P h_{l-1} + alpha x_0) ((1 - beta_l) I + beta_l W_l) ),
    beta_l = log(lambda / l + 1)

which is PyG's ``GCN2Conv(channels, alpha, theta=lambda, layer=l)``. The model is the one of the
GCNII paper and PyG's ``examples/gcn2_cora.py``: dropout -> ``Linear(in, hidden)`` -> relu (``x_0``),
then ``L`` GCNII layers (each preceded by dropout), then dropout -> ``Linear(hidden, classes)``.

Depth is the number of GCNII layers (the paper's "64 layers" for Cora), so a GCNII model exposes
``L`` hidden outputs, one per layer, and the logits (``GNNOutput.hidden`` has ``L`` entries here,
not ``L - 1``: the input projection is ``x_0``, not a propagation layer, and is not distilled).

The paper decays the GCNII layers' weights more strongly than the two dense layers (Cora and
CiteSeer: 0.01 vs 5e-4); :meth:`GCNII.parameter_groups` says so to the optimizer (see
:func:`graphkd.parameter_groups.optimizer_groups`).

``P`` is built once per forward as a sparse CSR matrix and shared by all layers (PyG's example
normalises once as a transform; ``GCN2Conv`` normalising by itself would redo it in each of 64
layers). Each layer's propagation is then one sparse-dense product: on Amazon Computers (491,722
edges, width 64, one CPU thread) a layer's forward + backward takes 0.049 s against 0.349 s for the
scatter over a weighted edge list (7.1x), with outputs equal to 2e-7. The input may also be a sparse
CSR adjacency ``adj_t`` (rows are targets, PyG's convention) instead of an edge list, and the features
sparse CSR (bag-of-words inputs; the first layer is then a sparse product).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCN2Conv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from graphkd.feature_dropout import feature_dropout
from graphkd.outputs import GNNOutput
from graphkd.sparse_csr import csr_beta_warning_silenced


def propagation_matrix(edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> Tensor:
    """``P = D^-1/2 (A + I) D^-1/2`` as a sparse CSR ``(N, N)`` matrix whose row ``i`` aggregates into node ``i``.

    ``edge_index`` is either ``(2, E)`` (source, target) pairs or a sparse CSR ``adj_t`` (rows are targets);
    degrees are counted on targets, as in ``GCNConv``.
    """
    with csr_beta_warning_silenced():
        if edge_index.layout == torch.sparse_csr:
            return gcn_norm(edge_index.to(dtype), None, num_nodes, add_self_loops=True, dtype=dtype)[0]
        (source, target), weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True, dtype=dtype)
        adjacency = torch.sparse_coo_tensor(torch.stack([target, source]), weight, (num_nodes, num_nodes),
                                            check_invariants=False)
        return adjacency.coalesce().to_sparse_csr()


class GCNII(nn.Module):
    """A GCNII of ``num_layers`` layers of width ``hidden_channels`` between two dense layers.

    Args:
        in_channels: input feature width.
        hidden_channels: width of ``x_0`` and of every GCNII layer.
        out_channels: number of classes.
        num_layers: number of GCNII layers ``L`` (>= 1).
        dropout: dropout before the input layer, every GCNII layer and the output layer.
        norm: not supported (GCNII uses no normalisation layers); must be False.
        alpha: initial-residual weight ``alpha``.
        lamda: ``lambda`` of the identity mapping ``beta_l = log(lambda / l + 1)`` (the paper's spelling).
        conv_weight_decay: L2 weight decay of the GCNII layers; ``None`` uses the optimizer's
            default, the same as the dense layers.
        shared_weights: one ``W_l`` for the propagated and the residual part (GCNII); False gives
            the paper's GCNII* variant (two weights per layer).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int,
        dropout: float = 0.6,
        norm: bool = False,
        alpha: float = 0.1,
        lamda: float = 0.5,
        conv_weight_decay: float | None = None,
        shared_weights: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if norm:
            raise ValueError("arch 'gcnii' has no norm option; set norm: false")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if lamda <= 0:
            raise ValueError(f"lamda must be > 0, got {lamda}")
        self.num_layers = num_layers
        self.dropout = dropout
        self.conv_weight_decay = conv_weight_decay
        self.lins = nn.ModuleList([nn.Linear(in_channels, hidden_channels), nn.Linear(hidden_channels, out_channels)])
        self.convs = nn.ModuleList(
            GCN2Conv(hidden_channels, alpha, theta=lamda, layer=layer, shared_weights=shared_weights, normalize=False)
            for layer in range(1, num_layers + 1)
        )
        self.layer_dims = [*[hidden_channels] * num_layers, out_channels]

    def forward(self, x: Tensor, edge_index: Tensor) -> GNNOutput:
        """``x (N, in)`` (dense or CSR), ``edge_index (2, E)`` or CSR ``adj_t (N, N)`` -> logits ``(N, out)``,
        the ``L`` layers' ``(N, hidden)``."""
        propagation = propagation_matrix(edge_index, x.size(0), self.lins[0].weight.dtype)
        x = feature_dropout(x, self.dropout, self.training)
        x = x_0 = self.lins[0](x).relu()
        hidden: list[Tensor] = []
        for conv in self.convs:
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, x_0, propagation).relu()
            hidden.append(x)
        x = F.dropout(x, self.dropout, self.training)
        return GNNOutput(logits=self.lins[1](x), hidden=hidden)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: the GCNII layers with ``conv_weight_decay`` (when set), then the dense layers."""
        convs: dict[str, Any] = {"params": list(self.convs.parameters())}
        if self.conv_weight_decay is not None:
            convs["weight_decay"] = self.conv_weight_decay
        return [convs, {"params": list(self.lins.parameters())}]
