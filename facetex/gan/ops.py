"""StyleGAN's low-level operators in plain PyTorch (CPU and CUDA, autograd and double-backward).

* ``upfirdn2d``: upsample by zero insertion, pad (negative = crop), FIR-filter, downsample; the
  resampling primitive of StyleGAN2/3 (Karras et al.), with NVlabs' and rosinality's semantics:
  the kernel is applied as a true convolution (flipped before ``conv2d``'s correlation).
* ``setup_filter``: taps -> normalised 2-D (or separable 1-D) FIR kernel.
* ``fused_leaky_relu``: bias + leaky ReLU (slope 0.2) + gain sqrt(2), StyleGAN's activation.
* ``modulated_conv2d``: weight modulation by per-sample styles, optional demodulation, and the
  grouped (one group per sample) convolution, with the transposed-conv + blur path for 2x upsampling.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LEAKY_RELU_SLOPE = 0.2
LEAKY_RELU_GAIN = math.sqrt(2.0)
DEMODULATION_EPS = 1e-8


def _parse_padding(pad: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``pad`` as int, ``(p0, p1)`` (both axes) or ``(x0, x1, y0, y1)`` -> ``(x0, x1, y0, y1)``."""
    if isinstance(pad, int):
        return pad, pad, pad, pad
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad  # type: ignore[return-value]
    raise ValueError(f"pad must be an int, (p0, p1) or (x0, x1, y0, y1); got {pad}")


def setup_filter(
    taps: Sequence[float] | Tensor,
    normalize: bool = True,
    gain: float = 1.0,
    separable: bool = False,
) -> Tensor:
    """FIR kernel for :func:`upfirdn2d` from 1-D taps (or a ready 2-D kernel).

    1-D taps become the outer product ``k k^T`` (rosinality's ``make_kernel``) unless
    ``separable`` keeps them 1-D. ``normalize`` makes the 2-D kernel sum to 1, then the kernel is
    multiplied by ``gain`` (for 2x upsampling use ``gain=4`` to keep the signal's magnitude).
    Returns float32 ``(k, k)`` or, separable, ``(k,)``.
    """
    kernel = torch.as_tensor(taps, dtype=torch.float32)
    if kernel.ndim not in (1, 2) or kernel.numel() == 0:
        raise ValueError(f"filter taps must be a non-empty 1-D or 2-D array, got shape {tuple(kernel.shape)}")
    if separable and kernel.ndim != 1:
        raise ValueError("separable=True needs 1-D taps")
    if kernel.ndim == 1 and not separable:
        kernel = torch.outer(kernel, kernel)
    if normalize:  # 1-D taps summing to 1 give a separable 2-D kernel summing to 1
        kernel = kernel / kernel.sum()
    return kernel * gain ** (kernel.ndim / 2)


