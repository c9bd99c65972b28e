"""A generator's own samples as training data: supervision-free encoder training with known W+.

The datamodule does not hold the generator (it lives, frozen, in the LightningModule, on the
accelerator): each batch is a ``facetex.gan.latent_seeds.LatentSeedBatch``, the seed of ``batch_size`` latents z. The
module draws ``z ~ N(0, I)`` from that seed, maps and truncates them (``w = w_avg + psi (mapping(z) -
w_avg)``) and renders ``G(w)``, so every image comes with its true code. Seeds are derived from
``(seed, stream, rank, pass, batch)``: training draws new batches at every pass, validation the same
ones every time, and DDP ranks disjoint ones.
"""
from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from facetex.gan.latent_seeds import LatentSeedBatch

_TRAIN_STREAM, _VAL_STREAM = 0, 1


def _distributed_rank() -> int:
    """Rank of this process; 0 outside ``torch.distributed``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class LatentSeedStream(IterableDataset):
    """``num_batches`` :class:`LatentSeedBatch` per pass (use ``DataLoader(batch_size=None)``)."""

    def __init__(self, num_batches: int, batch_size: int, truncation: float, seed: int, stream: int,
                 fresh_each_pass: bool) -> None:
        self.num_batches, self.batch_size, self.truncation = num_batches, batch_size, truncation
        self.seed, self.stream, self.fresh_each_pass = seed, stream, fresh_each_pass
        self._passes = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[LatentSeedBatch]:
        pass_index = self._passes if self.fresh_each_pass else 0
        self._passes += 1
        entropy = [self.seed, self.stream, _distributed_rank(), pass_index]
        seeds = np.random.SeedSequence(entropy).generate_state(self.num_batches, dtype=np.uint64) >> np.uint64(1)
        for seed in seeds.tolist():
            yield LatentSeedBatch(seed=int(seed), batch_size=self.batch_size, truncation=self.truncation)


class GeneratorSamplesDataModule(L.LightningDataModule):
    """Seeds of generator samples for ``GANEncoderModule`` (it renders them with its frozen generator).

    Args:
        batch_size: samples per batch (per rank).
        train_batches: training batches per epoch (new samples every epoch).
        val_batches: validation batches (the same samples every time).
        truncation: psi of the truncation trick (1 = the full distribution; 0.7 avoids GAN artefacts).
        seed: base seed of all batches.
    """

    def __init__(self, batch_size: int = 8, train_batches: int = 500, val_batches: int = 4, truncation: float = 0.7,
                 seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1 or train_batches < 1 or val_batches < 1:
            raise ValueError(f"batch_size, train_batches and val_batches must be >= 1, got {batch_size}, "
                             f"{train_batches}, {val_batches}")
        if not 0.0 <= truncation <= 1.0:
            raise ValueError(f"truncation must be in [0, 1], got {truncation}")
        self.save_hyperparameters()
        self.train_stream = LatentSeedStream(train_batches, batch_size, truncation, seed, _TRAIN_STREAM, True)
        self.val_stream = LatentSeedStream(val_batches, batch_size, truncation, seed, _VAL_STREAM, False)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_stream, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_stream, batch_size=None)
