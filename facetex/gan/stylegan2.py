"""StyleGAN2 config-f generator (Karras et al., CVPR 2020) in rosinality/stylegan2-pytorch's layout.

Module names and parameter shapes follow rosinality's ``model.py`` so its ``g_ema`` state dicts load
with ``strict=True``::

    style.{1..n_mlp}.{weight, bias}              mapping MLP (index 0 is PixelNorm), lr_mul 0.01
    input.input                                  (1, C4, 4, 4) learned constant
    conv1.*, to_rgb1.*                           the 4x4 layer and its RGB output
    convs.{i}.conv.{weight, modulation.*}        weight (1, O, I, 3, 3); even i upsample (+ blur.kernel)
    convs.{i}.noise.weight, convs.{i}.activate.bias
    to_rgbs.{i}.{conv.*, bias, upsample.kernel}  skip-connection RGB outputs
    noises.noise_{i}                             (1, 1, r, r) fixed noise images for noise_mode="const"

Every layer uses equalised learning rate (weights stored N(0, 1), scaled by 1/sqrt(fan_in) at run
time). ``synthesis`` takes W+ codes ``(B, n_latent, style_dim)`` with ``n_latent = 2 log2(size) - 2``
(18 at 1024 px) and returns images in about [-1, 1].
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facetex.gan.ops import fused_leaky_relu, modulated_conv2d, setup_filter, upfirdn2d

NoiseMode = Literal["const", "random", "none"]
DEFAULT_BLUR_KERNEL = (1, 3, 3, 1)


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square over its features: (B, D) -> (B, D)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.float().square().mean(dim=1, keepdim=True) + 1e-8).to(x.dtype)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; ``lr_mul`` slows the mapping network (0.01)."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


def clamp_activation(x: Tensor, conv_clamp: float | None) -> Tensor:
    """NVlabs' ``bias_act(..., clamp=conv_clamp)``: the layer output clipped to ``[-conv_clamp, conv_clamp]``."""
    return x if conv_clamp is None else x.clamp(-conv_clamp, conv_clamp)


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias, leaky ReLU (0.2) and gain sqrt(2), then NVlabs' optional clamp."""

    def __init__(self, channels: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.conv_clamp = conv_clamp

    def forward(self, x: Tensor) -> Tensor:
        return clamp_activation(fused_leaky_relu(x, self.bias), self.conv_clamp)


class Blur(nn.Module):
    """FIR low-pass after a transposed convolution (buffer ``kernel``, scaled by up^2)."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", setup_filter(taps, gain=float(upsample_factor**2)))
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip image: (B, 3, H, W) -> (B, 3, 2H, 2W)."""

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", setup_filter(taps, gain=float(factor**2)))
        excess = len(taps) - factor
        self.pad = ((excess + 1) // 2 + factor - 1, excess // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated (and demodulated) convolution; ``upsample`` doubles the resolution.

    ``modulation`` maps w (B, style_dim) to per-input-channel scales s (B, I), initialised at 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:  # pads that make transposed-conv (2H + k - 2) + blur give exactly 2H
            excess = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((excess + 1) // 2 + 1, excess // 2 + 1), upsample_factor=2)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """x (B, I, H, W), w (B, style_dim) -> (B, O, H, W) or (B, O, 2H, 2W)."""
        styles = self.modulation(w)
        weight = self.scale * self.weight[0]
        if self.upsample:
            return modulated_conv2d(
                x, weight, styles, self.demodulate, upsample=True, blur_kernel=self.blur.kernel, blur_pad=self.blur.pad
            )
        return modulated_conv2d(x, weight, styles, self.demodulate)


class NoiseInjection(nn.Module):
    """Adds per-pixel noise (B, 1, H, W) scaled by one learned strength."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis network starts from, (1, C, 4, 4)."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated 3x3 conv, noise injection, bias + leaky ReLU: one synthesis layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels, conv_clamp)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation, clamped as NVlabs' ToRGB) added to the upsampled previous RGB."""

    def __init__(
        self, in_channels: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        rgb = clamp_activation(self.conv(x, w) + self.bias, self.conv_clamp)
        return rgb if skip is None else rgb + self.upsample(skip)


def stylegan2_channels(
    resolution: int, channel_multiplier: int = 2, channel_max: int = 512, channel_base: int = 16384
) -> int:
    """Feature channels at ``resolution``: ``min(channel_max, channel_base * channel_multiplier / res)``.

    The defaults reproduce rosinality's table (512 up to 32 px, then 256*m at 64 px ... 16*m at 1024 px);
    smaller ``channel_max``/``channel_base`` give the tiny generators used in tests.
    """
    return min(channel_max, channel_base * channel_multiplier // resolution)


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> w) and ``synthesis`` (W+ -> image).

    Args:
        size: output resolution, a power of two >= 8.
        style_dim: width of z and w (512 for the released models).
        n_mlp: mapping layers (8 for the released models).
        channel_multiplier: 2 for config-f, 1 for the smaller config.
        blur_kernel: FIR taps of every resampling filter.
        lr_mlp: learning-rate multiplier of the mapping network.
        channel_max, channel_base: see :func:`stylegan2_channels`.
        conv_clamp: NVlabs' clamp of every layer output (256 in its released configs; None: no clamp, as
            rosinality). Read from an NVlabs pickle's ``synthesis_kwargs``.
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        lr_mlp: float = 0.01,
        channel_max: int = 512,
        channel_base: int = 16384,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"StyleGAN2 size must be a power of two >= 8, got {size}")
        if n_mlp < 1:
            raise ValueError(f"n_mlp must be >= 1, got {n_mlp}")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.conv_clamp = conv_clamp
        self.channel_multiplier = channel_multiplier
        self.log_size = int(math.log2(size))
        self.num_layers = 2 * (self.log_size - 2) + 1
        self.n_latent = 2 * self.log_size - 2
        self.channels = {
            2**res: stylegan2_channels(2**res, channel_multiplier, channel_max, channel_base)
            for res in range(2, self.log_size + 1)
        }

        self.style = nn.Sequential(
            PixelNorm(), *(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp))
        )
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], style_dim, blur_kernel=blur_kernel,
                                conv_clamp=conv_clamp)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False, blur_kernel=blur_kernel, conv_clamp=conv_clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = self.channels[4]
        for res in range(3, self.log_size + 1):
            out_channels = self.channels[2**res]
            self.convs.append(StyledConv(in_channels, out_channels, style_dim, upsample=True, blur_kernel=blur_kernel,
                                         conv_clamp=conv_clamp))
            self.convs.append(StyledConv(out_channels, out_channels, style_dim, blur_kernel=blur_kernel,
                                         conv_clamp=conv_clamp))
            self.to_rgbs.append(ToRGB(out_channels, style_dim, blur_kernel=blur_kernel, conv_clamp=conv_clamp))
            in_channels = out_channels
        self.noises = nn.Module()
        for layer_idx, shape in enumerate(self.noise_shapes()):
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, *shape))

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """(1, r, r) of each layer's noise image: 4x4 once, then two per resolution up to ``size``."""
        return [(1, 2 ** ((idx + 5) // 2), 2 ** ((idx + 5) // 2)) for idx in range(self.num_layers)]

    def make_noise(self, batch: int = 1) -> list[Tensor]:
        """Fresh N(0, 1) noise images, one (batch, 1, r, r) per layer, on the generator's device."""
        device = self.input.input.device
        return [torch.randn(batch, *shape, device=device) for shape in self.noise_shapes()]

    def mapping(self, z: Tensor) -> Tensor:
        """z (B, style_dim) -> w (B, style_dim)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int, rng: torch.Generator | None = None) -> Tensor:
        """Average w over ``n`` random z, the truncation centre: (1, style_dim)."""
        device = self.input.input.device
        z = torch.randn(n, self.style_dim, generator=rng, device=rng.device if rng is not None else device)
        return self.mapping(z.to(device)).mean(dim=0, keepdim=True)

    def synthesis(self, ws: Tensor, noise_mode: NoiseMode = "random", noise: Sequence[Tensor] | None = None) -> Tensor:
        """W+ codes (B, n_latent, style_dim) -> RGB (B, 3, size, size).

        ``noise_mode``: "random" (the default, as NVlabs' ``synthesis`` and rosinality's ``randomize_noise``) draws
        new noise, "const" uses the stored ``noises`` buffers (deterministic), "none" adds none. ``noise`` (one
        (B or 1, 1, r, r) per layer) overrides the mode.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"ws must be (B, {self.n_latent}, {self.style_dim}), got {tuple(ws.shape)}")
        noise = self._layer_noise(noise_mode, noise)
        x = self.conv1(self.input(ws.shape[0]), ws[:, 0], noise[0])
        skip = self.to_rgb1(x, ws[:, 1])
        for block in range(len(self.to_rgbs)):
            i = 2 * block + 1  # first w row of this resolution; its ToRGB shares the next block's first row
            x = self.convs[2 * block](x, ws[:, i], noise[i])
            x = self.convs[2 * block + 1](x, ws[:, i + 1], noise[i + 1])
            skip = self.to_rgbs[block](x, ws[:, i + 2], skip)
        return skip

    def _layer_noise(self, noise_mode: NoiseMode, noise: Sequence[Tensor] | None) -> list[Tensor | None]:
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"noise must hold {self.num_layers} images, got {len(noise)}")
            return list(noise)
        if noise_mode == "const":
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if noise_mode == "random":
            return [None] * self.num_layers
        if noise_mode == "none":
            return [torch.zeros_like(getattr(self.noises, f"noise_{i}")) for i in range(self.num_layers)]
        raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")

    def forward(
        self,
        styles: Tensor,
        input_is_latent: bool = False,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        noise_mode: NoiseMode = "random",
    ) -> Tensor:
        """z (B, D), or with ``input_is_latent`` w (B, D) / W+ (B, n_latent, D) -> image (B, 3, size, size).

        Truncation moves w toward ``truncation_latent`` (B or 1, D): ``w' = w_avg + psi (w - w_avg)``.
        """
        w = styles if input_is_latent else self.mapping(styles)
        if truncation != 1.0:
            if truncation_latent is None:
                raise ValueError("truncation != 1 needs truncation_latent (e.g. generator.mean_latent(4096))")
            avg = truncation_latent.reshape(-1, *([1] * (w.ndim - 2)), self.style_dim)
            w = avg + truncation * (w - avg)
        if w.ndim == 2:
            w = w.unsqueeze(1).expand(-1, self.n_latent, -1)
        return self.synthesis(w, noise_mode=noise_mode)
