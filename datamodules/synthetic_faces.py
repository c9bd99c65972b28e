"""Synthetic face renders of a morphable model, made on the fly, for training pose/shape regressors.

Every batch is a fresh ``facetex.face3d.synthetic.random_face_batch`` (random
identity, expression, pose and appearance, rendered with its ground truth), so an
epoch is a number of batches, not a file list. Randomness is keyed by
``(seed, stream, rank, worker, pass)``: ranks and dataloader workers draw
disjoint streams, each training pass over the stream draws new faces, and the
validation stream is the same every epoch so its metrics are comparable.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from facetex.face3d.morphable_model import ModelFormat, MorphableModel, load_morphable_model
from facetex.face3d.synthetic import SyntheticFaceBatch, random_face_batch

_TRAIN, _VAL, _STATISTICS = 0, 1, 2  # stream keys of the seed sequence


def _distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside ``torch.distributed``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass(eq=False, repr=False)
class SyntheticFaceStream(IterableDataset):
    """An ``IterableDataset`` of whole rendered batches (use ``DataLoader(batch_size=None)``).

    Yields ``num_batches`` ``SyntheticFaceBatch`` per pass on each rank, split
    between the dataloader workers. With ``fresh_each_pass`` every pass over
    the stream draws new faces (the pass counter lives in the iterating
    process, so workers must be persistent); otherwise every pass repeats.
    """

    model: MorphableModel
    num_batches: int
    batch_size: int
    image_size: int
    seed: int
    stream: int
    fresh_each_pass: bool
    render_options: dict[str, Any] = field(default_factory=dict)
    _passes: int = field(default=0, init=False)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[SyntheticFaceBatch]:
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        rank, _ = _distributed_rank()
        pass_index = self._passes if self.fresh_each_pass else 0
        self._passes += 1
        entropy = [self.seed, self.stream, rank, worker_id, pass_index]
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        for _ in range(worker_id, self.num_batches, num_workers):
            yield random_face_batch(self.model, self.batch_size, self.image_size, generator, **self.render_options)


class SyntheticFacesDataModule(L.LightningDataModule):
    """Streams synthetic renders of any morphable model, with their exact parameters.

    Args:
        model_path: the morphable model file (e.g. ``../shared/assets/sfm/sfm_3448.npz``).
        model_format: ``sfm``, ``bfm`` (``bfm_noneck_v3.pkl``) or ``bfm_mean`` (``bfm_noneck_mean.npz``).
        image_size: side of the square renders in pixels (3DDFA_V2 uses 120).
        batch_size: faces per batch.
        train_batches: batches per training epoch (per rank); new faces every epoch.
        val_batches: batches of the fixed validation set.
        seed: root of every random stream (training, validation, statistics).
        num_workers: dataloader worker processes (persistent when > 0).
        uv_mat_path: BFM only: ``BFM_UV.mat`` for texture coordinates.
        indices_path: BFM only: ``indices.npy`` cutting the full-BFM UVs to the no-neck mesh.
        render_options: extra keyword arguments of ``random_face_batch`` (pose ranges, lighting).
    """

    def __init__(
        self,
        model_path: str = "../shared/assets/sfm/sfm_3448.npz",
        model_format: ModelFormat = "sfm",
        image_size: int = 120,
        batch_size: int = 32,
        train_batches: int = 500,
        val_batches: int = 16,
        seed: int = 0,
        num_workers: int = 0,
        uv_mat_path: str | None = None,
        indices_path: str | None = None,
        render_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("image_size", image_size), ("batch_size", batch_size),
                            ("train_batches", train_batches), ("val_batches", val_batches)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self._model: MorphableModel | None = None

    @property
    def morphable_model(self) -> MorphableModel:
        """The morphable model being rendered (available after ``setup``)."""
        if self._model is None:
            raise RuntimeError("SyntheticFacesDataModule.setup() has not run yet: call it (the Trainer does) first")
        return self._model

    def setup(self, stage: str | None = None) -> None:
        """Loads the morphable model (every rank renders its own faces)."""
        if self._model is None:
            hp = self.hparams
            self._model = load_morphable_model(hp.model_path, hp.model_format, hp.uv_mat_path, hp.indices_path)

    def statistics_batches(self, num_batches: int) -> Iterator[SyntheticFaceBatch]:
        """``num_batches`` batches from a stream of their own, for estimating target statistics.

        The stream ignores the rank, so every rank estimates the same statistics.
        """
        hp = self.hparams
        generator_seed = np.random.SeedSequence([hp.seed, _STATISTICS]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(generator_seed))
        for _ in range(num_batches):
            yield random_face_batch(self.morphable_model, hp.batch_size, hp.image_size, generator,
                                    **(hp.render_options or {}))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._stream(self.hparams.train_batches, _TRAIN, fresh_each_pass=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._stream(self.hparams.val_batches, _VAL, fresh_each_pass=False))

    def _stream(self, num_batches: int, stream: int, fresh_each_pass: bool) -> SyntheticFaceStream:
        hp = self.hparams
        return SyntheticFaceStream(self.morphable_model, num_batches, hp.batch_size, hp.image_size, hp.seed, stream,
                                   fresh_each_pass, dict(hp.render_options or {}))

    def _loader(self, dataset: SyntheticFaceStream) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
