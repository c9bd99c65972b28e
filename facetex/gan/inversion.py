"""GAN inversion by optimisation (W / W+) and Pivotal Tuning Inversion (Roich et al., 2021).

``invert`` follows the projector of Karras et al. (StyleGAN2, sec. 5; rosinality's ``projector.py``):
start at the mean latent w_avg (or at a given code, e.g. a ReStyle encoder's W+), optimise with
Adam under a cosine learning-rate ramp, perturb the latent with Gaussian noise whose strength
``std(w) * latent_noise * (1 - t / noise_ramp)^2`` decays to zero, and optionally optimise the
per-layer noise images with the multi-scale autocorrelation regulariser. The loss is
``mse_weight * MSE + perceptual_weight * perceptual(G(w), x)`` (+ the noise term).

``pivotal_tuning`` (PTI) keeps an inverted code, the pivot w_p, fixed and fine-tunes a copy of the generator so that
``G'(w_p)`` reproduces the image; the locality regulariser keeps ``G'`` equal to ``G`` at codes
``w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p||`` drawn toward random (truncated) latents w_z.

Both work with any generator satisfying :class:`LatentGenerator` (StyleGAN2 and StyleGAN3 here).
Images are ``(B, 3, H, W)`` in [-1, 1]; PSNR uses that range (peak-to-peak 2).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facetex.face3d.metrics import masked_psnr
from facetex.gan.latent_generator import LatentGenerator, NoiseInputGenerator

PerceptualLoss = Callable[[Tensor, Tensor], Tensor]
"""(image (B, 3, h, w), target (B, 3, h, w)) in [-1, 1] -> scalar distance, e.g. a wrapped LPIPS."""


@dataclass(frozen=True)
class InversionConfig:
    """Projector hyper-parameters; defaults are rosinality's ``projector.py`` (1000 steps, lr 0.1).

    Attributes:
        steps: optimisation steps (>= 1).
        w_plus: one code per synthesis layer (W+) or one shared w (W).
        lr: peak Adam learning rate.
        lr_rampup: fraction of steps with a linear warm-up.
        lr_rampdown: fraction of steps with a cosine decay to 0.
        latent_noise: initial latent perturbation, in units of std(w).
        noise_ramp: fraction of steps over which the perturbation decays to 0.
        mse_weight: weight of the pixel MSE.
        perceptual_weight: weight of the perceptual loss (used only when one is given).
        perceptual_resolution: area-downsample larger images to this side before the perceptual loss (None: never).
        optimize_noise: also fit the noise images (StyleGAN2 only).
        noise_regularize: weight of the noise autocorrelation term; balances LPIPS at 256 px (with MSE alone on
            small images ~1 fits).
        n_mean_latent: mapped samples for w_avg and std(w) (PTI's locality codes use it too).
    """

    steps: int = 1000
    w_plus: bool = True
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    latent_noise: float = 0.05
    noise_ramp: float = 0.75
    mse_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_resolution: int | None = 256
    optimize_noise: bool = False
    noise_regularize: float = 1e5
    n_mean_latent: int = 10000

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.n_mean_latent < 2:
            raise ValueError(f"InversionConfig needs steps >= 1, lr > 0, n_mean_latent >= 2; got {self}")


@dataclass
class InversionResult:
    """Found codes and how the fit went."""

    w_plus: Tensor  # (B, n_latent, style_dim), detached
    image: Tensor  # (B, 3, H, W), G(w_plus) without the latent perturbation
    losses: list[float]  # total loss at every step
    psnr: Tensor  # (B,) dB against the target
    noise: list[Tensor] | None = None  # fitted (B, 1, r, r) noise images when optimize_noise


@dataclass(frozen=True)
class PTIConfig:
    """Pivotal-tuning hyper-parameters; defaults are PTI's ``hyperparameters.py``.

    Attributes:
        steps: generator fine-tuning steps (>= 1).
        lr: Adam learning rate of the tuned generator.
        l2_weight: weight of the pixel MSE at the pivot.
        perceptual_weight: weight of the perceptual loss at the pivot (used only when one is given).
        locality_weight_l2: weight of the locality regulariser's MSE (0, with the perceptual one, disables it).
        locality_weight_perceptual: weight of the locality regulariser's perceptual term.
        locality_alpha: distance ``||w_r - w_p||`` of the regularisation codes.
        locality_samples: regularisation codes per step.
        locality_interval: apply the regulariser every this many steps.
        locality_truncation: psi of the random latents w_z.
        pivot: the inversion that finds the pivot when none is given (PTI: W, 450 steps, lr 5e-3).
    """

    steps: int = 350
    lr: float = 3e-4
    l2_weight: float = 1.0
    perceptual_weight: float = 1.0
    locality_weight_l2: float = 0.1
    locality_weight_perceptual: float = 0.1
    locality_alpha: float = 30.0
    locality_samples: int = 1
    locality_interval: int = 1
    locality_truncation: float = 0.5
    pivot: InversionConfig = field(default_factory=lambda: InversionConfig(steps=450, w_plus=False, lr=5e-3))

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.locality_interval < 1 or self.locality_samples < 1:
            raise ValueError(f"PTIConfig needs steps, lr, locality_interval, locality_samples > 0; got {self}")


@dataclass
class PTIResult:
    """The tuned generator and the pivot it was tuned at."""

    generator: nn.Module  # a tuned copy; the input generator is left unchanged
    pivot: Tensor  # (B, n_latent, style_dim)
    losses: list[float]  # total loss (reconstruction + locality) at every tuning step
    psnr_pivot: Tensor  # (B,) dB of the original generator at the pivot
    psnr: Tensor  # (B,) dB of the tuned generator at the pivot


def psnr(image: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per image for images in [-1, 1]: ``10 log10(2^2 / MSE)``, (B,)."""
    return masked_psnr(image, target, torch.ones_like(image[:, :1]), data_range=2.0)


def lr_schedule(t: float, initial_lr: float, rampup: float, rampdown: float) -> float:
    """Learning rate at progress ``t`` in [0, 1): linear warm-up, then cosine decay over the last ``rampdown``."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return initial_lr * ramp


def noise_regularization(noises: Sequence[Tensor]) -> Tensor:
    """Sum of squared 1-pixel autocorrelations (x and y) of each noise image, at every scale down to 8x8.

    Pushes the fitted noise maps (B, 1, r, r) to stay white, so they cannot encode the image.
    """
    loss = noises[0].new_zeros(())
    for noise in noises:
        while True:
            loss = loss + (noise * noise.roll(1, dims=3)).mean().square() + (noise * noise.roll(1, dims=2)).mean().square()
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return loss


@torch.no_grad()
def normalize_noise_(noises: Sequence[Tensor]) -> None:
    """Rescale each noise image in place to zero mean and unit standard deviation."""
    for noise in noises:
        noise.sub_(noise.mean()).div_(noise.std())


def _randn(shape: Sequence[int], like: Tensor, rng: torch.Generator | None) -> Tensor:
    """N(0, 1) samples with ``like``'s dtype and device, drawn from ``rng`` (on its own device) when given."""
    device = rng.device if rng is not None else like.device
    return torch.randn(tuple(shape), generator=rng, device=device, dtype=like.dtype).to(like.device)


def _as_module(generator: LatentGenerator) -> nn.Module:
    if not isinstance(generator, nn.Module):
        raise TypeError(f"the generator must be an nn.Module, got {type(generator).__name__}")
    return generator


@torch.no_grad()
def latent_statistics(generator: LatentGenerator, n: int, rng: torch.Generator | None = None) -> tuple[Tensor, float]:
    """``(w_avg (1, style_dim), std(w))`` over ``n`` mapped random z; std is the RMS distance to w_avg."""
    z = _randn((n, generator.style_dim), next(_as_module(generator).parameters()), rng)
    w = generator.mapping(z)
    if w.ndim == 3:
        w = w[:, 0]
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = (w - w_avg).square().sum().div(n).sqrt().item()
    return w_avg, w_std


def _check_target(target: Tensor, image: Tensor) -> None:
    if target.shape != image.shape:
        raise ValueError(
            f"target images {tuple(target.shape)} must match the generator output {tuple(image.shape)}: "
            "align and resize the photo to the generator's resolution, RGB in [-1, 1]"
        )


def _reconstruction_loss(
    image: Tensor,
    target: Tensor,
    l2_weight: float,
    perceptual: PerceptualLoss | None,
    perceptual_weight: float,
    perceptual_resolution: int | None = None,
) -> Tensor:
    """``l2_weight * MSE + perceptual_weight * perceptual`` (the latter on downsampled images if asked)."""
    loss = l2_weight * F.mse_loss(image.float(), target.float())
    if perceptual is not None and perceptual_weight > 0:
        if perceptual_resolution is not None and image.shape[-1] > perceptual_resolution:
            factor = image.shape[-1] // perceptual_resolution
            image, target = F.avg_pool2d(image, factor), F.avg_pool2d(target, factor)
        loss = loss + perceptual_weight * perceptual(image, target)
    return loss


def invert(
    generator: LatentGenerator,
    target: Tensor,
    config: InversionConfig = InversionConfig(),
    perceptual: PerceptualLoss | None = None,
    rng: torch.Generator | None = None,
    init: Tensor | None = None,
) -> InversionResult:
    """Find W+ codes whose images reproduce ``target`` (B, 3, H, W) in [-1, 1].

    The generator's weights are not changed (their gradients are not computed). ``rng`` makes the
    mean-latent sampling, the latent perturbation and the initial noise reproducible. ``init`` is the
    starting code instead of w_avg: (B, n_latent, D) for W+, (B, 1, D) for W (``config.w_plus=False``);
    the latent perturbation is still scaled by std(w) of the mapping network.
    """
    if config.optimize_noise and not isinstance(generator, NoiseInputGenerator):
        raise ValueError(f"optimize_noise needs a generator with make_noise() and noise inputs; "
                         f"{type(generator).__name__} has none (StyleGAN3 has no noise: set optimize_noise=False)")
    if init is not None:
        rows = generator.n_latent if config.w_plus else 1
        if tuple(init.shape) != (target.shape[0], rows, generator.style_dim):
            raise ValueError(f"init must be one starting code per target, (B={target.shape[0]}, {rows}, "
                             f"{generator.style_dim}) for {'W+' if config.w_plus else 'W'} inversion; got "
                             f"{tuple(init.shape)}")
    parameters = list(_as_module(generator).parameters())
    requires_grad = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        return _optimise_latent(generator, target, config, perceptual, rng, init)
    finally:
        for p, flag in zip(parameters, requires_grad):
            p.requires_grad_(flag)


def _optimise_latent(
    generator: LatentGenerator,
    target: Tensor,
    config: InversionConfig,
    perceptual: PerceptualLoss | None,
    rng: torch.Generator | None,
    init: Tensor | None,
) -> InversionResult:
    batch = target.shape[0]
    w_avg, w_std = latent_statistics(generator, config.n_mean_latent, rng)
    if init is None:
        latent = w_avg.to(target.dtype).repeat(batch, generator.n_latent if config.w_plus else 1, 1)
    else:
        latent = init.detach().to(target).clone()
    latent.requires_grad_(True)
    noises: list[Tensor] = []
    if config.optimize_noise:
        noises = [
            _randn(n.shape, n, rng).requires_grad_(True) for n in generator.make_noise(batch)  # type: ignore[attr-defined]
        ]
    optimizer = torch.optim.Adam([latent, *noises], lr=config.lr)

    def render(codes: Tensor) -> Tensor:
        ws = codes.expand(-1, generator.n_latent, -1)
        if noises:
            return generator.synthesis(ws, noise=noises)  # type: ignore[call-arg]
        return generator.synthesis(ws, noise_mode="const")

    losses: list[float] = []
    for step in range(config.steps):
        t = step / config.steps
        for group in optimizer.param_groups:
            group["lr"] = lr_schedule(t, config.lr, config.lr_rampup, config.lr_rampdown)
        strength = w_std * config.latent_noise * max(0.0, 1.0 - t / config.noise_ramp) ** 2
        perturbation = _randn(latent.shape, latent, rng) * strength
        image = render(latent + perturbation)
        if step == 0:
            _check_target(target, image)
        loss = _reconstruction_loss(
            image, target, config.mse_weight, perceptual, config.perceptual_weight, config.perceptual_resolution
        )
        if noises:
            loss = loss + config.noise_regularize * noise_regularization(noises)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if noises:
            normalize_noise_(noises)
        losses.append(loss.item())

    with torch.no_grad():
        image = render(latent)
        w_plus = latent.detach().expand(-1, generator.n_latent, -1).clone()
    return InversionResult(
        w_plus=w_plus, image=image, losses=losses, psnr=psnr(image, target),
        noise=[n.detach() for n in noises] if noises else None,
    )


def _locality_codes(
    generator: LatentGenerator, pivot: Tensor, w_avg: Tensor, config: PTIConfig, rng: torch.Generator | None
) -> Tensor:
    """Codes at distance ``alpha`` from the pivot, toward truncated random latents: (S*B, n_latent, D)."""
    w = generator.mapping(_randn((config.locality_samples, generator.style_dim), pivot, rng))
    if w.ndim == 3:
        w = w[:, 0]
    w_z = (w_avg + config.locality_truncation * (w - w_avg))[:, None, None, :]  # (S, 1, 1, D)
    direction = w_z - pivot.unsqueeze(0)  # (S, B, n_latent, D)
    norm = direction.flatten(2).norm(dim=2).clamp_min(1e-8)[:, :, None, None]
    return (pivot.unsqueeze(0) + config.locality_alpha * direction / norm).flatten(0, 1)


def pivotal_tuning(
    generator: LatentGenerator,
    target: Tensor,
    pivot: Tensor | None = None,
    config: PTIConfig = PTIConfig(),
    perceptual: PerceptualLoss | None = None,
    rng: torch.Generator | None = None,
) -> PTIResult:
    """PTI: fine-tune a copy of ``generator`` so that its image at the pivot matches ``target``.

    Args:
        target: (B, 3, H, W) in [-1, 1].
        pivot: (B, n_latent, style_dim) codes; when None, found with ``invert(config.pivot)``
            (PTI inverts into W, 450 steps, lr 5e-3).
        perceptual: optional distance used both for reconstruction and locality terms.

    The tuned copy runs with ``requires_grad`` off at the end; the input generator is unchanged.
    """
    if pivot is None:
        pivot = invert(generator, target, config.pivot, perceptual, rng).w_plus
    if pivot.ndim != 3 or pivot.shape[0] != target.shape[0] or pivot.shape[1:] != (generator.n_latent, generator.style_dim):
        raise ValueError(f"pivot must be (B={target.shape[0]}, {generator.n_latent}, {generator.style_dim}), "
                         f"got {tuple(pivot.shape)}")
    original = _as_module(generator)
    tuned = copy.deepcopy(original)
    tuned.requires_grad_(True)
    pivot = pivot.detach()
    use_locality = config.locality_weight_l2 > 0 or (perceptual is not None and config.locality_weight_perceptual > 0)
    w_avg = latent_statistics(original, config.pivot.n_mean_latent, rng)[0].to(pivot) if use_locality else None
    with torch.no_grad():
        pivot_image = original.synthesis(pivot, noise_mode="const")
    _check_target(target, pivot_image)
    psnr_pivot = psnr(pivot_image, target)

    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.lr)
    losses: list[float] = []
    for step in range(config.steps):
        loss = _reconstruction_loss(tuned.synthesis(pivot, noise_mode="const"), target, config.l2_weight, perceptual, config.perceptual_weight)
        if use_locality and step % config.locality_interval == 0:
            with torch.no_grad():
                codes = _locality_codes(original, pivot, w_avg, config, rng)
                reference = original.synthesis(codes, noise_mode="const")
            loss = loss + _reconstruction_loss(
                tuned.synthesis(codes, noise_mode="const"), reference, config.locality_weight_l2, perceptual, config.locality_weight_perceptual
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    tuned.requires_grad_(False)
    with torch.no_grad():
        tuned_psnr = psnr(tuned.synthesis(pivot, noise_mode="const"), target)
    return PTIResult(generator=tuned, pivot=pivot, losses=losses, psnr_pivot=psnr_pivot, psnr=tuned_psnr)
