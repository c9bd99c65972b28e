"""Decode a photo into the tensor layout the face pipeline takes: ``(3, H, W)`` uint8 RGB, at its working size.

The project's one image decoder: photos on disk (:func:`load_image`) and images stored in a dataset
archive (:func:`decode_image`, e.g. a zip or tar member) go through the same Pillow decoding. The
camera's EXIF orientation is applied so that the face is upright as a viewer sees it; grayscale,
palette, CMYK and 16-bit files become 8-bit RGB and an alpha channel is composited over white (what an
image viewer shows).

Working size: with ``max_side`` given (the photo jobs pass :data:`WORKING_SIDE`, 2048 px, by default), a
photo whose longest side exceeds it is scaled down to it right after decoding (Lanczos), so that the memory
and time of every later stage (fusion and skin masks work on whole images) follow the working size, not the
camera. 2048 px is twice the default 1024-texel UV map: a face spanning half the photo still has about one
photo pixel per texel, the detector reads at most 1080 px anyway and the regressor 120 px. A JPEG is decoded
straight at the nearest larger 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's ``draft``), so a
64-megapixel JPEG never exists at full size in memory; other formats are decoded whole, then scaled. Without
``max_side`` the image comes as stored. Files above Pillow's decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``, doubled) are refused before decoding.

A missing path, a folder, bytes Pillow cannot decode or a bomb raise one exception that names the file
and what to do.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from foundation.errors import InputError

# the file types the datamodules list as photos (every one decodes here)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
WORKING_SIDE = 2048
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageDecodeError(InputError, ValueError):
    """The file (or stored member) exists but is not an image Pillow can decode (corrupt, truncated or another format)."""


class ImageTooLargeError(ImageDecodeError):
    """The image's header declares more pixels than Pillow's decompression-bomb limit allows."""


def check_max_side(max_side: int | None) -> int | None:
    """``max_side`` if it is a usable working size (None = the photo's own size, or an int >= 64)."""
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 64):
        raise InputError(f"the photo working size (longest side in pixels) must be an integer >= 64 or None for the "
                         f"photo's own size (default {WORKING_SIDE}), got {max_side!r}")
    return max_side


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """``(width, height)`` scaled so that the longest side is at most ``max_side`` (never enlarged)."""
    longest = max(width, height)
    if max_side is None or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(image: Image.Image) -> Image.Image:
    """A decoded Pillow image of any supported mode -> an RGB image."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own conversion clips 16-bit values at 255; rescale the full range instead.
        levels = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(levels / 257.0), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "F":
        raise ImageDecodeError(
            "floating-point (mode 'F') images have no defined intensity range; "
            "save the image as 8- or 16-bit PNG/JPEG first"
        )
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _decode(source: IO[bytes], name: str, max_side: int | None) -> torch.Tensor:
    """Pillow decoding of ``source`` at the working size -> upright RGB ``(3, H, W)`` uint8."""
    check_max_side(max_side)
    try:
        with Image.open(source) as opened:
            target = working_size(opened.size[0], opened.size[1], max_side)
            if target != opened.size:  # JPEG: decode at the smallest DCT scale still >= the target
                scale = max(target[0] / opened.size[0], target[1] / opened.size[1])
                opened.draft(None, (math.ceil(opened.size[0] * scale), math.ceil(opened.size[1] * scale)))
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            rgb = _to_rgb(upright)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"{name!r} is too large to decode safely: {error} Scale it down first (the face pipeline "
            f"works at {WORKING_SIDE} px on the longest side) or remove it"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageDecodeError(
            f"cannot decode {name!r} as an image ({error}); the file is corrupt, truncated "
            "or not in a format Pillow reads (PNG, JPEG, BMP, TIFF, WebP, ...): replace or remove it"
        ) from error
    size = working_size(rgb.size[0], rgb.size[1], max_side)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return torch.from_numpy(np.asarray(rgb).transpose(2, 0, 1).copy())


def decode_image(data: bytes, name: str, max_side: int | None = None) -> torch.Tensor:
    """Encoded image bytes -> upright RGB ``(3, H, W)`` uint8, longest side at most ``max_side`` (None: as stored).

    ``name`` (its file or member) goes into the error.

    Raises:
        ImageDecodeError: the bytes cannot be decoded as an image (:class:`ImageTooLargeError`: a decompression bomb).
    """
    return _decode(io.BytesIO(data), name, max_side)


def load_image(path: str | Path, max_side: int | None = None) -> torch.Tensor:
    """Read an image file as an upright RGB ``(3, H, W)`` uint8 tensor, longest side at most ``max_side`` pixels.

    ``max_side=None`` keeps the stored size.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        ImageDecodeError: the file cannot be decoded as an image (:class:`ImageTooLargeError`: a decompression bomb).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist; check the path (cwd is {Path.cwd()})")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory; pass the path of one image file inside it")
    with path.open("rb") as handle:  # an unreadable file raises PermissionError here, not a decoding error
        return _decode(handle, str(path), max_side)