def upfirdn2d(
    x: Tensor,
    kernel: Tensor,
    up: int = 1,
    down: int = 1,
    pad: int | Sequence[int] = (0, 0, 0, 0),
) -> Tensor:
    """Upsample, pad, FIR-filter and downsample every channel of ``x`` (N, C, H, W).

    ``kernel`` (kh, kw) is a 2-D FIR filter, or (k,) a separable one applied along x then y.
    Output height ``(H*up + y0 + y1 - kh) // down + 1`` (width alike). Zero insertion puts input
    pixel i at position ``i*up``; negative pads crop. The filter is convolved (flipped), so an
    asymmetric kernel acts exactly as in NVlabs' and rosinality's CUDA op.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape (N, C, H, W), got {tuple(x.shape)}")
    if kernel.ndim not in (1, 2):
        raise ValueError(f"upfirdn2d expects a 1-D or 2-D kernel, got shape {tuple(kernel.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    x0, x1, y0, y1 = _parse_padding(pad)
    batch, channels, height, width = x.shape

    if up > 1:  # zero insertion: (H, W) -> (H*up, W*up) with input samples at multiples of up
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)

    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]

    weight = kernel.to(dtype=x.dtype, device=x.device).flip(list(range(kernel.ndim)))
    if weight.ndim == 2:
        weight = weight[None, None].expand(channels, 1, *weight.shape)
        return F.conv2d(x, weight, stride=down, groups=channels)
    taps = weight.shape[0]
    x = F.conv2d(x, weight.view(1, 1, 1, taps).expand(channels, 1, 1, taps), stride=(1, down), groups=channels)
    return F.conv2d(x, weight.view(1, 1, taps, 1).expand(channels, 1, taps, 1), stride=(down, 1), groups=channels)


def fused_leaky_relu(
    x: Tensor,
    bias: Tensor | None = None,
    negative_slope: float = LEAKY_RELU_SLOPE,
    scale: float = LEAKY_RELU_GAIN,
) -> Tensor:
    """``leaky_relu(x + bias) * scale``; ``bias`` (C,) is added along dim 1 of ``x`` (B, C, ...)."""
    if bias is not None:
        if x.ndim < 2 or bias.shape != (x.shape[1],):
            raise ValueError(f"bias of shape {tuple(bias.shape)} does not match channels of x {tuple(x.shape)}")
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope=negative_slope) * scale


def modulate_weight(weight: Tensor, styles: Tensor, demodulate: bool = True) -> Tensor:
    """Per-sample convolution weights ``w'_{b,o,i} = w_{o,i} s_{b,i}``, demodulated to unit norm.

    ``weight`` (O, I, k, k) already carries its equalised-lr scale; ``styles`` (B, I).
    Demodulation divides each output filter by ``sqrt(sum_{i,k} w'^2 + 1e-8)`` (StyleGAN2 eq. 3),
    computed in fp32. Returns (B, O, I, k, k).
    """
    modulated = weight.unsqueeze(0) * styles[:, None, :, None, None]
    if demodulate:
        norm = modulated.float().square().sum(dim=(2, 3, 4), keepdim=True).add(DEMODULATION_EPS).rsqrt()
        modulated = modulated * norm.to(modulated.dtype)
    return modulated


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    upsample: bool = False,
    blur_kernel: Tensor | None = None,
    blur_pad: tuple[int, int] = (0, 0),
) -> Tensor:
    """StyleGAN2's modulated convolution of ``x`` (B, I, H, W) with ``weight`` (O, I, k, k).

    The batch is folded into the channels so one grouped convolution applies each sample's own
    weights. Without ``upsample`` the conv is 'same' padded, (B, O, H, W). With ``upsample`` a
    stride-2 transposed conv is followed by a blur ``upfirdn2d(., blur_kernel, pad=blur_pad)``,
    giving (B, O, 2H, 2W) for rosinality's pads.
    """
    batch, in_channels, height, width = x.shape
    out_channels, weight_in, kernel_size, _ = weight.shape
    if weight_in != in_channels or styles.shape != (batch, in_channels):
        raise ValueError(
            f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
            f"{tuple(styles.shape)} disagree on batch/input channels"
        )
    per_sample = modulate_weight(weight, styles, demodulate)  # (B, O, I, k, k)
    x = x.reshape(1, batch * in_channels, height, width)
    if not upsample:
        out = F.conv2d(
            x, per_sample.reshape(batch * out_channels, in_channels, kernel_size, kernel_size),
            padding=kernel_size // 2, groups=batch,
        )
        return out.reshape(batch, out_channels, height, width)
    if blur_kernel is None:
        raise ValueError("modulated_conv2d with upsample=True needs blur_kernel")
    transposed = per_sample.transpose(1, 2).reshape(batch * in_channels, out_channels, kernel_size, kernel_size)
    out = F.conv_transpose2d(x, transposed, stride=2, groups=batch)
    out = out.reshape(batch, out_channels, out.shape[2], out.shape[3])
    return upfirdn2d(out, blur_kernel, pad=blur_pad)
