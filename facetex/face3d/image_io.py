"""Decode a photo into the tensor layout the face pipeline takes: ``(3, H, W)`` uint8 RGB.

The project's one image decoder: photos on disk (:func:`load_image`) and images stored in a dataset
archive (:func:`decode_image`, e.g. a zip or tar member) go through the same Pillow decoding. The
camera's EXIF orientation is applied so that the face is upright as a viewer sees it; grayscale,
palette, CMYK and 16-bit files become 8-bit RGB and an alpha channel is composited over white (what an
image viewer shows). A missing path, a folder, or bytes Pillow cannot decode raise one exception that
names the file and what to do.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from foundation.errors import InputError

# the file types the datamodules list as photos (every one decodes here)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageDecodeError(InputError, ValueError):
    """The file (or stored member) exists but is not an image Pillow can decode (corrupt, truncated or another format)."""


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any supported mode -> ``(H, W, 3)`` uint8 RGB array."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own conversion clips 16-bit values at 255; rescale the full range instead.
        levels = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.round(levels / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        raise ImageDecodeError(
            "floating-point (mode 'F') images have no defined intensity range; "
            "save the image as 8- or 16-bit PNG/JPEG first"
        )
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def decode_image(data: bytes, name: str) -> torch.Tensor:
    """Encoded image bytes -> upright RGB ``(3, H, W)`` uint8; ``name`` (its file or member) goes into the error.

    Raises:
        ImageDecodeError: the bytes cannot be decoded as an image.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            array = _to_rgb_array(upright)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageDecodeError(
            f"cannot decode {name!r} as an image ({error}); the file is corrupt, truncated "
            "or not in a format Pillow reads (PNG, JPEG, BMP, TIFF, WebP, ...): replace or remove it"
        ) from error
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as an upright RGB ``(3, H, W)`` uint8 tensor.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        ImageDecodeError: the file cannot be decoded as an image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist; check the path (cwd is {Path.cwd()})")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory; pass the path of one image file inside it")
    return decode_image(path.read_bytes(), str(path))
