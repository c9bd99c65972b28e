"""FFHQ (or any face photo collection) for StyleGAN / encoder training: lazy reads, optional alignment.

Three layouts, told apart by the path:

* ``*.zip``: the official ``images1024x1024.zip`` (members like ``images1024x1024/00000/00000.png``),
  read member by member without unpacking;
* ``*.tar``, or a folder holding ``*.tar`` shards: webdataset-style shards (``00000.png``,
  ``00000.json``, ...); the image members are indexed once from the tar headers and each is then
  read by seeking to its bytes (uncompressed tars only);
* any other folder: every image file below it (``facetex.face3d.image_io.IMAGE_SUFFIXES``), recursively.

Images are decoded by ``facetex.face3d.image_io.decode_image`` (EXIF orientation, any mode to RGB).

Items are ``(3, R, R)`` float images in [0, 1] at the chosen ``resolution`` (a non-square photo is
centre-cropped to a square first). With ``align`` every photo is FFHQ-aligned from 3DDFA_V2
landmarks (``facetex.gan.align``); photos where that fails are skipped with a logged reason.
Batches leave ``on_after_batch_transfer`` in [-1, 1] (StyleGAN's range), with a random horizontal
flip and a small colour jitter (kornia, on the device) while training when ``augment`` is on.
Under DDP, Lightning puts a ``DistributedSampler`` on these map-style datasets, so each rank reads
a disjoint part of every epoch (padded by a few repeats when the size is not divisible).
"""
from __future__ import annotations

import logging
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from facetex.face3d.detector import FaceDetector, NoFaceError
from facetex.face3d.image_io import IMAGE_SUFFIXES, ImageDecodeError, decode_image
from facetex.face3d.regressor import FaceRegressor
from facetex.gan.align import AlignmentError, align_face, ffhq_landmarks, ffhq_quad
from foundation.errors import InputError

log = logging.getLogger(__name__)


class DatasetFormatError(InputError, ValueError):
    """The dataset path exists but is not a usable image folder, zip or tar shard set."""


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


class FolderImages:
    """Image files below a folder, sorted by relative path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and _is_image(p.name))

    def read(self, index: int) -> bytes:
        return (self.root / self.names[index]).read_bytes()


class ZipImages:
    """Image members of a zip archive, read lazily; each process opens its own handle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with zipfile.ZipFile(path) as archive:
                self.names = sorted(info.filename for info in archive.infolist()
                                    if not info.is_dir() and _is_image(info.filename))
        except (zipfile.BadZipFile, OSError) as error:
            raise DatasetFormatError(f"{str(path)!r} is not a readable zip archive ({error}); re-download it "
                                     "(the official file is images1024x1024.zip, 89 GB)") from error
        self._archive: zipfile.ZipFile | None = None
        self._pid = -1

    def read(self, index: int) -> bytes:
        if self._archive is None or self._pid != os.getpid():  # a forked worker must not share the handle
            self._archive = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        name = self.names[index]
        try:
            return self._archive.read(name)
        except (zipfile.BadZipFile, OSError) as error:
            raise ImageDecodeError(f"member {name!r} of {str(self.path)!r} is damaged ({error}); re-download "
                                   "the archive") from error

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_archive": None, "_pid": -1}


class TarShardImages:
    """Image members of uncompressed tar shards, indexed from their headers and read by seeking."""

    def __init__(self, shards: list[Path]) -> None:
        self.shards = shards
        self.names: list[str] = []
        self._locations: list[tuple[int, int, int]] = []  # (shard, byte offset, size)
        for shard_index, shard in enumerate(shards):
            try:
                with tarfile.open(shard, mode="r:") as archive:
                    members = [m for m in archive.getmembers() if m.isfile() and _is_image(m.name)]
            except (tarfile.TarError, OSError) as error:
                raise DatasetFormatError(f"{str(shard)!r} is not a readable uncompressed tar shard ({error}); "
                                         "webdataset shards must be plain .tar files for random access") from error
            for member in sorted(members, key=lambda m: m.name):
                self.names.append(f"{shard.name}/{member.name}")
                self._locations.append((shard_index, member.offset_data, member.size))
        self._files: dict[int, Any] = {}
        self._pid = -1

    def read(self, index: int) -> bytes:
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        shard_index, offset, size = self._locations[index]
        handle = self._files.get(shard_index)
        if handle is None:
            handle = self._files[shard_index] = open(self.shards[shard_index], "rb")  # noqa: SIM115 (kept open)
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise ImageDecodeError(f"{self.names[index]!r} is truncated ({len(data)} of {size} bytes); the shard "
                                   "was cut short, re-create it")
        return data

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}, "_pid": -1}


