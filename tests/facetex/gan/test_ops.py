"""facetex.gan.ops against straightforward loop-wise references and known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facetex.gan.ops import (
    fused_leaky_relu,
    modulate_weight,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
)


def reference_upfirdn2d(x: np.ndarray, kernel: np.ndarray, up: int, down: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Definition, one output sample at a time: zero insertion, padding, true convolution, decimation."""
    x0, x1, y0, y1 = pad
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    up_h, up_w = h * up, w * up

    def padded(q_y: int, q_x: int, image: np.ndarray) -> float:
        p_y, p_x = q_y - y0, q_x - x0  # position in the upsampled signal
        if not (0 <= p_y < up_h and 0 <= p_x < up_w) or p_y % up or p_x % up:
            return 0.0
        return float(image[p_y // up, p_x // up])

    out_h = (up_h + y0 + y1 - kh) // down + 1
    out_w = (up_w + x0 + x1 - kw) // down + 1
    out = np.zeros((n, c, out_h, out_w))
    for b in range(n):
        for ch in range(c):
            for oy in range(out_h):
                for ox in range(out_w):
                    my, mx = oy * down, ox * down
                    total = 0.0
                    for jy in range(kh):
                        for jx in range(kw):  # convolution: h[j] pairs with v[m + k - 1 - j]
                            total += kernel[jy, jx] * padded(my + kh - 1 - jy, mx + kw - 1 - jx, x[b, ch])
                    out[b, ch, oy, ox] = total
    return out


@pytest.mark.parametrize(
    "up, down, pad",
    [(1, 1, (1, 2, 0, 1)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (2, 2, (0, 3, 1, 2)), (3, 1, (-1, 2, 1, -2))],
)
def test_upfirdn2d_matches_definition(up: int, down: int, pad: tuple[int, int, int, int]) -> None:
    generator = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 2, 5, 4, generator=generator, dtype=torch.float64)
    kernel = torch.randn(3, 4, generator=generator, dtype=torch.float64)  # asymmetric, non-square
    out = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    expected = reference_upfirdn2d(x.numpy(), kernel.numpy(), up, down, pad)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_upfirdn2d_impulse_returns_unflipped_kernel() -> None:
    kernel = torch.arange(1.0, 7.0).reshape(2, 3)
    impulse = torch.ones(1, 1, 1, 1)
    out = upfirdn2d(impulse, kernel, pad=(2, 2, 1, 1))  # full convolution of a delta = the kernel itself
    torch.testing.assert_close(out[0, 0], kernel)


def test_upfirdn2d_separable_equals_outer_product_kernel() -> None:
    x = torch.randn(1, 3, 7, 6, generator=torch.Generator().manual_seed(0))
    taps = [1.0, 3.0, 3.0, 1.0]
    separable = upfirdn2d(x, setup_filter(taps, separable=True, gain=4.0), up=2, pad=(2, 1, 2, 1))
    full = upfirdn2d(x, setup_filter(taps, gain=4.0), up=2, pad=(2, 1, 2, 1))
    torch.testing.assert_close(separable, full)
    assert separable.shape == (1, 3, 14, 12)


def test_upfirdn2d_two_element_pad_and_gradcheck() -> None:
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    kernel = setup_filter([1.0, 3.0, 3.0, 1.0]).double()
    torch.testing.assert_close(upfirdn2d(x, kernel, down=2, pad=(1, 1)), upfirdn2d(x, kernel, down=2, pad=(1, 1, 1, 1)))
    assert torch.autograd.gradcheck(lambda t: upfirdn2d(t, kernel, up=2, pad=(2, 1)), (x,))


def test_upsampling_preserves_a_constant_image_in_the_interior() -> None:
    """rosinality's Upsample: kernel [1,3,3,1] * 4, pad (2, 1) -> (2H, 2W), constant stays constant."""
    x = torch.full((1, 1, 6, 6), 0.7)
    out = upfirdn2d(x, setup_filter([1, 3, 3, 1], gain=4.0), up=2, pad=(2, 1))
    assert out.shape == (1, 1, 12, 12)
    torch.testing.assert_close(out[0, 0, 2:-2, 2:-2], torch.full((8, 8), 0.7))


def test_setup_filter_normalisation_and_errors() -> None:
    kernel = setup_filter([1, 2, 1])
    torch.testing.assert_close(kernel, torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    torch.testing.assert_close(setup_filter([1, 2, 1], separable=True, gain=4.0).sum(), torch.tensor(2.0))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        setup_filter(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="pad must be"):
        upfirdn2d(torch.ones(1, 1, 4, 4), kernel, pad=(1, 2, 3))


def test_fused_leaky_relu_matches_formula() -> None:
    x = torch.randn(3, 4, 2, 2)
    bias = torch.randn(4)
    shifted = x + bias.view(1, 4, 1, 1)
    expected = torch.where(shifted >= 0, shifted, 0.2 * shifted) * math.sqrt(2)
    torch.testing.assert_close(fused_leaky_relu(x, bias), expected)
    torch.testing.assert_close(fused_leaky_relu(x[:, :, 0, 0], bias), expected[:, :, 0, 0])
    with pytest.raises(ValueError, match="does not match"):
        fused_leaky_relu(x, torch.zeros(3))


def _per_sample_weight(weight: torch.Tensor, style: torch.Tensor, demodulate: bool) -> torch.Tensor:
    w = weight * style.view(1, -1, 1, 1)
    if demodulate:
        w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
    return w


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_matches_per_sample_conv(demodulate: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, 5, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, generator=generator, dtype=torch.float64)
    styles = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate)
    for b in range(3):
        expected = F.conv2d(x[b : b + 1], _per_sample_weight(weight, styles[b], demodulate), padding=1)
        torch.testing.assert_close(out[b : b + 1], expected)


def test_modulated_conv2d_upsample_equals_zero_insertion_conv_then_blur() -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    weight = torch.randn(2, 3, 3, 3, generator=generator, dtype=torch.float64)
    styles = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    blur = setup_filter([1, 3, 3, 1], gain=4.0).double()
    out = modulated_conv2d(x, weight, styles, upsample=True, blur_kernel=blur, blur_pad=(1, 1))
    assert out.shape == (2, 2, 8, 8)  # rosinality's pads for k=3, [1,3,3,1]: (1, 1)
    for b in range(2):
        w = _per_sample_weight(weight, styles[b], True)
        inserted = torch.zeros(1, 3, 7, 7, dtype=torch.float64)
        inserted[:, :, ::2, ::2] = x[b : b + 1]  # a stride-2 transposed conv = zero insertion + full conv
        full = F.conv2d(inserted, w.flip(2, 3), padding=2)
        torch.testing.assert_close(out[b : b + 1], upfirdn2d(full, blur, pad=(1, 1)))


def test_demodulation_makes_output_invariant_to_style_scale() -> None:
    x = torch.randn(2, 4, 5, 5)
    weight = torch.randn(6, 4, 3, 3)
    styles = torch.rand(2, 4) + 0.5
    torch.testing.assert_close(modulated_conv2d(x, weight, styles), modulated_conv2d(x, weight, 7.0 * styles))
    norms = modulate_weight(weight, styles).square().sum(dim=(2, 3, 4))
    torch.testing.assert_close(norms, torch.ones(2, 6))
