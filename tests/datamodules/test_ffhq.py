"""FFHQDataModule: folder / official zip / tar shards, resizing, alignment, augmentation, DDP sharding, errors."""
from __future__ import annotations

import io
import logging
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from datamodules.ffhq import DatasetFormatError, FFHQDataModule, open_image_source
from facetex.face3d.detector import FaceDetector
from facetex.face3d.image_io import ImageDecodeError
from facetex.face3d.regressor import FaceRegressor
from facetex.gan.align import ffhq_landmarks, ffhq_quad

NUM_IMAGES, SIZE = 10, 32


def image_pixels(index: int) -> np.ndarray:
    """A (SIZE, SIZE, 3) uint8 image whose mean red level encodes its index: 20 * index + 10."""
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[..., 0] = 20 * index + 10
    pixels[:, : SIZE // 2, 1] = 200  # left half green: a horizontal flip moves it
    return pixels


def png_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_pixels(index)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_folder(root: Path) -> Path:
    for index in range(NUM_IMAGES):
        folder = root / "images" / f"{index // 4:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:05d}.png").write_bytes(png_bytes(index))
    (root / "images" / "LICENSE.txt").write_text("not an image")
    return root / "images"


def write_zip(root: Path) -> Path:
    path = root / "images1024x1024.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images1024x1024/LICENSE.txt", "not an image")
        for index in range(NUM_IMAGES):
            archive.writestr(f"images1024x1024/{index // 1000 * 1000:05d}/{index:05d}.png", png_bytes(index))
    return path


