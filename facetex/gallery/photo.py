"""A small upright copy of the input photo for the gallery (the original may live anywhere, or move)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from facetex.face3d.export import image_to_uint8
from facetex.face3d.image_io import load_image
from foundation.files import atomic_paths

PHOTO_FILE = "photo.jpg"
PHOTO_SIDE = 512  # longest side in pixels: enough for the page, small enough for an overview of hundreds


def write_photo(source: str | Path, folder: Path) -> Path:
    """Write ``folder/photo.jpg``: ``source`` upright (EXIF), in RGB, its longest side at most ``PHOTO_SIDE``.

    Raises what ``load_image`` raises for a missing or undecodable file.
    """
    image = Image.fromarray(image_to_uint8(load_image(source, max_side=PHOTO_SIDE)))  # a big JPEG decodes small
    image.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.LANCZOS)
    target = folder / PHOTO_FILE
    with atomic_paths(target) as (temporary,):
        image.save(temporary, format="JPEG", quality=90)
    return target
