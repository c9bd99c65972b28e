"""One batch of a generator's own samples, named by a seed: what the data side hands the encoder's training step.

The generator lives, frozen, with the model (on the accelerator); the data side only decides which samples form a
batch. :class:`LatentSeedBatch` is that decision, small enough to pass through a DataLoader, and the same latents
on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LatentSeedBatch:
    """Which generator samples form one batch: ``batch_size`` latents drawn from ``seed``, truncated by ``truncation``."""

    seed: int
    batch_size: int
    truncation: float

    def latents(self, style_dim: int) -> torch.Tensor:
        """The batch's z, (batch_size, style_dim) on the CPU, the same on every machine."""
        return torch.randn(self.batch_size, style_dim, generator=torch.Generator().manual_seed(self.seed))
