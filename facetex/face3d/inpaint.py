"""Seamless hole filling on a texture map: push-pull, and a guided membrane (Poisson) fill solved coarse to fine.

A hole filled by averaging (push-pull) meets the known texels with a step wherever the average of a wide
neighbourhood differs from the texels on its border: a hard edge between skin and a flat fill. The membrane fill
instead solves Laplace's equation inside the hole with the known texels as boundary values, so the fill starts
exactly at its border's colours and varies as smoothly as possible in between. With a *guidance* image (e.g. the
mirror side of the face) over part of the hole, Poisson's equation takes the guidance's gradients there (Perez et
al., "Poisson image editing", 2003): its detail comes across while its absolute colour is fitted to the border, so
a mirror half lit differently leaves no step either.

Solver: cascadic multigrid. The known values, the hole and the guidance are averaged down to a pyramid; the
coarsest level starts from push-pull, every finer level starts from the coarser solution upsampled and runs Jacobi
sweeps (4-neighbour, only over texels of the ``domain``: the map outside the UV chart is not a neighbour).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SWEEPS = 40  # Jacobi sweeps per pyramid level
COARSEST = 16  # side below which the pyramid stops


def push_pull(texture: Tensor, known: Tensor) -> Tensor:
    """Fill every texel of ``texture`` ``(C, T, T)`` from the ``known`` ``(T, T)`` ones by push-pull.

    Known texels keep their colour; the others get a smooth interpolation of their neighbourhood,
    coarser the farther the nearest known texel is.
    """
    if not known.any():
        raise ValueError("push_pull needs at least one known texel; no view saw any part of the mesh")
    channels = texture.shape[0]
    levels = [torch.cat([texture * known, known[None].to(texture.dtype)])[None]]  # (1, C + 1, T, T)
    while min(levels[-1].shape[-2:]) > 1:
        levels.append(F.avg_pool2d(levels[-1], 2, ceil_mode=True))
    filled = levels[-1][:, :channels] / levels[-1][:, channels:].clamp_min(1e-12)
    for level in reversed(levels[:-1]):
        coarse = F.interpolate(filled, size=level.shape[-2:], mode="bilinear", align_corners=False)
        weight = level[:, channels:]
        own = level[:, :channels] / weight.clamp_min(1e-12)
        # partly known cells blend their own average with the coarse estimate by how much they know
        filled = weight.clamp(0, 1) * own + (1 - weight.clamp(0, 1)) * coarse
    return torch.where(known, texture, filled[0])


def _neighbour_sum(values: Tensor) -> Tensor:
    """Sum of the 4 neighbours of every texel of ``(C, H, W)`` (zero beyond the map's edge)."""
    padded = F.pad(values, (1, 1, 1, 1))
    return padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]


def _jacobi(solution: Tensor, known: Tensor, domain: Tensor, guide: Tensor, guided: Tensor, sweeps: int) -> Tensor:
    """``sweeps`` Jacobi sweeps of ``sum_j (f_i - f_j) = sum_j g_ij`` over the unknown domain texels.

    ``g_ij = guide_i - guide_j`` where both ``i`` and ``j`` are ``guided``, else 0 (a membrane there); neighbours
    outside ``domain`` are left out (a free border). Known texels keep their values.
    """
    inside = domain.to(solution.dtype)[None]
    count = _neighbour_sum(inside)[0].clamp_min(1.0)
    guided_f = (guided & domain).to(solution.dtype)[None]
    # sum_j g_ij over guided neighbour pairs: guide_i * (guided neighbours) - sum of guided neighbours' guide
    guidance = guided_f * (guide * _neighbour_sum(guided_f) - _neighbour_sum(guide * guided_f))
    free = (domain & ~known)[None]
    padded = F.pad(solution * inside, (1, 1, 1, 1))  # updated in place: the border stays 0
    centre = padded[:, 1:-1, 1:-1]
    for _ in range(sweeps):
        total = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
        centre.copy_(torch.where(free, (total + guidance) / count, centre))
    return torch.where(free, centre, solution)


def _down(values: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted 2x2 average of ``values`` ``(C, H, W)`` over ``weight`` ``(H, W)`` and the pooled weight."""
    pooled = F.avg_pool2d(torch.cat([values * weight, weight[None]])[None], 2, ceil_mode=True)[0]
    return pooled[:-1] / pooled[-1:].clamp_min(1e-12), pooled[-1]


def membrane_fill(values: Tensor, known: Tensor, domain: Tensor, guide: Tensor | None = None,
                  guided: Tensor | None = None, sweeps: int = SWEEPS) -> Tensor:
    """Fill the ``domain`` ``(T, T)`` texels that are not ``known`` so that the map is as smooth as possible there.

    values: ``(C, T, T)``, read where ``known``; guide: ``(C, T, T)`` an image whose gradients the fill takes where
    ``guided`` ``(T, T)`` (and a membrane elsewhere), None for a pure membrane. Returns ``(C, T, T)``: ``values`` on
    known texels, the solution on the other domain texels, and ``values`` (untouched) outside the domain.
    """
    if not (known & domain).any():
        raise ValueError("membrane_fill needs at least one known texel inside the domain; no view saw the mesh")
    if guide is None or guided is None:
        guide, guided = torch.zeros_like(values), torch.zeros_like(known)
    guided = guided & domain & ~known
    levels = [(values, known.to(values.dtype), domain.to(values.dtype), guide, guided.to(values.dtype))]
    while min(levels[-1][0].shape[-2:]) > COARSEST:
        value, weight, inside, guide_level, guided_level = levels[-1]
        down_value, down_weight = _down(value, weight)
        down_guide, down_guided = _down(guide_level, guided_level)
        # a coarse texel is in the domain only when all its children are: a thin gap between two parts of the
        # domain (two UV islands) survives every level, so no level mixes across it
        down_inside = (F.avg_pool2d(inside[None, None], 2, ceil_mode=True)[0, 0] >= 1.0).to(values.dtype)
        levels.append((down_value, down_weight, down_inside, down_guide, down_guided))
    solution: Tensor | None = None
    coarse_inside: Tensor | None = None
    for value, weight, inside, guide_level, guided_level in reversed(levels):
        known_level, domain_level = (weight >= 0.5) & (inside > 0), inside > 0
        if solution is None or coarse_inside is None:
            start = push_pull(value, known_level) if known_level.any() else value
        else:  # upsampled from the coarser level's domain texels only
            stacked = torch.cat([solution * coarse_inside, coarse_inside[None]])[None]
            up = F.interpolate(stacked, size=value.shape[-2:], mode="bilinear", align_corners=False)[0]
            start = torch.where(up[-1:] > 1e-6, up[:-1] / up[-1:].clamp_min(1e-6), value)
        start = torch.where(known_level, value, start)
        solution = _jacobi(start, known_level, domain_level, guide_level, guided_level >= 0.5, sweeps)
        coarse_inside = inside
    assert solution is not None
    return torch.where(domain & ~known, solution, values)
