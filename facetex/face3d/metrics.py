"""Image and landmark metrics for scoring a re-rendered face against its photo.

PSNR and SSIM are averaged only inside a mask (the rendered face), since pixels the mesh
does not cover say nothing about the reconstruction. ``LPIPS`` is the learned perceptual
distance of Zhang et al. (CVPR 2018, VGG16 variant) written in plain torch: torchvision
cannot be imported beside this project's torch build, and no pretrained weights can be
downloaded here, so it runs only on checkpoints the user supplies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from foundation.checkpoints import read_state_dict


def _mask_like(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` or ``(B, 1, H, W)`` mask -> float ``(B, 1, H, W)`` on the image's device."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:] or mask.shape[0] != image.shape[0]:
        raise ValueError(
            f"mask must be (B, H, W) or (B, 1, H, W) matching images {tuple(image.shape)}, got {tuple(mask.shape)}"
        )
    return mask.to(device=image.device, dtype=torch.float32)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(
            "pred and target must both be (B, C, H, W) of the same shape, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image over the masked pixels: ``10 log10(range^2 / MSE)``.

    pred, target: ``(B, C, H, W)``; mask: ``(B, H, W)`` or ``(B, 1, H, W)``, bool or weights in [0, 1].
    Returns ``(B,)``; an image whose mask is empty raises, since its PSNR is undefined.
    """
    _check_pair(pred, target)
    weights = _mask_like(mask, pred)
    area = weights.sum(dim=(1, 2, 3)) * pred.shape[1]
    if (area == 0).any():
        raise ValueError("masked_psnr got an empty mask for at least one image; nothing to compare")
    squared_error = (pred.float() - target.float()).square() * weights
    mse = squared_error.sum(dim=(1, 2, 3)) / area
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def masked_ssim(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0, window_size: int = 11
) -> torch.Tensor:
    """SSIM per image, the kornia SSIM map (Gaussian window, sigma 1.5) averaged inside the mask.

    pred, target: ``(B, C, H, W)``; mask: ``(B, H, W)`` or ``(B, 1, H, W)``. Returns ``(B,)``. Computed in fp32.
    """
    _check_pair(pred, target)
    weights = _mask_like(mask, pred)
    area = weights.sum(dim=(1, 2, 3)) * pred.shape[1]
    if (area == 0).any():
        raise ValueError("masked_ssim got an empty mask for at least one image; nothing to compare")
    ssim_map = kornia.metrics.ssim(pred.float(), target.float(), window_size, max_val=float(data_range), eps=0.0)
    return (ssim_map * weights).sum(dim=(1, 2, 3)) / area


def landmark_nme(
    pred: torch.Tensor, target: torch.Tensor, normalisation: Literal["bbox", "interocular"] = "bbox"
) -> torch.Tensor:
    """Normalised mean error of 2D landmarks per face: mean point-to-point distance / a face size.

    pred, target: ``(B, L, 2)``. ``"bbox"``: size = sqrt(width * height) of the target landmarks' box
    (the AFLW2000-3D protocol 3DDFA reports); ``"interocular"``: distance between the outer eye corners,
    iBUG-68 points 36 and 45 (0-based), so L must be 68. Returns ``(B,)`` (a fraction; x100 for percent).
    """
    if pred.dim() != 3 or pred.shape != target.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred and target must both be (B, L, 2), got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.float(), target.float()
    error = (pred - target).norm(dim=-1).mean(dim=-1)
    if normalisation == "bbox":
        extent = target.amax(dim=1) - target.amin(dim=1)
        size = (extent[:, 0] * extent[:, 1]).sqrt()
    elif normalisation == "interocular":
        if target.shape[1] != 68:
            raise ValueError(f"interocular normalisation needs the 68 iBUG landmarks, got {target.shape[1]}")
        size = (target[:, 36] - target[:, 45]).norm(dim=-1)
    else:
        raise ValueError(f"normalisation must be 'bbox' or 'interocular', got {normalisation!r}")
    return error / size


