"""ReStyle encoder (Alaluf et al., ICCV 2021): iterative W+ refinement with a pSp-style network.

ReStyle feeds the encoder the target image concatenated with the current reconstruction (6
channels) and predicts a *residual* in W+: ``w_{t+1} = w_t + E(x, y_t)``, ``y_{t+1} = G(w_{t+1})``,
starting from the average latent and its image (``w_0 = w_avg``, ``y_0 = G(w_avg)``). Training
(ReStyle's coach) back-propagates each step's loss into the encoder only: the previous code and
reconstruction enter the next step detached.

The network is ReStyle's ``BackboneEncoder``: an input layer (3x3 conv, BatchNorm, PReLU), a body of
IR-SE bottleneck units (ArcFace's improved residual unit with squeeze-excitation) that halves the
resolution at every stage, and one ``GradualStyleBlock`` per W+ row that reduces the final feature
map to a vector with stride-2 convolutions and an equalised linear layer. ``backbone="ir_se50"``
builds the official layout (stages 64-128-256-512 channels with 3-4-14-3 units, input 256 px, a
16x16 final map) under ReStyle's module names (``input_layer``, ``body.{i}.res_layer``,
``styles.{j}.convs``/``linear``), so the ``encoder.``-prefixed tensors of an official ReStyle checkpoint
load strictly (``facetex.gan.restyle_checkpoint``). ``progressive=True`` is ReStyle-e4e's
``ProgressiveBackboneEncoder``: row 0's head gives a base code repeated on every row, and each other
head adds its row's offset. ``backbone="small"`` keeps the same structure with narrow stages and one
unit each, small enough to train on a CPU in tests.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facetex.gan.latent_generator import LatentGenerator
from facetex.gan.stylegan2 import EqualLinear

Stage = tuple[int, int, int]
"""(input channels, output channels, units) of one body stage; its first unit has stride 2."""

IR_SE50_STAGES: tuple[Stage, ...] = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
SMALL_STAGES: tuple[Stage, ...] = ((16, 16, 1), (16, 32, 1), (32, 64, 1), (64, 64, 1))
Backbone = Literal["small", "ir_se50"]
Resize = Literal["bilinear", "area"]


class SEModule(nn.Module):
    """Squeeze-excitation: rescale channels by a gate computed from their global average, (B, C, H, W)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """IR-SE unit: ``shortcut(x) + [BN, conv3x3, PReLU, conv3x3/stride, BN, SE](x)``, (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(self, in_channels: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut_layer(x) + self.res_layer(x)


def ir_se_body(stages: Sequence[Stage]) -> nn.Sequential:
    """The IR-SE units of all stages in one flat ``Sequential`` (the official ``body.{i}`` numbering)."""
    units: list[nn.Module] = []
    for in_channels, depth, num_units in stages:
        if num_units < 1:
            raise ValueError(f"every stage needs at least one unit, got {stages}")
        units.append(BottleneckIRSE(in_channels, depth, stride=2))
        units.extend(BottleneckIRSE(depth, depth, stride=1) for _ in range(num_units - 1))
    return nn.Sequential(*units)


def input_layer(in_channels: int, width: int) -> nn.Sequential:
    """3x3 conv (no bias), BatchNorm and PReLU: (B, in_channels, H, W) -> (B, width, H, W)."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.PReLU(width))


