"""``load_image``: exact pixels back, EXIF orientation, mode conversions, the working size, and one clear error per
bad input (decompression bombs included)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from facetex.face3d.image_io import (
    IMAGE_SUFFIXES,
    WORKING_SIDE,
    ImageDecodeError,
    ImageTooLargeError,
    decode_image,
    load_image,
)
from foundation.errors import InputError
from tests.image_fixtures import bomb_png

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


def test_a_decompression_bomb_is_one_clear_decode_error(tmp_path: Path) -> None:
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageTooLargeError, match=r"'.*bomb.png' is too large to decode safely: Image size .*Scale it down") as caught:
        load_image(bomb)
    assert isinstance(caught.value, ImageDecodeError) and isinstance(caught.value, InputError)  # a per-photo skip
    with pytest.raises(ImageTooLargeError, match="member.png"):
        decode_image(bomb.read_bytes(), "member.png")


def test_photos_larger_than_the_working_size_are_scaled_down_right_after_decoding(tmp_path: Path) -> None:
    y, x = np.mgrid[0:300, 0:400]
    array = np.stack([x * 255 // 399, y * 255 // 299, (x + y) * 255 // 698], axis=-1).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", max_side=100)
    assert image.shape == (3, 75, 100)
    reference = np.asarray(Image.fromarray(array).resize((100, 75), Image.Resampling.LANCZOS))
    assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - reference).max() <= 1
    assert load_image(tmp_path / "wide.png", max_side=None).shape == (3, 300, 400)
    assert load_image(tmp_path / "wide.png", max_side=400).shape == (3, 300, 400)  # never enlarged
    Image.new("RGB", (WORKING_SIDE + 52, 10)).save(tmp_path / "long.png")
    assert load_image(tmp_path / "long.png", WORKING_SIDE).shape == (3, 10, WORKING_SIDE)
    assert load_image(tmp_path / "long.png").shape == (3, 10, WORKING_SIDE + 52)  # as stored unless asked
    with pytest.raises(InputError, match="integer >= 64"):
        load_image(tmp_path / "wide.png", max_side=0)


def test_the_working_size_applies_after_the_exif_rotation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = 6  # stored 300 wide, 120 high; shown 120 wide, 300 high
    Image.new("RGB", (300, 120), "white").save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg", max_side=150).shape == (3, 150, 60)


def test_a_big_jpeg_is_decoded_at_a_reduced_dct_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JPEG decoder itself works at 1/8 of the stored size: the full-size picture never exists in memory."""
    y, x = np.mgrid[0:1600, 0:1200]
    array = np.stack([x * 255 // 1199, y * 255 // 1599, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "big.jpg", quality=95)
    decoded_sizes = []
    original_load = JpegImagePlugin.JpegImageFile.load

    def spy(self: JpegImagePlugin.JpegImageFile):  # type: ignore[no-untyped-def]
        decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    image = load_image(tmp_path / "big.jpg", max_side=200)
    assert image.shape == (3, 200, 150) and decoded_sizes[0] == (150, 200)
    reference = np.asarray(Image.fromarray(array).resize((150, 200), Image.Resampling.LANCZOS)).astype(int)
    assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - reference).mean() < 2
