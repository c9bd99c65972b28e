"""Cross-view outlier rejection for texture fusion: a texel's samples that disagree with the other views' majority.

An occluder, a specular highlight or background that one view shows at a texel (and the others do not) is a
sample far from the texel's other samples. The reference is their weighted median (the view weights: a frontal
view counts more), the scale a weighted MAD, both per texel; used by ``texture.fuse_texture``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def weighted_median(values: Tensor, weights: Tensor) -> Tensor:
    """Per-element weighted median over dim 0: values ``(K, ...)``, weights ``(K, ...)`` >= 0 -> ``(...)``.

    The smallest value whose cumulative weight reaches half the total (the lower weighted median).
    """
    ordered, order = values.sort(dim=0)
    cumulative = weights.gather(0, order).cumsum(dim=0)
    first = (cumulative >= 0.5 * cumulative[-1:]).float().argmax(dim=0, keepdim=True)
    return ordered.gather(0, first)[0]


def reject_outliers(colours: Tensor, weights: Tensor, z: float, floor: float) -> Tensor:
    """View weights ``(K, T, T)`` with the samples that disagree with the other views set to 0.

    colours: ``(K, 3, T, T)`` each view's sample; weights: ``(K, T, T)`` raw view weights (0 = unused).
    A texel's reference is the per-channel weighted median of its views; a sample's deviation is its largest
    channel difference to it, the texel's scale ``1.4826 x`` the weighted median of those deviations (at least
    ``floor``). Samples deviating more than ``z`` scales are dropped, on texels three or more views see (with two
    there is no majority). An occluder or background seen by a minority of views drops out; a majority that
    agrees keeps its colour.
    """
    if z <= 0:
        return weights
    channel_weights = weights[:, None].expand_as(colours)
    reference = weighted_median(colours, channel_weights)  # (3, T, T)
    deviation = (colours - reference).abs().amax(dim=1)  # (K, T, T)
    scale = (1.4826 * weighted_median(deviation, weights)).clamp_min(floor)
    voters = (weights > 0).sum(dim=0) >= 3
    return torch.where(voters & (deviation > z * scale), 0.0, weights)
