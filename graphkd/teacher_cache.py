"""A frozen teacher's outputs computed once and reused while nothing they depend on has changed.

A teacher in eval mode with fixed weights gives the same :class:`GNNOutput` for the same graph at every
full-batch step; recomputing it is pure cost. :class:`FrozenTeacherCache` keeps the last output with a
fingerprint of everything it was computed from (the graph's tensors and the teacher's parameters and
buffers: storage address, shape, strides, dtype, device and in-place version counter, plus the teacher's
mode) and returns it while the fingerprint matches. It holds the fingerprinted tensors, so their memory
cannot be freed and reused by another graph at the same address; an in-place write to the graph, a
``load_state_dict`` into the teacher or a switch to train mode bumps a version or the mode and so
recomputes. The reused output is bitwise the recomputed one (same inputs, same deterministic kernels),
and an eval-mode teacher draws no random numbers, so training with the cache equals training without it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch_geometric.data import Data, HeteroData

from graphkd.outputs import GNNOutput

Fingerprint = tuple[tuple[object, ...], ...]


def fingerprint(tensors: Iterable[Tensor]) -> Fingerprint:
    """What identifies each tensor's current contents without reading them: address, layout, version."""
    return tuple((t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device, t._version) for t in tensors)


def graph_tensors(graph: Data | HeteroData) -> list[Tensor]:
    """Every tensor of a PyG ``Data``/``HeteroData`` (features, edges, masks, ids), in a fixed order; a sparse
    CSR tensor (bag-of-words features) by its three dense parts, which have storage to fingerprint."""
    tensors = [value for store in graph.stores for _, value in sorted(store.items()) if isinstance(value, Tensor)]
    return [part for tensor in tensors for part in
            ((tensor.crow_indices(), tensor.col_indices(), tensor.values()) if tensor.layout == torch.sparse_csr
             else (tensor,))]


class FrozenTeacherCache:
    """The last output of a frozen teacher on a graph, reused while graph, weights and mode are unchanged."""

    def __init__(self) -> None:
        self._held: list[Tensor] = []
        self._key: tuple[bool, Fingerprint] | None = None
        self._output: GNNOutput | None = None
        self._output_versions: Fingerprint = ()
        self.computed = 0
        """How many times the teacher actually ran (for tests and benchmarks)."""

    def clear(self) -> None:
        self._held, self._key, self._output, self._output_versions = [], None, None, ()

    def __call__(self, teacher: nn.Module, graph: Data | HeteroData, compute: Callable[[], GNNOutput]) -> GNNOutput:
        """``compute()`` (the teacher's output on ``graph``), or the cached one if nothing has changed.

        The returned :class:`GNNOutput` is a fresh object with a fresh ``hidden`` list over the cached
        tensors; a caller that writes into those tensors in place is caught (their versions change) and
        the next call recomputes.
        """
        held = [*graph_tensors(graph), *teacher.parameters(), *teacher.buffers()]
        key = (teacher.training, fingerprint(held))
        cached = self._output
        if cached is None or key != self._key or fingerprint(cached.layers) != self._output_versions:
            cached = compute()
            self.computed += 1
            self._held, self._key, self._output = held, key, cached
            self._output_versions = fingerprint(cached.layers)
        return GNNOutput(cached.logits, list(cached.hidden))
