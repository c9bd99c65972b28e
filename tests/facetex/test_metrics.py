"""Known answers for the masked image metrics, landmark NME and the checkpoint-driven LPIPS."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from facetex.face3d.metrics import LPIPS, landmark_nme, masked_psnr, masked_ssim


def _half_mask(batch: int = 2, size: int = 64) -> torch.Tensor:
    mask = torch.zeros(batch, size, size, dtype=torch.bool)
    mask[:, :, : size // 2] = True
    return mask


def test_psnr_of_a_known_error_inside_the_mask() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 64, 64) * 0.8 + 0.1
    pred = target + 0.1 * torch.where(torch.rand_like(target) < 0.5, -1.0, 1.0)  # |error| = 0.1 everywhere: MSE 0.01
    pred[..., 32:] = 1.0 - target[..., 32:]  # large error outside the mask must not count
    psnr = masked_psnr(pred, target, _half_mask())
    torch.testing.assert_close(psnr, torch.full((2,), 20.0), atol=1e-3, rtol=0)


def test_psnr_of_gaussian_noise_matches_its_level() -> None:
    torch.manual_seed(1)
    target = torch.rand(1, 3, 256, 256)
    sigma = 0.05
    pred = target + sigma * torch.randn_like(target)
    expected = 10 * math.log10(1 / sigma**2)  # 26.02 dB
    assert abs(masked_psnr(pred, target, torch.ones(1, 256, 256)).item() - expected) < 0.05


def test_ssim_identical_is_one_and_noise_lowers_it() -> None:
    torch.manual_seed(2)
    target = torch.rand(2, 3, 64, 64)
    mask = _half_mask()
    torch.testing.assert_close(masked_ssim(target, target, mask), torch.ones(2))
    noisy = (target + 0.2 * torch.randn_like(target)).clamp(0, 1)
    assert (masked_ssim(noisy, target, mask) < 0.9).all()
    # identical inside the mask (away from its border), noise outside: still ~1
    mixed = target.clone()
    mixed[..., 40:] = noisy[..., 40:]
    assert (masked_ssim(mixed, target, mask) > 0.999).all()


def test_empty_mask_and_shape_errors() -> None:
    image = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="empty mask"):
        masked_psnr(image, image, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="mask must be"):
        masked_ssim(image, image, torch.ones(8, 8))


def test_nme_of_a_known_shift() -> None:
    torch.manual_seed(3)
    target = torch.rand(2, 68, 2) * 100.0
    target[:, 0] = torch.tensor([0.0, 0.0])
    target[:, 1] = torch.tensor([100.0, 100.0])  # box 100 x 100 -> size 100
    pred = target + torch.tensor([3.0, 4.0])  # every point off by 5 pixels
    torch.testing.assert_close(landmark_nme(pred, target, "bbox"), torch.full((2,), 0.05))
    interocular = (target[:, 36] - target[:, 45]).norm(dim=-1)
    torch.testing.assert_close(landmark_nme(pred, target, "interocular"), 5.0 / interocular)
    with pytest.raises(ValueError, match="68"):
        landmark_nme(pred[:, :10], target[:, :10], "interocular")


def _random_lpips_checkpoints(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(4)
    vgg, channels = {}, 3
    convs = [(0, 64), (2, 64), (5, 128), (7, 128), (10, 256), (12, 256), (14, 256),
             (17, 512), (19, 512), (21, 512), (24, 512), (26, 512), (28, 512)]  # torchvision VGG16 indices
    for index, out_channels in convs:
        vgg[f"features.{index}.weight"] = torch.randn(out_channels, channels, 3, 3) * math.sqrt(2 / (9 * channels))
        vgg[f"features.{index}.bias"] = torch.zeros(out_channels)
        channels = out_channels
    vgg["classifier.0.weight"] = torch.zeros(1)  # torchvision files also hold the classifier: ignored
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(vgg, folder / "vgg16.pth")
    torch.save(heads, folder / "lpips_vgg.pth")
    return folder / "vgg16.pth", folder / "lpips_vgg.pth"


def test_lpips_runs_on_user_checkpoints(tmp_path: Path) -> None:
    vgg_path, lpips_path = _random_lpips_checkpoints(tmp_path)
    metric = LPIPS(vgg_path, lpips_path)
    image = torch.rand(2, 3, 32, 32)
    other = (image + 0.3 * torch.randn_like(image)).clamp(0, 1)
    assert torch.allclose(metric(image, image), torch.zeros(2), atol=1e-6)
    distance = metric(image, other)
    assert (distance > 0).all()
    masked = metric(image, other, torch.ones(2, 32, 32))
    assert (masked > 0).all() and torch.allclose(masked, distance, rtol=0.2)

    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "alex.pth")
    with pytest.raises(ValueError, match="lin1"):
        LPIPS(vgg_path, tmp_path / "alex.pth")
    with pytest.raises(ValueError, match="VGG16"):
        LPIPS(lpips_path, lpips_path)
    with pytest.raises(FileNotFoundError):
        LPIPS(tmp_path / "missing.pth", lpips_path)