def write_shards(root: Path) -> Path:
    folder = root / "shards"
    folder.mkdir()
    for shard in range(2):
        with tarfile.open(folder / f"ffhq-{shard:04d}.tar", "w") as archive:
            for index in range(shard * NUM_IMAGES // 2, (shard + 1) * NUM_IMAGES // 2):
                for name, data in ((f"{index:05d}.png", png_bytes(index)), (f"{index:05d}.json", b"{}")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return folder


def recovered_indices(images: torch.Tensor) -> list[int]:
    """Index of each (B, 3, R, R) [0, 1] image from its mean red level."""
    return [round((float(red) * 255 - 10) / 20) for red in images[:, 0].mean(dim=(1, 2))]


@pytest.mark.parametrize("layout", [write_folder, write_zip, write_shards])
def test_every_layout_reads_every_image_once(tmp_path, layout):
    path = layout(tmp_path)
    assert len(open_image_source(path).names) == NUM_IMAGES
    module = FFHQDataModule(str(path), resolution=16, batch_size=4, val_fraction=0.2, seed=1, augment=False)
    module.setup("fit")
    assert len(module.train_dataset) == 8 and len(module.val_dataset) == 2
    seen = []
    for loader in (module.train_dataloader(), module.val_dataloader()):
        for batch in loader:
            assert batch.shape[1:] == (3, 16, 16) and batch.dtype == torch.float32
            seen += recovered_indices(batch)
    assert sorted(seen) == list(range(NUM_IMAGES))
    first = module.train_dataset[0]
    torch.testing.assert_close(first[1, :, :7], torch.full((16, 7), 200 / 255))  # halved size, halves kept
    torch.testing.assert_close(first[1, :, 9:], torch.zeros(16, 7))


def test_tar_shards_work_in_worker_processes(tmp_path):
    module = FFHQDataModule(str(write_shards(tmp_path)), resolution=8, batch_size=5, num_workers=2,
                            val_fraction=0.0, augment=False)
    module.setup("fit")
    seen = [index for batch in module.train_dataloader() for index in recovered_indices(batch)]
    assert sorted(seen) == list(range(NUM_IMAGES))


def test_batches_leave_in_stylegan_range_and_augment_only_when_asked(tmp_path):
    module = FFHQDataModule(str(write_folder(tmp_path)), resolution=16, batch_size=10, val_fraction=0.0)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    plain = module.transform_batch(batch, augment=False)
    torch.testing.assert_close(plain, batch * 2 - 1)
    assert module.on_after_batch_transfer(batch, 0).equal(plain)  # no trainer: not training, no augmentation
    torch.manual_seed(0)
    augmented = torch.stack([module.transform_batch(batch, augment=True) for _ in range(8)])
    assert augmented.min() >= -1 and augmented.max() <= 1
    green_left = augmented[:, :, 1, :, :8].mean(dim=(-1, -2)) > augmented[:, :, 1, :, 8:].mean(dim=(-1, -2))
    assert 0.2 < green_left.float().mean() < 0.8  # about half of the images flipped


def test_ddp_sampler_gives_each_rank_a_disjoint_share(tmp_path):
    module = FFHQDataModule(str(write_zip(tmp_path)), resolution=8, batch_size=2, val_fraction=0.2, seed=3)
    module.setup("fit")
    shares = [list(DistributedSampler(module.train_dataset, num_replicas=2, rank=rank, shuffle=True, seed=7))
              for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 4
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == list(range(len(module.train_dataset)))


def test_clear_errors_for_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FFHQDataModule(str(tmp_path / "missing")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no images"):
        FFHQDataModule(str(tmp_path / "empty")).setup("fit")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(DatasetFormatError, match="not a readable zip"):
        FFHQDataModule(str(tmp_path / "broken.zip")).setup("fit")
    (tmp_path / "shard.tar").write_bytes(b"\x1f\x8b compressed or garbage" * 40)
    with pytest.raises(DatasetFormatError, match="tar"):
        FFHQDataModule(str(tmp_path / "shard.tar")).setup("fit")
    folder = write_folder(tmp_path / "corrupt")
    (folder / "00000" / "00000.png").write_bytes(b"\x89PNG truncated")
    module = FFHQDataModule(str(folder), val_fraction=0.0)
    module.setup("fit")
    with pytest.raises(ImageDecodeError, match="00000.png"):
        module.train_dataset[0]
    with pytest.raises(ValueError, match="FaceBoxesProd"):
        FFHQDataModule(str(folder), align=True)


def test_alignment_of_real_photos_skips_photos_without_a_face(shared_assets, tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("emma.jpg", "jianzhu_guo.jpg"):
        shutil.copy(shared_assets / "faces" / name, folder / name)
    Image.fromarray(np.full((200, 240, 3), 128, np.uint8)).save(folder / "wall.png")
    v2 = shared_assets / "3ddfa_v2"
    module = FFHQDataModule(str(folder), resolution=256, batch_size=2, align=True, val_fraction=0.0, augment=False,
                            detector_checkpoint=str(v2 / "FaceBoxesProd.pth"),
                            regressor_checkpoint=str(v2 / "mb05_120x120.pth"),
                            param_stats=str(v2 / "param_mean_std_62d_120x120.pkl"),
                            landmark_bases=str(shared_assets / "bfm" / "bfm_noneck_mean.npz"))
    with caplog.at_level(logging.WARNING):
        module.setup("fit")
    assert "skipping wall.png: no face found" in caplog.text
    names = [module.train_dataset.dataset.name(i) for i in module.train_dataset.indices]
    assert names == ["emma.jpg", "jianzhu_guo.jpg"]
    batch = next(iter(module.train_dataloader()))
    assert batch.shape == (2, 3, 256, 256)
    # Aligning an aligned crop again is close to the identity: its own FFHQ square is near the frame.
    detector = FaceDetector.from_checkpoint(v2 / "FaceBoxesProd.pth")
    regressor = FaceRegressor.from_files(v2 / "mb05_120x120.pth", v2 / "param_mean_std_62d_120x120.pkl",
                                         shared_assets / "bfm" / "bfm_noneck_mean.npz")
    for crop in batch:
        landmarks = ffhq_landmarks((crop * 255).round().to(torch.uint8), detector, regressor)
        quad = ffhq_quad(landmarks)
        # measured: centre within 1.1 px, side 252.5-256.4 px
        assert (quad.mean(0) - 128.0).norm() < 4.0
        assert float((quad[3] - quad[0]).norm()) == pytest.approx(256.0, rel=0.03)
