"""``load_image``: exact pixels back, EXIF orientation, mode conversions, and one clear error per bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facetex.face3d.image_io import IMAGE_SUFFIXES, ImageDecodeError, decode_image, load_image

_ORIENTATION_TAG = 0x0112


def _pattern(height: int = 5, width: int = 7) -> np.ndarray:
    """A ``(H, W, 3)`` uint8 image whose every pixel is distinct, so any transposition shows."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    array = _pattern()
    Image.fromarray(array).save(tmp_path / "face.png")
    image = load_image(tmp_path / "face.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 5, 7)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), array)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = _pattern()
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(array).save(tmp_path / "rotated.png", exif=exif)
    image = load_image(tmp_path / "rotated.png")
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), np.rot90(array, k=-1))


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = _pattern()[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    image = load_image(tmp_path / "gray.png")
    for channel in range(3):
        np.testing.assert_array_equal(image[channel].numpy(), gray)


def test_sixteen_bit_grayscale_keeps_its_range(tmp_path: Path) -> None:
    levels = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    assert image[:, 0].tolist() == [[0, 100, 255]] * 3


def test_alpha_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[200, 0, 0, 255], [0, 0, 0, 0], [0, 100, 0, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    image = load_image(tmp_path / "alpha.png").permute(1, 2, 0)[0]
    assert image[0].tolist() == [200, 0, 0]
    assert image[1].tolist() == [255, 255, 255]
    expected_half = [round(255 * 127 / 255), round(100 * 128 / 255 + 255 * 127 / 255), round(255 * 127 / 255)]
    assert all(abs(a - b) <= 1 for a, b in zip(image[2].tolist(), expected_half))


def test_missing_path_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "nowhere.jpg")


def test_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_image(tmp_path)


def test_non_image_bytes_raise_decode_error(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_bytes(b"this is a text file, not a PNG\n" * 10)
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        load_image(tmp_path / "notes.png")


def test_truncated_jpeg_raises_decode_error(tmp_path: Path) -> None:
    Image.fromarray(_pattern(64, 64)).save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_every_listed_file_type_decodes_from_disk_and_from_bytes(tmp_path: Path, suffix: str) -> None:
    """Both ways in (a photo on disk, a member of a dataset archive) give the same pixels for every listed type."""
    y, x = np.mgrid[0:16, 0:16]
    array = np.stack([16 * x, 16 * y, 255 - 8 * (x + y)], axis=-1).astype(np.uint8)  # smooth: JPEG keeps it close
    lossless = suffix in (".png", ".bmp", ".tif", ".tiff", ".webp")
    options = {".webp": {"lossless": True}, ".jpg": {"quality": 95}, ".jpeg": {"quality": 95}}.get(suffix, {})
    Image.fromarray(array).save(tmp_path / f"face{suffix}", **options)
    image = load_image(tmp_path / f"face{suffix}")
    assert torch.equal(decode_image((tmp_path / f"face{suffix}").read_bytes(), f"face{suffix}"), image)
    difference = np.abs(image.permute(1, 2, 0).numpy().astype(int) - array.astype(int))
    assert difference.max() == 0 if lossless else difference.mean() < 3
