"""Face photos for ``main.py predict``: one image file, a folder of images, or a list of image files.

Each item is ``{"image": (3, H, W) uint8 RGB, "name": str}``; photos differ in size, so a batch is
one photo (the dict itself, not a stacked batch). Names are the file stems, or for a folder the
path below it with ``/`` replaced by ``__``; two photos with the same name are refused, since their
outputs would overwrite each other. Images are decoded by ``facetex.face3d.image_io.load_image``
(EXIF orientation, any mode to RGB) when the photo is loaded, at the working size ``max_side`` (a larger photo is
scaled down as it is decoded); a file that cannot be decoded, or that is too large to decode safely (Pillow's
decompression-bomb limit), yields ``{"image": None, "unreadable": "<why>", ...}`` instead, which
``GANTex.predict_step`` skips and reports like a photo without a face (so one bad photo does not end a folder run).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from facetex.face3d.image_io import IMAGE_SUFFIXES, WORKING_SIDE, ImageDecodeError, check_max_side, load_image
from foundation.errors import InputError


class NoPhotosError(InputError, ValueError):
    """The given path holds no image files."""


def _photo_name(path: Path, root: Path | None) -> str:
    """The output name of a photo: its stem, or its path below ``root`` with folders joined by ``__``."""
    if root is None:
        return path.stem
    return "__".join(path.relative_to(root).with_suffix("").parts)


def list_photos(path: str | Path | list[str | Path]) -> list[tuple[Path, str]]:
    """``(file, name)`` for every photo given: a file, a folder (searched recursively) or a list of files."""
    entries: list[tuple[Path, str]] = []
    for item in path if isinstance(path, list) else [path]:
        item = Path(item)
        if not item.exists():
            raise FileNotFoundError(f"photo path {str(item)!r} does not exist; pass an image file, a folder of "
                                    f"images or a list of image files (cwd is {Path.cwd()})")
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise NoPhotosError(f"folder {str(item)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            entries += [(file, _photo_name(file, item)) for file in files]
        else:
            entries.append((item, _photo_name(item, None)))
    if not entries:
        raise NoPhotosError("no photos were given; pass an image file, a folder or a non-empty list of files")
    names = [name for _, name in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"several photos share the output name(s) {duplicates}; rename them or pass their folder "
                         "so that names include the sub-folder")
    return entries


class PhotoDataset(Dataset):
    """Photos decoded on access: ``{"image": (3, H, W) uint8, "name": str, "path": str}``.

    An undecodable (or since vanished) file gives ``"image": None`` and ``"unreadable"``: the error's message.
    """

    def __init__(self, entries: list[tuple[Path, str]], max_side: int | None = WORKING_SIDE) -> None:
        self.entries, self.max_side = entries, max_side

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, name = self.entries[index]
        try:
            image = load_image(path, self.max_side)
        except (ImageDecodeError, OSError) as error:
            return {"image": None, "unreadable": str(error), "name": name, "path": str(path)}
        return {"image": image, "name": name, "path": str(path)}


def single_photo(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate a batch of one photo into that photo's dict (photos of different sizes do not stack)."""
    return batch[0]


class FacePhotoDataModule(L.LightningDataModule):
    """Photos to run the 3D-GANTex pipeline on.

    Args:
        path: an image file, a folder of images (recursive), or a list of image files.
        num_workers: DataLoader workers decoding the photos.
        max_side: working size: a photo whose longest side is larger is scaled down to this many pixels as it is
            decoded (memory and time follow it; see ``facetex.face3d.image_io``); null keeps each photo's own size.
    """

    def __init__(self, path: str | list[str], num_workers: int = 0, max_side: int | None = WORKING_SIDE) -> None:
        super().__init__()
        self.path = path
        self.num_workers = num_workers
        self.max_side = check_max_side(max_side)
        self.dataset: PhotoDataset | None = None

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise ValueError(f"FacePhotoDataModule serves photos for `predict` only, not {stage!r}")
        self.dataset = PhotoDataset(list_photos(self.path), self.max_side)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=1, shuffle=False, num_workers=self.num_workers,
                          collate_fn=single_photo)
