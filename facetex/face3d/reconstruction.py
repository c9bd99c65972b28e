"""K views of one face -> one shared identity, a pose per view, and a UV texture fused from all views.

The multi-view core of 3D-GANTex: the K images are one photo, or the K views a GAN synthesises, each
with its 68 landmarks. The geometry comes from 3DDFA_V2's regressor wherever the face model is its own
(the BFM: :func:`regressor_geometry`, the official mesh and pose exactly); for another model (the Surrey
Face Model) :func:`fit_views` fits it to the landmarks with each view's rotation anchored to the regressor's.
:func:`texture_views` fuses the images into its UV texture (``texture.fuse_texture``: visibility, view
weights, symmetry, inpainting).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from facetex.face3d.camera import project
from facetex.face3d.face_mask import (
    BROWS,
    EYES,
    MOUTH_INTERIOR,
    face_skin_mask,
    inner_face_vertices,
    symmetric_feature_vertices,
)
from facetex.face3d.fitting import LandmarkFit, fit_landmarks_multiview
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.regressor import NUM_EXPRESSION, NUM_SHAPE, FaceRegression, apply_pose
from facetex.face3d.texture import FusedTexture, FusionConfig, fuse_texture

BFM_NONECK_VERTICES = 38365  # 3DDFA_V2's bfm_noneck_v3 mesh, the one its regressor's parameters pose


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


def fit_views(model: MorphableModel, landmarks: Tensor, weights: Tensor | None = None,
              rotations: Tensor | None = None) -> LandmarkFit:
    """One identity and K poses from K views' iBUG-68 landmarks ``(K, 68, 2)`` (pixels), weights ``(K, 68)``.

    rotations: ``(K, 3, 3)`` each view's rotation from the regressor (``FaceRegression.rotation``), which anchors
    the fit's (``fitting`` module docstring; ``fit.rotation_change`` says how far it moved), None = a free fit.
    """
    if landmarks.dim() != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (K, 68, 2) iBUG-68 pixel positions, got {tuple(landmarks.shape)}")
    return fit_landmarks_multiview(model, landmarks[None], None if weights is None else weights[None],
                                   rotation_prior=None if rotations is None else rotations[None])


def is_regressor_model(model: MorphableModel) -> bool:
    """Whether ``model`` is the mesh 3DDFA_V2's parameters pose: its no-neck BFM, the mean face alone
    (``from_bfm_mean``) or with its 40 shape and 10 expression modes (``from_bfm``)."""
    return model.num_vertices == BFM_NONECK_VERTICES and (model.num_shape, model.num_expression) in (
        (0, 0), (NUM_SHAPE, NUM_EXPRESSION))


def regressor_geometry(model: MorphableModel, regression: FaceRegression) -> tuple[LandmarkFit, Tensor]:
    """3DDFA_V2's own mesh in each of K views, as its ``recon_vers(dense_flag=True)`` + ``similar_transform`` put it.

    model: the BFM (:func:`is_regressor_model`); regression: the regressor's answer for the K views (one face each).
    Returns a one-person ``LandmarkFit`` holding the regressor's pose (its coefficients where the model has those
    modes, else zero), with ``rmse`` the model's landmark vertices against the regressor's landmarks, and the screen
    vertices ``(K, V, 3)`` (``regressor.apply_pose`` of its exact affine map: no weak-perspective approximation).
    """
    if not is_regressor_model(model):
        raise ValueError(f"the regressor's geometry needs its own mesh (the {BFM_NONECK_VERTICES}-vertex no-neck BFM), "
                         f"got a model of {model.num_vertices} vertices; fit that model with fit_views instead")
    count = regression.image_pose.shape[0]
    params = regression.params
    if model.num_shape:
        shape, expression = params.shape[:1].to(model.mean), params.expression.to(model.mean)
    else:
        shape, expression = model.mean.new_zeros(1, 0), model.mean.new_zeros(count, 0)
    vertices = model(shape.expand(count, -1), expression)
    screen = apply_pose(regression.image_pose.to(vertices), vertices)
    ids = model.landmark_ids.to(screen.device)
    error = screen[:, model.landmark_vertices, :2] - regression.landmarks[:, ids, :2].to(screen)
    fit = LandmarkFit(
        shape=shape, expression=expression[None], rotation=regression.rotation[None], scale=regression.scale[None],
        translation=regression.translation[None], yaw=regression.yaw[None], pitch=regression.pitch[None],
        roll=regression.roll[None], rmse=error.square().sum(-1).mean(-1).sqrt()[None],
        rotation_change=torch.zeros_like(regression.yaw)[None],
    )
    return fit, screen


def texture_views(
    model: MorphableModel, images: Tensor, fit: LandmarkFit, texture_size: int, config: FusionConfig = FusionConfig(),
    screen_vertices: Tensor | None = None, landmarks: Tensor | None = None,
) -> FaceReconstruction:
    """Fuse K images ``(K, 3, H, W)`` (uint8 or [0, 1]) into the UV texture of the fitted face.

    ``fit`` is the multi-view fit of one face (batch 1) over the same K images; ``screen_vertices`` ``(K, V, 3)``
    places the mesh in the images when given (:func:`regressor_geometry`), else ``fit``'s camera projects it. With
    ``config.skin_mask`` (and a model marking the brows, eyes and inner lips), only each view's face skin feeds the
    texture (:func:`skin_masks`, its mouth and skin sample from ``landmarks`` ``(K, 68, 2)`` when given).
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
    screen = project(vertices, fit.rotation[0], fit.scale[0], fit.translation[0]) if screen_vertices is None \
        else screen_vertices
    masks = skin_masks(model, images, screen, config, landmarks) if config.skin_mask else None
    fused = fuse_texture(images, screen, model.triangles, model.uv, texture_size, model.symmetry, config, masks,
                         symmetric_features(model))
    return FaceReconstruction(fit=fit, vertices=vertices, screen_vertices=screen, fused=fused, masks=masks)


