"""What the GAN stages need from a StyleGAN (StyleGAN2 and StyleGAN3 here, or any generator with the same surface).

Inversion, pivotal tuning, the ReStyle encoder and the pose walk are written against these protocols, not
against one generator class.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor


class LatentGenerator(Protocol):
    """What inversion, the ReStyle encoder and the pose walk need from a StyleGAN: its W+ layout and two networks.

    ``mapping(z (B, style_dim)) -> w (B, style_dim)`` or W+ ``(B, n_latent, style_dim)`` with equal
    rows (only row 0 is used); ``synthesis(ws (B, n_latent, style_dim), noise_mode) -> image (B, 3, H, W)`` in
    [-1, 1]. The stages always pass ``noise_mode="const"`` (StyleGAN2's stored noise: the same image for the same
    code); a generator called without it answers as NVlabs' does and draws new noise (``"random"``).
    """

    n_latent: int
    style_dim: int

    def mapping(self, z: Tensor) -> Tensor: ...

    def synthesis(self, ws: Tensor, noise_mode: str = "random") -> Tensor: ...


@runtime_checkable
class NoiseInputGenerator(Protocol):
    """A :class:`LatentGenerator` with per-layer noise inputs (StyleGAN2), needed for ``optimize_noise``.

    ``make_noise(batch) -> [(batch, 1, r, r)]`` and ``synthesis(ws, noise=[...])``.
    """

    n_latent: int
    style_dim: int

    def mapping(self, z: Tensor) -> Tensor: ...

    def make_noise(self, batch: int = 1) -> list[Tensor]: ...

    def synthesis(self, ws: Tensor, noise: Sequence[Tensor] | None = None) -> Tensor: ...
