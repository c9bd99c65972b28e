"""The photo datamodule decodes lazily, at the working size: an undecodable file or a decompression bomb is an item
marked unreadable, not an error."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from datamodules.face_photos import FacePhotoDataModule
from tests.image_fixtures import bomb_png


def test_an_undecodable_photo_is_a_marked_item_between_readable_ones(tmp_path: Path) -> None:
    Image.new("RGB", (8, 6), "red").save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "c.png")
    data = FacePhotoDataModule(str(tmp_path))
    data.setup("predict")
    items = list(data.predict_dataloader())
    assert [item["name"] for item in items] == ["a", "b", "c"]
    assert items[0]["image"].shape == (3, 6, 8) and items[0]["image"].dtype == torch.uint8
    assert items[2]["image"].shape == (3, 4, 4) and "unreadable" not in items[2]
    assert items[1]["image"] is None and items[1]["path"] == str(tmp_path / "b.jpg")
    assert "b.jpg" in items[1]["unreadable"] and "cannot decode" in items[1]["unreadable"]


def test_a_bomb_is_a_marked_item_and_big_photos_come_at_the_working_size(tmp_path: Path) -> None:
    Image.new("RGB", (300, 200), "red").save(tmp_path / "a_big.png")
    bomb_png(tmp_path / "b_bomb.png")
    photos = FacePhotoDataModule(str(tmp_path), max_side=150)
    photos.setup("predict")
    big, bomb = list(photos.predict_dataloader())
    assert big["image"].shape == (3, 100, 150)
    assert bomb["image"] is None and "b_bomb.png" in bomb["unreadable"] and "too large" in bomb["unreadable"]