class GradualStyleBlock(nn.Module):
    """pSp's map-to-style head: log2(spatial) stride-2 convs to 1x1, then an equalised linear layer.

    (B, in_channels, spatial, spatial) -> (B, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, spatial: int) -> None:
        super().__init__()
        num_pools = int(math.log2(spatial))
        if spatial < 2 or 2**num_pools != spatial:
            raise ValueError(f"the style heads need a square feature map of power-of-two side >= 2, got {spatial}")
        layers: list[nn.Module] = []
        for index in range(num_pools):
            layers += [nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.convs(x).flatten(1))


def as_w_plus(latent: Tensor, n_latent: int, style_dim: int) -> Tensor:
    """A code given as (D,), (1, D), (n_latent, D) or (1, n_latent, D) -> (1, n_latent, D)."""
    if latent.shape[-1] != style_dim or latent.numel() not in (style_dim, n_latent * style_dim):
        raise ValueError(f"latent_avg must hold one w of width {style_dim} or {n_latent} of them, "
                         f"got shape {tuple(latent.shape)}")
    return latent.reshape(1, -1, style_dim).expand(1, n_latent, style_dim)


class ReStyleEncoder(nn.Module):
    """Predicts a W+ residual ``(B, n_latent, style_dim)`` from ``concat(image, reconstruction)``.

    Args:
        n_latent: W+ rows of the generator (18 for a 1024 px StyleGAN2, 16 for StyleGAN3).
        style_dim: width of w (512 for the released models).
        backbone: ``"ir_se50"`` (ReStyle's network, input 256 px) or ``"small"`` (narrow, for tests).
        input_size: side the image and reconstruction are resized to; the final map is input_size / 16.
        stages: body stages overriding the backbone preset, each ``(in, out, units)``.
        progressive: ReStyle-e4e's head layout (``w_j = head_0(f) + head_j(f)`` for j > 0) instead of pSp's
            (``w_j = head_j(f)``).
        reconstruction_resize: how the reconstruction is brought to ``input_size``: ``"area"`` is ReStyle's
            ``face_pool`` (adaptive average pooling), ``"bilinear"`` the antialiased resize of the image.
    """

    def __init__(self, n_latent: int, style_dim: int, backbone: Backbone = "small", input_size: int | None = None,
                 stages: Sequence[Stage] | None = None, progressive: bool = False,
                 reconstruction_resize: Resize = "bilinear") -> None:
        super().__init__()
        presets = {"small": (SMALL_STAGES, 64), "ir_se50": (IR_SE50_STAGES, 256)}
        if backbone not in presets:
            raise ValueError(f"backbone must be one of {sorted(presets)}, got {backbone!r}")
        preset_stages, preset_size = presets[backbone]
        stages = tuple(tuple(stage) for stage in (stages or preset_stages))  # type: ignore[misc]
        if reconstruction_resize not in ("bilinear", "area"):
            raise ValueError(f"reconstruction_resize must be 'bilinear' or 'area', got {reconstruction_resize!r}")
        self.n_latent, self.style_dim = n_latent, style_dim
        self.progressive, self.reconstruction_resize = progressive, reconstruction_resize
        self.iterations: int | None = None  # refinement steps of an official release (its opts), when known
        self.input_size = input_size or preset_size
        spatial = self.input_size // 2 ** len(stages)
        if spatial * 2 ** len(stages) != self.input_size:
            raise ValueError(f"input_size {self.input_size} must be divisible by 2^{len(stages)} (one halving per stage)")
        self.input_layer = input_layer(6, stages[0][0])
        self.body = ir_se_body(stages)
        self.styles = nn.ModuleList(GradualStyleBlock(stages[-1][1], style_dim, spatial) for _ in range(n_latent))

    def encoder_input(self, images: Tensor, reconstruction: Tensor) -> Tensor:
        """Target and current reconstruction, both (B, 3, H, W) in [-1, 1] -> (B, 6, S, S) at ``input_size``."""
        size = (self.input_size, self.input_size)
        resized = [x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", antialias=True,
                                                                  align_corners=False)
                   for x in (images, reconstruction)]
        if self.reconstruction_resize == "area" and reconstruction.shape[-2:] != size:
            resized[1] = F.adaptive_avg_pool2d(reconstruction, size)
        return torch.cat(resized, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 6, input_size, input_size) -> W+ residual (B, n_latent, style_dim)."""
        features = self.body(self.input_layer(x))
        rows = torch.stack([head(features) for head in self.styles], dim=1)
        if self.progressive:  # e4e: the first head's code on every row, plus the other heads' offsets
            return rows[:, :1] + torch.cat([torch.zeros_like(rows[:, :1]), rows[:, 1:]], dim=1)
        return rows

    def refinement_steps(self, generator: LatentGenerator, images: Tensor, steps: int,
                         latent_avg: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(w_t (B, n_latent, D), y_t = G(w_t) (B, 3, R, R))`` for t = 1..steps.

        ``images`` (B, 3, H, W) in [-1, 1]; ``latent_avg`` the start code (see :func:`as_w_plus`).
        Gradients reach the encoder through this step's residual only (ReStyle's training).
        """
        if steps < 1:
            raise ValueError(f"ReStyle needs at least one refinement step, got {steps}")
        if (generator.n_latent, generator.style_dim) != (self.n_latent, self.style_dim):
            raise ValueError(f"the encoder predicts W+ of ({self.n_latent}, {self.style_dim}) but the generator takes "
                             f"({generator.n_latent}, {generator.style_dim}); build it with the generator's sizes")
        batch = images.shape[0]
        w = as_w_plus(latent_avg, self.n_latent, self.style_dim).to(images)
        with torch.no_grad():
            y = generator.synthesis(w, noise_mode="const").expand(batch, -1, -1, -1)
        w = w.expand(batch, -1, -1)
        for _ in range(steps):
            w = w.detach() + self(self.encoder_input(images, y.detach()))
            y = generator.synthesis(w, noise_mode="const")
            yield w, y

    @torch.no_grad()
    def invert(self, generator: LatentGenerator, images: Tensor, steps: int = 3, *, latent_avg: Tensor) -> list[Tensor]:
        """W+ codes after each of ``steps`` refinements, each (B, n_latent, style_dim), from ``w_0 = latent_avg``.

        ``latent_avg``: the generator's average w (``generator.mean_latent(n)`` or a checkpoint's ``latent_avg``).
        """
        return [w for w, _ in self.refinement_steps(generator, images, steps, latent_avg)]
