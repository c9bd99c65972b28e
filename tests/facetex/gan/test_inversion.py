"""Optimisation inversion and PTI on small random StyleGAN2s with known latents."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from facetex.gan.inversion import (
    InversionConfig,
    PTIConfig,
    invert,
    latent_statistics,
    lr_schedule,
    noise_regularization,
    normalize_noise_,
    pivotal_tuning,
    psnr,
)
from facetex.gan.stylegan2 import Generator

STYLE_DIM = 32


def small_generator(seed: int = 0) -> Generator:
    """32 px, 16 channels, noise strengths 0.1, ToRGB scaled so images span about [-1, 1] like a trained G."""
    torch.manual_seed(seed)
    generator = Generator(32, style_dim=STYLE_DIM, n_mlp=2, channel_max=16).eval()
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("noise.weight"):
                parameter.fill_(0.1)
            if "to_rgb" in name and name.endswith("conv.weight"):
                parameter.mul_(0.4)
    return generator


@pytest.fixture(scope="module")
def generator() -> Generator:
    return small_generator()


@pytest.fixture(scope="module")
def w_star(generator: Generator) -> Tensor:
    """Two ground-truth codes w* = w_avg + 0.7 (mapping(z*) - w_avg) (usual truncation), W+ (2, n_latent, D)."""
    w_avg = generator.mean_latent(4096, rng=torch.Generator().manual_seed(1))
    z_star = torch.randn(2, STYLE_DIM, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        w = w_avg + 0.7 * (generator.mapping(z_star) - w_avg)
    return w[:, None].expand(-1, generator.n_latent, -1).clone()


@pytest.fixture(scope="module")
def noisy_target(generator: Generator, w_star: Tensor) -> tuple[Tensor, list[Tensor]]:
    """G(w*) drawn with fresh noise maps: stochastic detail that the stored noise cannot produce."""
    torch.manual_seed(9)
    with torch.no_grad():
        noise = generator.make_noise(2)
        return generator.synthesis(w_star, noise=noise), noise


def test_w_plus_inversion_recovers_a_generated_image(generator: Generator, w_star: Tensor) -> None:
    with torch.no_grad():
        target = generator.synthesis(w_star, noise_mode="const")
    flags = [p.requires_grad for p in generator.parameters()]
    result = invert(generator, target, InversionConfig(steps=600, n_mean_latent=2000), rng=torch.Generator().manual_seed(0))
    w_avg = latent_statistics(generator, 2000, torch.Generator().manual_seed(0))[0]
    start = psnr(generator.synthesis(w_avg[:, None].expand_as(w_star), noise_mode="const"), target)
    print(f"W+ inversion PSNR {result.psnr.tolist()} dB (mean-latent start {start.tolist()} dB)")
    assert result.psnr.min().item() >= 30.0
    assert result.w_plus.shape == (2, generator.n_latent, STYLE_DIM) and result.noise is None
    assert len(result.losses) == 600 and result.losses[-1] < 0.05 * result.losses[0]
    torch.testing.assert_close(result.image, generator.synthesis(result.w_plus, noise_mode="const"))
    assert [p.requires_grad for p in generator.parameters()] == flags
    assert all(p.grad is None for p in generator.parameters())


def test_init_code_is_the_starting_point(generator: Generator, w_star: Tensor) -> None:
    """Three small steps from the true w* stay at w* (near-perfect PSNR); from w_avg they get nowhere."""
    with torch.no_grad():
        target = generator.synthesis(w_star, noise_mode="const")
    config = InversionConfig(steps=3, lr=1e-3, n_mean_latent=500)
    started = invert(generator, target, config, rng=torch.Generator().manual_seed(0), init=w_star)
    from_mean = invert(generator, target, config, rng=torch.Generator().manual_seed(0))
    print(f"3 steps from w*: {started.psnr.tolist()} dB, from w_avg: {from_mean.psnr.tolist()} dB")
    # measured: 53.3 / 43.9 dB from w*, 13.9 / 15.0 dB from w_avg
    assert started.psnr.min().item() > 38.0 and from_mean.psnr.max().item() < 20.0
    torch.testing.assert_close(started.w_plus, w_star, atol=5e-3, rtol=0)
    shared = invert(generator, target, InversionConfig(steps=3, lr=1e-3, w_plus=False, n_mean_latent=500),
                    init=w_star[:, :1])
    assert shared.psnr.min().item() > 38.0
    with pytest.raises(ValueError, match=r"init must be one starting code per target, \(B=2, 1, 32\) for W"):
        invert(generator, target, InversionConfig(steps=1, w_plus=False, n_mean_latent=100), init=w_star)
    with pytest.raises(ValueError, match="init must be one starting code per target"):
        invert(generator, target, config, init=w_star[:1])


def test_w_inversion_returns_one_shared_code(generator: Generator, w_star: Tensor) -> None:
    with torch.no_grad():
        target = generator.synthesis(w_star, noise_mode="const")
    result = invert(generator, target, InversionConfig(steps=40, w_plus=False, n_mean_latent=500))
    assert torch.equal(result.w_plus, result.w_plus[:, :1].expand_as(result.w_plus))
    assert result.losses[-1] < result.losses[0]


def test_noise_optimisation_recovers_stochastic_detail(
    generator: Generator, noisy_target: tuple[Tensor, list[Tensor]]
) -> None:
    """Fitting the noise inputs beats keeping the stored ones, and the finest maps correlate with the truth.

    The regulariser weight is scaled to this MSE-only, 32 px problem (1e5 is calibrated for LPIPS at 256 px).
    """
    target, true_noise = noisy_target
    fixed = invert(generator, target, InversionConfig(steps=200, n_mean_latent=500), rng=torch.Generator().manual_seed(0))
    config = InversionConfig(steps=200, n_mean_latent=500, optimize_noise=True, noise_regularize=1.0)
    fitted = invert(generator, target, config, rng=torch.Generator().manual_seed(0))
    print(f"stored noise {fixed.psnr.tolist()} dB, fitted noise {fitted.psnr.tolist()} dB")
    assert (fitted.psnr > fixed.psnr + 3.0).all()
    assert fitted.noise is not None and len(fitted.noise) == generator.num_layers
    for noise in fitted.noise:
        assert abs(noise.mean().item()) < 1e-4 and abs(noise.std().item() - 1.0) < 1e-4
    finest = torch.corrcoef(torch.stack([fitted.noise[-1].flatten(), true_noise[-1].flatten()]))[0, 1]
    assert finest.item() > 0.3


def test_pti_reaches_detail_the_pivot_cannot(generator: Generator, noisy_target: tuple[Tensor, list[Tensor]]) -> None:
    target = noisy_target[0][:1]  # PTI tunes one generator per identity
    pivot = invert(generator, target, InversionConfig(steps=150, n_mean_latent=500), rng=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    config = PTIConfig(steps=150, lr=5e-3, locality_alpha=5.0)
    result = pivotal_tuning(generator, target, pivot.w_plus, config, rng=torch.Generator().manual_seed(0))
    print(f"PTI: pivot {result.psnr_pivot.tolist()} dB -> tuned {result.psnr.tolist()} dB")
    torch.testing.assert_close(result.psnr_pivot, pivot.psnr)
    assert (result.psnr > result.psnr_pivot + 3.0).all()
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())  # the input G is untouched
    assert not any(p.requires_grad for p in result.generator.parameters())
    assert len(result.losses) == 150


def test_locality_regulariser_keeps_the_tuned_generator_near_the_original(generator: Generator, w_star: Tensor) -> None:
    pivot = w_star[:1]
    target = small_generator(seed=1).synthesis(pivot, noise_mode="const").detach()  # another network's image
    rng = torch.Generator().manual_seed(0)
    free = pivotal_tuning(generator, target, pivot, PTIConfig(steps=60, lr=3e-3, locality_weight_l2=0.0), rng=rng)
    rng = torch.Generator().manual_seed(0)
    regularised = pivotal_tuning(generator, target, pivot, PTIConfig(steps=60, lr=3e-3, locality_alpha=5.0, locality_weight_l2=1.0), rng=rng)
    probe = torch.randn(8, STYLE_DIM, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        w_probe = 0.5 * generator.mapping(probe)[:, None].expand(-1, generator.n_latent, -1) + 0.5 * pivot
        reference = generator.synthesis(w_probe, noise_mode="const")
        drift_free = psnr(free.generator.synthesis(w_probe, noise_mode="const"), reference).mean()
        drift_regularised = psnr(regularised.generator.synthesis(w_probe, noise_mode="const"), reference).mean()
    print(f"agreement with G near the pivot: free {drift_free:.2f} dB, regularised {drift_regularised:.2f} dB")
    assert drift_regularised > drift_free + 1.0
    assert (regularised.psnr > regularised.psnr_pivot).all()


def test_pti_finds_its_own_pivot_and_checks_shapes(generator: Generator, w_star: Tensor) -> None:
    with torch.no_grad():
        target = generator.synthesis(w_star, noise_mode="const")
    config = PTIConfig(steps=3, locality_weight_l2=0.0, pivot=InversionConfig(steps=10, w_plus=False, n_mean_latent=100))
    result = pivotal_tuning(generator, target, config=config)
    assert result.pivot.shape == (2, generator.n_latent, STYLE_DIM)
    with pytest.raises(ValueError, match="pivot must be"):
        pivotal_tuning(generator, target, w_star[:, :3], config)


def test_schedules_and_regulariser_known_values() -> None:
    assert lr_schedule(0.0, 0.1, 0.05, 0.25) == 0.0
    assert lr_schedule(0.05, 0.1, 0.05, 0.25) == pytest.approx(0.1)
    assert lr_schedule(0.5, 0.1, 0.05, 0.25) == pytest.approx(0.1)
    assert lr_schedule(0.875, 0.1, 0.05, 0.25) == pytest.approx(0.05)  # half way down the cosine
    checkerboard = (torch.arange(16)[:, None] + torch.arange(16)[None, :]).remainder(2).float().mul(2).sub(1)
    # shift-1 autocorrelation of a +-1 checkerboard is -1 in x and y at 16 px; its 8 px average is 0
    assert noise_regularization([checkerboard[None, None]]).item() == pytest.approx(2.0)
    white = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert noise_regularization([white]).item() < 1e-2
    shifted = [torch.randn(1, 1, 8, 8) * 3 + 2]
    normalize_noise_(shifted)
    assert abs(shifted[0].mean().item()) < 1e-6 and shifted[0].std().item() == pytest.approx(1.0)
    assert psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.2)).item() == pytest.approx(10 * math.log10(4 / 0.04))


def test_latent_statistics_match_mean_latent(generator: Generator) -> None:
    w_avg, w_std = latent_statistics(generator, 300, torch.Generator().manual_seed(2))
    torch.testing.assert_close(w_avg, generator.mean_latent(300, rng=torch.Generator().manual_seed(2)))
    assert w_std > 0


class ToyGenerator(nn.Module):
    """A non-StyleGAN generator that only satisfies LatentGenerator: image = tanh(A ws), 8x8."""

    n_latent, style_dim = 2, 4

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3 * 8 * 8)

    def mapping(self, z: Tensor) -> Tensor:
        return z

    def synthesis(self, ws: Tensor, noise_mode: str = "random") -> Tensor:  # noise-free: every mode alike
        return torch.tanh(self.linear(ws.flatten(1))).view(-1, 3, 8, 8)


def test_any_latent_generator_is_invertible_and_errors_are_clear() -> None:
    torch.manual_seed(0)
    toy = ToyGenerator()
    ws_star = torch.randn(2, 2, 4) * 0.5
    with torch.no_grad():
        target = toy.synthesis(ws_star, noise_mode="const")
    result = invert(toy, target, InversionConfig(steps=300, lr=0.05, n_mean_latent=100))
    assert result.psnr.min().item() > 40.0
    torch.testing.assert_close(result.w_plus, ws_star, atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="optimize_noise needs"):
        invert(toy, target, InversionConfig(steps=1, optimize_noise=True))
    with pytest.raises(ValueError, match="must match the generator output"):
        invert(toy, target[:, :, :4], InversionConfig(steps=1, n_mean_latent=10))
    with pytest.raises(ValueError, match="InversionConfig needs"):
        InversionConfig(steps=0)
