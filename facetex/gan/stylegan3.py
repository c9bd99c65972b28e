"""StyleGAN3 generator (configs T and R) in plain PyTorch.

Alias-free generator of Karras et al., "Alias-Free Generative Adversarial Networks" (NeurIPS 2021),
written so that its module tree, parameter and buffer names and shapes equal those of NVlabs'
``training/networks_stylegan3.py``: a ``state_dict`` taken from an official pickle (see
``facetex.gan.nvlabs_pickle``) loads strictly. 3D-GANTex uses config R (``stylegan3-r-ffhq-1024x1024``).

The pieces, in the paper's words:
  * ``MappingNetwork``: z -> w (2 layers for StyleGAN3), broadcast to ``num_ws`` rows (W+), truncation
    towards the tracked average ``w_avg``.
  * ``SynthesisInput``: Fourier features on a grid; their phases and frequencies are moved by a
    learned rotation/translation and by the user ``transform`` buffer (the inverse transform with
    respect to the image), which is how 3D-GANTex renders views in the original photo's framing.
  * ``SynthesisLayer``: modulated conv -> filtered leaky ReLU (upsample with ``up_filter``, bias +
    lrelu, downsample with ``down_filter``), with layer cutoffs/sampling rates in a geometric schedule.
  * ``SynthesisNetwork``: ``input``, ``L{i}_{size}_{channels}`` layers, the last one the ToRGB layer.

Everything runs in float32 (the filtered activation is the numerically sensitive part); NVlabs'
float16 layers and its CUDA kernel are speed-ups of the same maths, defined by their reference path,
which ``filtered_lrelu`` below reproduces (its upsampling as a transposed conv, which skips the
zero-inserted samples).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn

from facetex.gan.ops import upfirdn2d

LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2


# --------------------------------------------------------------------------- filters and resampling


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR filter; ``None`` stands for the identity (1 tap).

    Separable filters are 1-D ``(numtaps,)`` (scipy ``firwin``); radial ones (config R, alias-free
    under rotation) are a 2-D ``(numtaps, numtaps)`` jinc kernel with a separable Kaiser window,
    normalised to unit DC gain.
    """
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, got numtaps={numtaps}")
    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)
    positions = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    radius = np.hypot(*np.meshgrid(positions, positions))
    jinc = scipy.special.j1(2 * cutoff * (np.pi * radius)) / (np.pi * radius)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    kernel = jinc * np.outer(window, window)
    return torch.as_tensor(kernel / kernel.sum(), dtype=torch.float32)


def filtered_lrelu(x: torch.Tensor, up_filter: torch.Tensor | None, down_filter: torch.Tensor | None,
                   bias: torch.Tensor, up: int, down: int, padding: tuple[int, int, int, int],
                   gain: float = LRELU_GAIN, slope: float = LRELU_SLOPE,
                   clamp: float | None = None) -> torch.Tensor:
    """Alias-free nonlinearity: bias, upsample ``up``x, leaky ReLU at the high rate, downsample.

    x: ``(B, C, H, W)`` -> ``(B, C, H', W')``; filters ``(k,)`` separable, ``(k, k)`` full or
    ``None`` (identity); padding ``(x0, x1, y0, y1)`` on the upsampled grid. Maths of NVlabs'
    ``_filtered_lrelu_ref``: the upsampling filter carries gain ``up**2`` (zero insertion keeps
    1/up^2 of the DC level), the activation is ``lrelu(x, slope) * gain`` clamped to
    ``[-clamp, clamp]``.
    """
    identity = torch.ones(1, dtype=x.dtype, device=x.device)
    x = x + bias.to(x.dtype).view(1, -1, 1, 1)
    if up_filter is None:
        x = upfirdn2d(x, identity * up, up=up, pad=padding)
    else:
        x = upsample_polyphase(x, up_filter * up ** up_filter.ndim, up, padding)  # gain up**2 over both axes
    x = F.leaky_relu(x, slope) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, identity if down_filter is None else down_filter, down=down)


