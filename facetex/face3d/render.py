"""Render a reconstructed face: back into the views it was made from (scored against them), and alone on a turntable.

:func:`rerender` is the one re-render-and-score of the project (the photo job and the GAN's multi-view
pipeline both use it): PSNR and SSIM inside the rendered face mask, since pixels the mesh does not
cover say nothing about the reconstruction.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d.metrics import masked_psnr, masked_ssim
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.reconstruction import FaceReconstruction
from facetex.face3d.synthetic import render_textured
from facetex.face3d.texture import layout_uv


class Rerender(NamedTuple):
    """The textured mesh rendered back into K views and scored against them.

    renders: ``(K, 3, H, W)``; masks: ``(K, 1, H, W)`` the pixels the mesh covers; psnr, ssim: ``(K,)`` inside
    :func:`score_masks` (the face-skin mask within ``masks``), NaN where it is empty.
    """

    renders: Tensor
    masks: Tensor
    psnr: Tensor
    ssim: Tensor


def score_views(renders: Tensor, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """PSNR and SSIM ``(K,)`` of ``renders`` against ``images`` ``(K, 3, H, W)`` inside ``masks`` ``(K, 1, H, W)``.

    NaN for a view whose mask is empty (e.g. its mesh lies off the image).
    """
    psnr = torch.full((images.shape[0],), float("nan"), device=images.device)
    ssim = psnr.clone()
    scored = masks.flatten(1).sum(1) > 0
    if scored.any():
        psnr[scored] = masked_psnr(renders[scored], images[scored], masks[scored])
        ssim[scored] = masked_ssim(renders[scored], images[scored], masks[scored])
    return psnr, ssim


def score_masks(reconstruction: FaceReconstruction, covered: Tensor) -> Tensor:
    """``(K, 1, H, W)`` where a re-render is scored: the ``covered`` pixels ``(K, 1, H, W)`` within the face-skin
    masks that fed the texture (``reconstruction.masks``), or all of them when fusion used no masks."""
    if reconstruction.masks is None:
        return covered
    return covered * reconstruction.masks[:, None].to(covered.dtype)


def rerender(images: Tensor, reconstruction: FaceReconstruction, model: MorphableModel) -> Rerender:
    """Render ``reconstruction`` into each of its K views ``images`` ``(K, 3, H, W)`` in [0, 1] and score it
    there, inside :func:`score_masks`."""
    texture = reconstruction.fused.texture
    renders, masks = render_textured(reconstruction.screen_vertices, model.triangles,
                                     layout_uv(model.uv, tuple(texture.shape[-2:])), texture[None], tuple(images.shape[-2:]))
    psnr, ssim = score_views(renders, images, score_masks(reconstruction, masks))
    return Rerender(renders, masks, psnr, ssim)


def render_turntable(
    vertices: Tensor, model: MorphableModel, texture: Tensor, yaws: Sequence[float], size: int
) -> Tensor:
    """The textured mesh ``vertices`` ``(V, 3)`` turned to each yaw (pitch = roll = 0), centred.

    ``texture`` ``(3, T, T)`` is a map in ``process_uv`` layout (``texture.layout_uv``), as fusion makes them.

    Returns ``(Y, 3, size, size)`` renders on a grey background.
    """
    count, like = len(yaws), {"dtype": vertices.dtype, "device": vertices.device}
    yaw = torch.tensor(yaws, **like)
    rotation = euler_to_rotation(yaw, torch.zeros_like(yaw), torch.zeros_like(yaw))
    centre = (vertices.amax(dim=0) + vertices.amin(dim=0)) / 2
    extent = float((vertices.amax(dim=0) - vertices.amin(dim=0))[:2].max())
    scale = torch.full((count,), 0.85 * size / extent, **like)
    translation = torch.full((count, 2), size / 2, **like)
    screen = project((vertices - centre)[None].expand(count, -1, -1), rotation, scale, translation)
    background = torch.full((count, 3, size, size), 0.5, **like)
    uv = layout_uv(model.uv, tuple(texture.shape[-2:]))
    images, _ = render_textured(screen, model.triangles, uv, texture[None], size, background=background)
    return images
