"""K views of one face -> one shared identity, a pose per view, and a UV texture fused from all views.

The multi-view core of 3D-GANTex: the K images are one photo, or the K views a GAN synthesises, each
with its 68 landmarks. :func:`fit_views` fits the morphable model to the landmarks,
:func:`texture_views` fuses the images into its UV texture (``texture.fuse_texture``: visibility, view
weights, symmetry, inpainting).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from facetex.face3d.camera import project
from facetex.face3d.face_mask import BROWS, EYES, MOUTH_INTERIOR, face_skin_mask, inner_face_vertices
from facetex.face3d.fitting import LandmarkFit, fit_landmarks_multiview
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.texture import FusedTexture, FusionConfig, fuse_texture


@dataclass
class FaceReconstruction:
    """One face seen in K views.

    fit: the multi-view :class:`LandmarkFit` (batch 1: shape ``(1, S)``, per-view poses ``(1, K, ...)``).
    vertices: ``(K, V, 3)`` model-space mesh of each view (shared identity, the view's expression).
    screen_vertices: ``(K, V, 3)`` the mesh projected into each image.
    fused: the fused UV texture and its per-view maps.
    masks: ``(K, H, W)`` bool, the face-skin pixels of each view that fed the texture (:func:`skin_masks`; re-renders
        are scored inside them), None when fusion used every pixel.
    """

    fit: LandmarkFit
    vertices: Tensor
    screen_vertices: Tensor
    fused: FusedTexture
    masks: Tensor | None = None


def fit_views(model: MorphableModel, landmarks: Tensor, weights: Tensor | None = None) -> LandmarkFit:
    """One identity and K poses from K views' iBUG-68 landmarks ``(K, 68, 2)`` (pixels), weights ``(K, 68)``."""
    if landmarks.dim() != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (K, 68, 2) iBUG-68 pixel positions, got {tuple(landmarks.shape)}")
    return fit_landmarks_multiview(model, landmarks[None], None if weights is None else weights[None])


def texture_views(
    model: MorphableModel, images: Tensor, fit: LandmarkFit, texture_size: int, config: FusionConfig = FusionConfig()
) -> FaceReconstruction:
    """Fuse K images ``(K, 3, H, W)`` (uint8 or [0, 1]) into the UV texture of the fitted face.

    ``fit`` is the multi-view fit of one face (batch 1) over the same K images. With ``config.skin_mask``
    (and a model marking the brows, eyes and inner lips), only each view's face skin feeds the texture
    (:func:`skin_masks`).
    """
    if model.uv is None:
        raise ValueError("the face model has no texture coordinates; load it with its UV file to build a texture")
    if fit.rotation.shape[:2] != (1, images.shape[0]):
        raise ValueError(
            f"fit has {tuple(fit.rotation.shape[:2])} (people, views) but there are {images.shape[0]} images; "
            "pass the multi-view fit of one face over the same images"
        )
    num_views = images.shape[0]
    vertices = model(fit.shape.expand(num_views, -1), fit.expression[0])  # (K, V, 3)
    screen = project(vertices, fit.rotation[0], fit.scale[0], fit.translation[0])
    masks = skin_masks(model, images, screen, config) if config.skin_mask else None
    fused = fuse_texture(images, screen, model.triangles, model.uv, texture_size, model.symmetry, config, masks)
    return FaceReconstruction(fit=fit, vertices=vertices, screen_vertices=screen, fused=fused, masks=masks)


def skin_masks(model: MorphableModel, images: Tensor, screen_vertices: Tensor, config: FusionConfig) -> Tensor | None:
    """``(K, H, W)`` bool face-skin mask of each view (``face_mask.face_skin_mask``), from the mesh's own landmarks.

    images: ``(K, 3, H, W)`` uint8 or [0, 1]; screen_vertices: ``(K, V, 3)``. Landmarks the model does not mark
    (the Surrey model's jaw contour) are left out of the polygons. None when it lacks any brow or eye landmark or
    more than half of the inner lips (the polygons need them): then every pixel may feed the map.
    """
    present = torch.zeros(68, dtype=torch.bool, device=images.device)
    present[model.landmark_ids] = True
    if not present[list(BROWS + EYES)].all() or int(present[list(MOUTH_INTERIOR)].sum()) < 4:
        return None
    index = torch.zeros(68, dtype=torch.long, device=images.device)
    index[model.landmark_ids] = model.landmark_vertices

    def landmarks_of(vertices: Tensor) -> Tensor:  # (V, D) -> (68, D), NaN where the model has no landmark
        return torch.where(present[:, None], vertices[index], float("nan"))

    inner = inner_face_vertices(model.mean, landmarks_of(model.mean))
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return torch.stack([
        face_skin_mask(image, vertices, model.triangles, landmarks_of(vertices[:, :2]), inner, config.skin_threshold,
                       config.skin_erosion)
        for image, vertices in zip(images, screen_vertices)
    ])