def upsample_polyphase(x: torch.Tensor, kernel: torch.Tensor, up: int,
                       padding: tuple[int, int, int, int]) -> torch.Tensor:
    """``upfirdn2d(x, kernel, up=up, pad=padding)`` as a strided transposed convolution.

    Zero insertion followed by a K-tap filter wastes (up-1)/up of the multiplications on zeros; the
    transposed conv skips them and yields the full convolution, which is then cropped/padded to the
    upfirdn2d window. x: ``(B, C, H, W)``; kernel ``(K,)`` separable or ``(Kh, Kw)``.
    """
    _, channels, height, width = x.shape
    kernel = kernel.to(x.dtype)
    if kernel.ndim == 1:
        taps = kernel.numel()
        x = F.conv_transpose2d(x, kernel.view(1, 1, 1, taps).expand(channels, 1, 1, taps), stride=(1, up),
                               groups=channels)
        x = F.conv_transpose2d(x, kernel.view(1, 1, taps, 1).expand(channels, 1, taps, 1), stride=(up, 1),
                               groups=channels)
        kernel_h = kernel_w = taps
    else:
        kernel_h, kernel_w = kernel.shape
        x = F.conv_transpose2d(x, kernel[None, None].expand(channels, 1, kernel_h, kernel_w), stride=up,
                               groups=channels)
    # upfirdn2d output j is full-convolution sample j + K - 1 - pad_before; it has H*up + pads - K + 1 samples.
    x0, x1, y0, y1 = padding
    start_y, start_x = kernel_h - 1 - y0, kernel_w - 1 - x0
    length_y = height * up + y0 + y1 - kernel_h + 1
    length_x = width * up + x0 + x1 - kernel_w + 1
    return F.pad(x, [-start_x, start_x + length_x - x.shape[3], -start_y, start_y + length_y - x.shape[2]])


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                     padding: int, input_gain: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN3's per-sample modulated convolution as one grouped conv.

    Differs from ``facetex.gan.ops.modulated_conv2d`` (StyleGAN2) by the RMS pre-normalisation, the
    input gain and the explicit ("full", growing) padding that the filtered activation then crops.

    x: ``(B, I, H, W)``; weight: ``(O, I, k, k)``; styles: ``(B, I)`` -> ``(B, O, H', W')``.
    With ``demodulate`` the weight and styles are first normalised by their RMS (fp16-safe
    pre-normalisation of StyleGAN3), then each output filter is scaled to unit norm.
    ``input_gain`` (scalar) rescales the input channels (StyleGAN3's ``magnitude_ema`` rsqrt).
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.view(batch, 1, in_channels, 1, 1)  # (B, O, I, k, k)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().view(batch, out_channels, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    x = F.conv2d(x, w.reshape(batch * out_channels, in_channels, kh, kw).to(x.dtype),
                 padding=padding, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


# --------------------------------------------------------------------------- mapping


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer, ``(N, in) -> (N, out)``, optional leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_multiplier: float = 1.0, weight_init: float = 1.0,
                 bias_init: float | list[float] = 0.0) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"activation must be 'linear' or 'lrelu', got {activation!r}")
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (weight_init / lr_multiplier))
        bias = torch.as_tensor(np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features]).copy())
        self.bias = nn.Parameter(bias / lr_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight.to(x.dtype) * self.weight_gain, self.bias.to(x.dtype) * self.bias_gain)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        return x


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    """Scale each row of ``(N, D)`` to unit mean square."""
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(nn.Module):
    """z ``(B, z_dim)`` (+ label c ``(B, c_dim)``) -> W+ ``(B, num_ws, w_dim)``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, w_dim)
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for idx in range(num_layers):
            self.add_module(f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                                            lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """W+ rows; rows before ``truncation_cutoff`` (all by default) are pulled towards ``w_avg``.

        ``update_emas`` (NVlabs' training-time tracking of ``w_avg``) must stay False: this port is for inference.
        """
        if update_emas:
            raise ValueError("update_emas=True tracks w_avg during training; this StyleGAN3 is for inference")
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be (B, {self.z_dim}), got {tuple(z.shape)}")
        x = _normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"this generator is conditional: pass c of shape (B, {self.c_dim})")
            x = torch.cat([x, _normalize_2nd_moment(self.embed(c.to(torch.float32)))], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


# --------------------------------------------------------------------------- synthesis


class SynthesisInput(nn.Module):
    """Fourier features ``(B, channels, size, size)`` whose frame follows w and ``transform``."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        freqs = torch.randn(channels, 2)  # uniform-ish on a disc of radius `bandwidth`
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0.0, bias_init=[1.0, 0.0, 0.0, 0.0])
        self.register_buffer("transform", torch.eye(3))  # inverse transform w.r.t. the image
        self.register_buffer("freqs", freqs)  # (channels, 2), cycles per image width
        self.register_buffer("phases", torch.rand(channels) - 0.5)  # (channels,), in cycles

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        batch = w.shape[0]
        t = self.affine(w)  # (B, 4) = (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=w.device, dtype=w.dtype).expand(batch, 3, 3)
        rotation = eye.clone()
        rotation[:, 0, 0], rotation[:, 0, 1] = t[:, 0], -t[:, 1]
        rotation[:, 1, 0], rotation[:, 1, 1] = t[:, 1], t[:, 0]
        translation = eye.clone()
        translation[:, 0, 2], translation[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = rotation @ translation @ self.transform.to(w.dtype)  # (B, 3, 3)

        phases = self.phases.unsqueeze(0) + (self.freqs @ transforms[:, :2, 2:]).squeeze(2)  # (B, C)
        freqs = self.freqs @ transforms[:, :2, :2]  # (B, C, 2)
        # Frequencies pushed past the band by the user transform fade out instead of aliasing.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)  # (B, C)

        extent = 0.5 * self.size / self.sampling_rate  # half the grid's width in image units
        theta = torch.tensor([[extent, 0.0, 0.0], [0.0, extent, 0.0]], device=w.device, dtype=w.dtype)
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)  # (1, S, S, 2)
        x = torch.einsum("hwk,bck->bhwc", grid[0], freqs) + phases[:, None, None, :]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]  # (B, S, S, C)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU between two sampling rates; ``is_torgb``: the RGB output."""

    def __init__(self, w_dim: int, is_torgb: bool, is_critically_sampled: bool,
                 in_channels: int, out_channels: int, in_size: int, out_size: int,
                 in_sampling_rate: int, out_sampling_rate: int, in_cutoff: float, out_cutoff: float,
                 in_half_width: float, out_half_width: float, conv_kernel: int = 3, filter_size: int = 6,
                 lrelu_upsampling: int = 2, use_radial_filters: bool = False,
                 conv_clamp: float | None = 256) -> None:
        super().__init__()
        self.is_torgb = is_torgb
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size, self.out_size = in_size, out_size
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = _exact_ratio(tmp_sampling_rate, in_sampling_rate)
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(
            up_taps, in_cutoff, in_half_width * 2, tmp_sampling_rate))
        self.down_factor = _exact_ratio(tmp_sampling_rate, out_sampling_rate)
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.register_buffer("down_filter", design_lowpass_filter(
            down_taps, out_cutoff, out_half_width * 2, tmp_sampling_rate,
            radial=use_radial_filters and not is_critically_sampled))

        # Padding that lands the output grid on out_size samples, centred as in Appendix C.3.
        pad_total = (out_size - 1) * self.down_factor + 1
        pad_total -= (in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += up_taps + down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = (pad_lo, pad_hi, pad_lo, pad_hi)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: ``(B, in_channels, in_size, in_size)``, w: ``(B, w_dim)`` -> ``(B, out_channels, out_size, out_size)``."""
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_channels * self.conv_kernel ** 2)
        x = modulated_conv2d(x, self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt())
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, self.up_factor, self.down_factor,
                              self.padding, gain=1.0 if self.is_torgb else LRELU_GAIN,
                              slope=1.0 if self.is_torgb else LRELU_SLOPE, clamp=self.conv_clamp)


def _exact_ratio(numerator: float, denominator: float) -> int:
    """Integer resampling factor between two sampling rates; they must be exact multiples."""
    factor = int(np.rint(numerator / denominator))
    if denominator * factor != numerator:
        raise ValueError(f"sampling rates {numerator} and {denominator} are not integer multiples")
    return factor


class SynthesisNetwork(nn.Module):
    """W+ ``(B, num_layers + 2, w_dim)`` -> image ``(B, img_channels, R, R)``, roughly in [-1, 1]."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_layers: int = 14, num_critical: int = 2,
                 first_cutoff: float = 2, first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3,
                 margin_size: int = 10, output_scale: float = 0.25, **layer_kwargs: Any) -> None:
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_layers + 2
        self.output_scale = output_scale

        # Geometric schedule of cutoffs f_c and minimum stopbands f_t from the first to the last layer.
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(w_dim, int(channels[0]), int(sizes[0]), sampling_rates[0], cutoffs[0])
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim, is_torgb=idx == num_layers, is_critically_sampled=idx >= num_layers - num_critical,
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]), **layer_kwargs)
            name = f"L{idx}_{layer.out_size}_{layer.out_channels}"
            self.add_module(name, layer)
            self.layer_names.append(name)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool = True,
                update_emas: bool = False) -> torch.Tensor:
        """W+ -> image. NVlabs' keywords and defaults are accepted: StyleGAN3 has no noise inputs (every
        ``noise_mode`` gives the same image) and runs in float32 here."""
        if noise_mode not in ("random", "const", "none") or update_emas:
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none' and update_emas False, got "
                             f"{noise_mode!r}, {update_emas!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        rows = ws.to(torch.float32).unbind(dim=1)
        x = self.input(rows[0])
        for name, w in zip(self.layer_names, rows[1:]):
            x = getattr(self, name)(x, w)
        return x * self.output_scale