def _landmark_rows(model: MorphableModel, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(68,)`` bool, which iBUG-68 landmarks the model marks, and ``(68,)`` their vertex (0 where unmarked)."""
    present = torch.zeros(68, dtype=torch.bool, device=device)
    present[model.landmark_ids] = True
    index = torch.zeros(68, dtype=torch.long, device=device)
    index[model.landmark_ids] = model.landmark_vertices
    return present, index


def symmetric_features(model: MorphableModel) -> Tensor | None:
    """``(V,)`` bool, the model's vertices in the features a face has on both sides (eyes, brows, nose, lips; from
    its landmarks on the mean face, ``face_mask.symmetric_feature_vertices``), or None when it lacks their landmarks."""
    present, index = _landmark_rows(model, model.mean.device)
    if not present[list(BROWS + EYES)].all():
        return None
    landmarks = torch.where(present[:, None], model.mean[index], float("nan"))
    return symmetric_feature_vertices(model.mean, landmarks)


def skin_masks(model: MorphableModel, images: Tensor, screen_vertices: Tensor, config: FusionConfig,
               landmarks: Tensor | None = None) -> Tensor | None:
    """``(K, H, W)`` bool face-skin mask of each view (``face_mask.face_skin_mask``), from the mesh's own landmarks.

    images: ``(K, 3, H, W)`` uint8 or [0, 1]; screen_vertices: ``(K, V, 3)``. Landmarks the model does not mark
    (the Surrey model's jaw contour) are left out of the polygons. ``landmarks`` ``(K, 68, 2)``: the views' measured
    landmarks (3DDFA_V2's), used for the mouth and the skin sample instead of the mesh's own: the BFM mean face has
    no expression, so its inner lips stay closed over an open mouth (teeth fed ffhq_00009's map). None when the
    model lacks any brow or eye landmark or more than half of the inner lips (the polygons need them): then every
    pixel may feed the map.
    """
    present, index = _landmark_rows(model, images.device)
    if not present[list(BROWS + EYES)].all() or int(present[list(MOUTH_INTERIOR)].sum()) < 4:
        return None

    def landmarks_of(vertices: Tensor) -> Tensor:  # (V, D) -> (68, D), NaN where the model has no landmark
        return torch.where(present[:, None], vertices[index], float("nan"))

    inner = inner_face_vertices(model.mean, landmarks_of(model.mean))
    images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return torch.stack([
        face_skin_mask(image, vertices, model.triangles, landmarks_of(vertices[:, :2]) if marks is None else marks,
                       inner, config.skin_threshold, config.skin_erosion)
        for image, vertices, marks in zip(images, screen_vertices,
                                          [None] * len(images) if landmarks is None else landmarks.float())
    ])