ImageSource = FolderImages | ZipImages | TarShardImages


def open_image_source(path: str | Path) -> ImageSource:
    """Pick the reader for ``path`` (zip file, tar file, folder of tar shards, folder of images)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path {str(path)!r} does not exist; pass a folder of images, "
                                "images1024x1024.zip or a folder of .tar shards")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".zip":
            source: ImageSource = ZipImages(path)
        elif suffix == ".tar":
            source = TarShardImages([path])
        else:
            raise DatasetFormatError(f"{str(path)!r} is a {suffix or 'suffix-less'} file; the dataset must be a "
                                     "folder, a .zip or a .tar")
    else:
        shards = sorted(path.glob("*.tar"))
        source = TarShardImages(shards) if shards else FolderImages(path)
    if not source.names:
        raise DatasetFormatError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {str(path)!r}; check the path")
    return source


def square_resize(image: Tensor, resolution: int) -> Tensor:
    """``(3, H, W)`` uint8 -> ``(3, R, R)`` float in [0, 1]: centre square crop, antialiased bilinear resize."""
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[:, top:top + side, left:left + side].float()[None] / 255.0
    if side != resolution:
        square = F.interpolate(square, size=(resolution, resolution), mode="bilinear", antialias=True,
                               align_corners=False)
    return square[0].clamp(0.0, 1.0)


class FaceImages(Dataset):
    """Map-style dataset over an image source: ``(3, R, R)`` float in [0, 1].

    ``landmarks`` maps a source index to its iBUG-68 points ``(68, 2)``; those items are
    FFHQ-aligned, the others centre-cropped. ``indices`` restricts the items (e.g. the faces
    that could be aligned).
    """

    def __init__(self, source: ImageSource, resolution: int, indices: list[int] | None = None,
                 landmarks: dict[int, Tensor] | None = None) -> None:
        self.source = source
        self.resolution = resolution
        self.indices = list(range(len(source.names))) if indices is None else indices
        self.landmarks = landmarks or {}

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, item: int) -> str:
        return self.source.names[self.indices[item]]

    def __getitem__(self, item: int) -> Tensor:
        index = self.indices[item]
        image = decode_image(self.source.read(index), self.source.names[index])
        if index in self.landmarks:
            return align_face(image, self.landmarks[index], self.resolution).image.clamp(0.0, 1.0)
        return square_resize(image, self.resolution)


class FFHQDataModule(L.LightningDataModule):
    """FFHQ-style face images for GAN and encoder training.

    Args:
        path: folder of images, ``images1024x1024.zip``, a ``.tar`` shard or a folder of shards.
        resolution: side of the square training images.
        batch_size: images per batch (per rank).
        num_workers: dataloader worker processes.
        align: FFHQ-align every photo (for unaligned collections; needs the four asset paths).
        augment: random horizontal flip and colour jitter on training batches.
        val_fraction: share of images held out for validation (at least one when > 0).
        seed: seed of the train/validation split.
        detector_checkpoint, regressor_checkpoint, param_stats, landmark_bases: ``FaceBoxesProd.pth``,
            ``mb05_120x120.pth``, ``param_mean_std_62d_120x120.pkl``, ``bfm_noneck_mean.npz`` (``align`` only).
    """

    def __init__(self, path: str, resolution: int = 256, batch_size: int = 8, num_workers: int = 0,
                 align: bool = False, augment: bool = True, val_fraction: float = 0.05, seed: int = 0,
                 detector_checkpoint: str | None = None, regressor_checkpoint: str | None = None,
                 param_stats: str | None = None, landmark_bases: str | None = None) -> None:
        super().__init__()
        if resolution < 1 or batch_size < 1 or num_workers < 0:
            raise ValueError(f"need resolution >= 1, batch_size >= 1, num_workers >= 0; got {resolution}, "
                             f"{batch_size}, {num_workers}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        alignment_files = (detector_checkpoint, regressor_checkpoint, param_stats, landmark_bases)
        if align and any(file is None for file in alignment_files):
            raise ValueError("align=True needs detector_checkpoint (FaceBoxesProd.pth), regressor_checkpoint "
                             "(mb05_120x120.pth), param_stats (param_mean_std_62d_120x120.pkl) and landmark_bases "
                             "(bfm_noneck_mean.npz); see shared/assets/README.md for their sources")
        self.save_hyperparameters()
        self.train_dataset: Subset | None = None
        self.val_dataset: Subset | None = None
        self.augmentation = K.AugmentationSequential(
            K.RandomHorizontalFlip(p=0.5),
            K.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.8),
        )

    def setup(self, stage: str | None = None) -> None:
        """Index the images, align them if asked (skipping failures), and split train/validation."""
        if self.train_dataset is not None:
            return
        hp = self.hparams
        source = open_image_source(hp.path)
        landmarks = self._face_landmarks(source) if hp.align else None
        indices = sorted(landmarks) if landmarks is not None else None
        dataset = FaceImages(source, hp.resolution, indices, landmarks)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(hp.seed)).tolist()
        num_val = round(hp.val_fraction * len(dataset))
        if hp.val_fraction > 0:
            num_val = min(max(num_val, 1), len(dataset) - 1)
        if len(dataset) - num_val < 1:
            raise DatasetFormatError(f"only {len(dataset)} usable image(s) in {hp.path!r}: too few to train on")
        self.val_dataset = Subset(dataset, sorted(order[:num_val]))
        self.train_dataset = Subset(dataset, sorted(order[num_val:]))

    def _face_landmarks(self, source: ImageSource) -> dict[int, Tensor]:
        """68 landmarks of the most confident face of every photo; photos without one are logged and left out."""
        hp = self.hparams
        detector = FaceDetector.from_checkpoint(hp.detector_checkpoint)
        regressor = FaceRegressor.from_files(hp.regressor_checkpoint, hp.param_stats, hp.landmark_bases)
        landmarks: dict[int, Tensor] = {}
        for index, name in enumerate(source.names):
            try:
                image = decode_image(source.read(index), name)
                points = ffhq_landmarks(image, detector, regressor)
                ffhq_quad(points)  # raises AlignmentError for landmarks that cannot orient a crop
            except (NoFaceError, AlignmentError, ImageDecodeError) as error:
                log.warning("skipping %s: %s", name, error)
                continue
            landmarks[index] = points
        if not landmarks:
            raise DatasetFormatError(f"no face could be aligned in {hp.path!r} (see the logged reasons)")
        return landmarks

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)

    def _loader(self, dataset: Subset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("FFHQDataModule.setup() has not run yet: call it (the Trainer does) first")
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle, num_workers=workers,
                          persistent_workers=workers > 0)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        """Augment training batches on their device, then map [0, 1] -> [-1, 1]: ``(B, 3, R, R)``."""
        training = self.trainer is not None and self.trainer.training
        return self.transform_batch(batch, augment=training and self.hparams.augment)

    def transform_batch(self, batch: Tensor, augment: bool) -> Tensor:
        """``(B, 3, R, R)`` in [0, 1] -> optionally flipped/jittered, in [-1, 1]."""
        if augment:
            batch = self.augmentation(batch).clamp(0.0, 1.0)
        return batch * 2.0 - 1.0