# (conv output channels per block) of VGG16's feature extractor; LPIPS taps the ReLU after each block's last conv.
_VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class LPIPS(nn.Module):
    """LPIPS (VGG16) distance between images in [0, 1], optionally averaged inside a mask.

    Needs two user-supplied checkpoints (nothing is downloaded, torchvision is not used):
    ``vgg16_path``, a torchvision VGG16 state dict (keys ``features.{i}.weight/bias``, e.g.
    ``vgg16-397923af.pth``), and ``lpips_path``, the LPIPS linear heads of richzhang/PerceptualSimilarity
    (``lpips/weights/v0.1/vgg.pth``, keys ``lin{k}.model.1.weight`` of shape ``(1, C_k, 1, 1)``).
    """

    def __init__(self, vgg16_path: str | Path, lpips_path: str | Path) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        self.taps: list[int] = []
        for block_index, block in enumerate(_VGG16_BLOCKS):
            if block_index > 0:
                layers.append(nn.MaxPool2d(2, 2))
            for out_channels in block:
                layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
                in_channels = out_channels
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.heads = nn.ParameterList([nn.Parameter(torch.zeros(1, block[-1], 1, 1)) for block in _VGG16_BLOCKS])
        # the LPIPS input scaling: images in [-1, 1] are shifted and scaled to ImageNet-like statistics
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self._load(Path(vgg16_path), Path(lpips_path))
        self.requires_grad_(False)

    def _load(self, vgg16_path: Path, lpips_path: Path) -> None:
        vgg = read_state_dict(vgg16_path, "VGG16 backbone checkpoint", "save torchvision's vgg16 state dict on a machine that has it")
        features = {k.removeprefix("features."): v for k, v in vgg.items() if k.startswith("features.")}
        expected = self.features.state_dict()
        if features.keys() != expected.keys() or any(features[k].shape != expected[k].shape for k in expected):
            raise ValueError(
                f"{vgg16_path} is not a torchvision VGG16 state dict: expected keys features.0.weight .. "
                "features.28.bias with VGG16 shapes (torchvision's vgg16-397923af.pth)"
            )
        self.features.load_state_dict(features)
        heads = read_state_dict(lpips_path, "LPIPS linear heads", "download lpips/weights/v0.1/vgg.pth from github.com/richzhang/PerceptualSimilarity")
        for k, head in enumerate(self.heads):
            key = f"lin{k}.model.1.weight"
            if key not in heads or heads[key].shape != head.shape:
                raise ValueError(
                    f"{lpips_path} lacks {key} of shape {tuple(head.shape)}: pass the VGG variant of the LPIPS "
                    "weights (PerceptualSimilarity lpips/weights/v0.1/vgg.pth)"
                )
            head.data.copy_(heads[key])

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """pred, target: ``(B, 3, H, W)`` in [0, 1]; mask: optional ``(B, H, W)``.

        Returns ``(B,)`` distances (0 = identical).
        """
        _check_pair(pred, target)
        weights = None if mask is None else _mask_like(mask, pred)
        total = torch.zeros(pred.shape[0], device=pred.device)
        x = ((pred.float() * 2 - 1) - self.shift) / self.scale
        y = ((target.float() * 2 - 1) - self.shift) / self.scale
        heads_at_tap = dict(zip(self.taps, self.heads))
        for index, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if index not in heads_at_tap:
                continue
            difference = (_unit_channels(x) - _unit_channels(y)).square()
            distance = F.conv2d(difference, heads_at_tap[index])  # (B, 1, h, w)
            if weights is None:
                total = total + distance.mean(dim=(1, 2, 3))
            else:
                upsampled = F.interpolate(distance, size=pred.shape[-2:], mode="bilinear", align_corners=False)
                total = total + (upsampled * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1.0)
        return total


def _unit_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalise ``(B, C, h, w)`` features to unit length along C."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + eps)
