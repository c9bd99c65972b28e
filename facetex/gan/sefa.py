"""SeFa (Shen & Zhou, CVPR 2021): closed-form semantic directions of a StyleGAN2 from its style-modulation weights.

W+ row ``i`` drives one modulated convolution through its affine map ``A_i`` (C_i, D). SeFa looks for the unit
directions ``n`` that move the styles of the chosen layers most, ``max sum_i ||A_i n||^2``, after scaling every
row of every ``A_i`` (one output channel) to unit norm: they are the eigenvectors of ``A^T A`` with ``A`` the
chosen maps stacked, by decreasing eigenvalue (genforce/sefa's ``factorize_weight``; its ``np.linalg.eig``
leaves the order to LAPACK, here it is sorted, and each vector's sign is arbitrary in both). An edit moves only
the chosen rows, ``w_i += d n`` for ``i`` in ``layers``: :func:`sefa_boundary` gives that as an
``(n_latent, D)`` boundary, zero on the other rows, which ``facetex.gan.pose_walk.apply_walk`` walks along.

Layer ``i`` is the convolution that reads W+ row ``i`` (genforce's ``layer{i}``, the last being the final ToRGB);
in rosinality's layout (``facetex.gan.stylegan2``, NVlabs StyleGAN2 pickles included) that is ``conv1``
(i = 0), ``convs.{i-1}`` (1 <= i <= n_latent - 2) and the last ``to_rgbs`` (i = n_latent - 1).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from facetex.gan import stylegan2


def modulation_weight(generator: stylegan2.Generator, layer: int) -> Tensor:
    """The affine (style-modulation) weight ``(channels, style_dim)`` of the convolution reading W+ row ``layer``."""
    if not isinstance(generator, stylegan2.Generator):
        raise TypeError(f"SeFa reads a StyleGAN2 in rosinality's layout (facetex.gan.stylegan2.Generator), got "
                        f"{type(generator).__name__}")
    if not 0 <= layer < generator.n_latent:
        raise ValueError(f"layer {layer} is not a W+ row of this generator (0..{generator.n_latent - 1})")
    if layer == 0:
        module = generator.conv1
    elif layer < generator.n_latent - 1:
        module = generator.convs[layer - 1]
    else:
        module = generator.to_rgbs[-1]
    return module.conv.modulation.weight.detach()


def sefa_directions(generator: stylegan2.Generator, layers: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """SeFa's directions ``(style_dim, style_dim)`` (row k: the k-th, unit norm) and eigenvalues ``(style_dim,)``,
    largest first, of the W+ rows ``layers`` (all rows when None)."""
    layers = list(range(generator.n_latent)) if layers is None else sorted(set(layers))
    if not layers:
        raise ValueError("SeFa needs at least one layer")
    weight = torch.cat([modulation_weight(generator, layer) for layer in layers]).double().cpu()  # (sum C, D)
    weight = weight / weight.norm(dim=1, keepdim=True)
    eigenvalues, eigenvectors = torch.linalg.eigh(weight.T @ weight)  # ascending
    return eigenvectors.flip(1).T.float(), eigenvalues.flip(0).float()


def sefa_boundary(generator: stylegan2.Generator, layers: Sequence[int], component: int) -> Tensor:
    """Direction ``component`` of :func:`sefa_directions` on the rows ``layers`` of an ``(n_latent, style_dim)``
    boundary, zero elsewhere (SeFa edits only the layers it factorised)."""
    directions, _ = sefa_directions(generator, layers)
    if not 0 <= component < directions.shape[0]:
        raise ValueError(f"component {component} out of range: SeFa gives {directions.shape[0]} directions")
    boundary = torch.zeros(generator.n_latent, generator.style_dim)
    boundary[sorted(set(layers))] = directions[component]
    return boundary
