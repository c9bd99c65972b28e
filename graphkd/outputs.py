"""The one output type every GNN in :mod:`graphkd.models` returns."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class GNNOutput:
    """Logits plus every intermediate layer's output, for the same rows.

    Attributes:
        logits: ``(N, C)`` output of the last layer (no softmax).
        hidden: one ``(N, d_l)`` tensor per layer *before* the last, in order,
            taken after the layer's activation and before dropout. A 2-layer GNN
            has one entry, an L-layer GNN has ``L - 1``.
    """

    logits: Tensor
    hidden: list[Tensor]

    def rows(self, index: Tensor) -> GNNOutput:
        """The same output restricted to ``index`` (bool mask or row ids)."""
        return GNNOutput(self.logits[index], [h[index] for h in self.hidden])

    @property
    def layers(self) -> list[Tensor]:
        """Every layer's output, the logits last: ``hidden + [logits]``."""
        return [*self.hidden, self.logits]