class Generator(nn.Module):
    """StyleGAN3 generator: ``mapping`` (z -> W+) and ``synthesis`` (W+ -> image).

    Keyword arguments are NVlabs' ``Generator`` init kwargs (as stored in its pickles); the synthesis
    and layer ones (``channel_base``, ``conv_kernel``, ``use_radial_filters``, ...) pass through
    ``synthesis_kwargs``. Use ``stylegan3_config`` for the T and R presets.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict[str, Any] | None = None, **synthesis_kwargs: Any) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))

    @property
    def n_latent(self) -> int:
        """Rows of W+ (16 at 1024 px), the name the inversion code shares with StyleGAN2."""
        return self.num_ws

    @property
    def style_dim(self) -> int:
        """Width of one W row (512 for FFHQ)."""
        return self.w_dim

    @torch.no_grad()
    def mean_latent(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """Average w over ``n`` random z, ``(1, w_dim)``, as ``facetex.gan.stylegan2.Generator.mean_latent``.

        A trained pickle also carries the average tracked during training, ``mapping.w_avg``, which
        the mapping's truncation uses.
        """
        if self.c_dim > 0:
            raise ValueError("mean_latent of a conditional generator needs labels; average mapping(z, c) yourself")
        device = self.mapping.w_avg.device
        z = torch.randn(n, self.z_dim, generator=rng, device=rng.device if rng is not None else device)
        return self.mapping(z.to(device))[:, 0].mean(dim=0, keepdim=True)

    @torch.no_grad()
    def set_input_transform(self, matrix: torch.Tensor | np.ndarray) -> None:
        """Write a 3x3 inverse image transform into ``synthesis.input.transform``.

        Coordinates are in image units (the image spans [-0.5, 0.5], x right, y down); to move the content by
        ``(dx, dy)`` image widths, pass the inverse of ``[[1, 0, dx], [0, 1, dy], [0, 0, 1]]``.
        """
        matrix = torch.as_tensor(matrix, dtype=torch.float32)
        if matrix.shape != (3, 3) or not torch.isfinite(matrix).all():
            raise ValueError(f"the input transform must be a finite 3x3 matrix, got shape {tuple(matrix.shape)}")
        self.synthesis.input.transform.copy_(matrix)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False, **synthesis_kwargs: Any) -> torch.Tensor:
        """z ``(B, z_dim)`` -> image ``(B, img_channels, R, R)``, NVlabs' call (``noise_mode``, ``force_fp32``)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)


def stylegan3_config(config: str) -> dict[str, Any]:
    """NVlabs ``train.py`` generator kwargs of config ``'t'`` or ``'r'`` (R: 1x1 convs, doubled
    channels, radial filters); merge with ``z_dim``/``img_resolution``/... to build a ``Generator``."""
    base = {"channel_base": 32768, "channel_max": 512, "mapping_kwargs": {"num_layers": 2}}
    if config.lower() == "t":
        return base
    if config.lower() == "r":
        return {**base, "channel_base": 65536, "channel_max": 1024, "conv_kernel": 1, "use_radial_filters": True}
    raise ValueError(f"unknown StyleGAN3 config {config!r}: use 't' or 'r'")
