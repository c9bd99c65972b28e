"""Fit a morphable model to 2D landmarks: pose, identity (shape) and expression.

For one person seen in K views (K = 1 for a single photo) the fit minimises the
MAP cost under Gaussian landmark noise and Gaussian coefficient priors

    sum_k sum_l w_kl ||Pi_k(X_l(alpha, beta_k)) - x_kl||^2
        + lambda_alpha ||alpha||^2 + lambda_beta sum_k ||beta_k||^2

where ``X_l = mean_l + shape_basis_l @ alpha + expression_basis_l @ beta_k`` are
the model's landmark vertices, ``Pi_k`` the scaled-orthographic camera of
``camera.project`` (rotation R_k, scale s_k, translation t_k), ``x_kl`` the
iBUG-68 landmarks in pixels and ``w_kl`` a per-landmark weight (0 = not
visible). With landmark noise of sigma pixels and N(0, 1) coefficients (bases
scaled by sqrt(eigenvalue), as in the SFM), the MAP prior weight is sigma^2.
The shape ``alpha`` is shared by the K views; the expression is shared or
per view.

Solver: Levenberg-Marquardt, batched over people. Jacobians come from
forward-mode autodiff (``torch.func``); the rotation is updated on the manifold
(R <- exp([omega]x) R, omega reset to zero after each accepted step) and the
scale through its logarithm, so the parameterisation stays well conditioned at
any yaw. The start is closed form: a weighted least-squares affine camera from
the mean shape's landmarks, projected onto the nearest scaled rotation.

Anchored pose: with ``rotation_prior`` (e.g. 3DDFA_V2's, whose regressor saw the
whole face, not 68 points), the start rotation is the prior and the cost gains
``w ||R_k - R0_k||_F^2`` per view (``||.||_F^2 = 8 sin^2(theta / 2)``, about
``2 theta^2`` for a rotation ``theta`` away), with ``w = N r^2 / 2``: ``N`` weighted
landmarks whose root-mean-square distance to their centroid is ``r`` pixels, so
turning the head by ``theta`` costs what moving every landmark by about
``theta r`` costs. Landmarks alone cannot tell pitch from the shape of a model
without a jaw contour (the Surrey model's fit pitched 34 deg on a frontal photo);
anchored, the rotation moves only where the landmarks clearly ask for it, and
:attr:`LandmarkFit.rotation_change` says how far.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from torch.func import jacfwd, vmap

from facetex.face3d.camera import project, rotation_to_euler
from facetex.face3d.morphable_model import MorphableModel

NUM_IBUG_LANDMARKS = 68
_POSE_SIZE = 6  # per view: axis-angle increment (3), log scale (1), translation (2)
_MIN_VISIBLE = 4  # an affine camera has 8 unknowns: 4 non-coplanar points
_MAX_DAMPING = 1e6  # LM damping past which steps are too short to make progress


@dataclass
class LandmarkFit:
    """Result of a landmark fit; K-view fits carry a view axis after the batch axis.

    Single view (``fit_landmarks``): shape ``(B, S)``, expression ``(B, E)``,
    rotation ``(B, 3, 3)``, scale ``(B,)``, translation ``(B, 2)``,
    yaw/pitch/roll ``(B,)`` in degrees, rmse ``(B,)`` in pixels.
    Multi-view (``fit_landmarks_multiview``): shape ``(B, S)`` shared by the
    views, expression ``(B, K, E)`` (repeated when shared), rotation
    ``(B, K, 3, 3)``, scale/yaw/pitch/roll/rmse ``(B, K)``, translation ``(B, K, 2)``.
    ``rmse`` is the weighted root-mean-square reprojection error over the
    landmarks the model has and the weights mark visible. ``rotation_change``
    ``(B, K)`` (multi-view; ``(B,)`` single view) is the angle in degrees between
    each view's rotation and its ``rotation_prior`` (0 without one).
    """

    shape: Tensor
    expression: Tensor
    rotation: Tensor
    scale: Tensor
    translation: Tensor
    yaw: Tensor
    pitch: Tensor
    roll: Tensor
    rmse: Tensor
    rotation_change: Tensor


def rotation_angle(first: Tensor, second: Tensor) -> Tensor:
    """Angle in degrees ``(...)`` of the rotation taking ``second`` ``(..., 3, 3)`` to ``first``."""
    cosine = (((first @ second.mT).diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cosine))


def to_ibug68(points: Tensor, landmark_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Scatter a model's landmarks ``(..., L, D)`` into iBUG-68 rows.

    Returns ``(..., 68, D)`` points (zero where the model has no landmark) and a
    ``(..., 68)`` visibility of ones and zeros, ready for ``fit_landmarks``.
    """
    if points.shape[-2] != landmark_ids.numel():
        raise ValueError(
            f"points have {points.shape[-2]} landmarks but landmark_ids lists {landmark_ids.numel()}; "
            "pass the landmarks in the order of the model's landmark_ids"
        )
    full = points.new_zeros(*points.shape[:-2], NUM_IBUG_LANDMARKS, points.shape[-1])
    full[..., landmark_ids, :] = points
    visibility = points.new_zeros(*points.shape[:-2], NUM_IBUG_LANDMARKS)
    visibility[..., landmark_ids] = 1.0
    return full, visibility


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula ``(..., 3) -> (..., 3, 3)``, smooth (and forward-differentiable) at zero."""
    theta_sq = (axis_angle * axis_angle).sum(-1)
    small = theta_sq < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    sin_over_theta = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(theta) / theta)
    one_minus_cos_over_theta_sq = torch.where(
        small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(theta)) / torch.where(small, 1.0, theta_sq)
    )
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return (
        eye
        + sin_over_theta[..., None, None] * skew
        + one_minus_cos_over_theta_sq[..., None, None] * (skew @ skew)
    )


def affine_pose_init(points3d: Tensor, points2d: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form scaled-orthographic pose from 3D-2D correspondences.

    Fits the affine camera ``x = A X + b`` by weighted least squares (on
    centred points, for conditioning), then projects ``A`` (its y row negated:
    the screen y axis points down) onto the nearest scaled rotation.

    points3d ``(..., L, 3)``, points2d ``(..., L, 2)``, weights ``(..., L)`` ->
    rotation ``(..., 3, 3)``, scale ``(...)``, translation ``(..., 2)``.
    """
    weights = weights.clamp_min(0)[..., None]
    total = weights.sum(-2, keepdim=True)
    centre3d = (weights * points3d).sum(-2, keepdim=True) / total  # (..., 1, 3)
    centre2d = (weights * points2d).sum(-2, keepdim=True) / total  # (..., 1, 2)
    centred3d = points3d - centre3d
    linear = torch.linalg.solve(
        centred3d.mT @ (weights * centred3d), centred3d.mT @ (weights * (points2d - centre2d))
    )  # (..., 3, 2): A transposed
    rows = linear.mT * linear.new_tensor([1.0, -1.0])[:, None]  # (..., 2, 3) = s * R[:2]
    rotation, scale = nearest_scaled_rotation(rows)
    translation = (centre2d - centre3d @ linear).squeeze(-2)
    return rotation, scale, translation


def nearest_scaled_rotation(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest ``s * R[:2]`` to two affine rows ``(..., 2, 3)`` -> rotation ``(..., 3, 3)`` (det +1), scale ``(...)``.

    The SVD's ``U V^T`` is the closest pair of orthonormal rows (Frobenius norm),
    the mean singular value the scale, and their cross product the third row.
    """
    u, singular, vh = torch.linalg.svd(rows, full_matrices=False)
    orthonormal = u @ vh
    third = torch.linalg.cross(orthonormal[..., 0, :], orthonormal[..., 1, :], dim=-1)
    return torch.cat([orthonormal, third[..., None, :]], dim=-2), singular.mean(-1)


def fit_landmarks(
    model: MorphableModel,
    landmarks: Tensor,
    weights: Tensor | None = None,
    shape_prior_weight: float | Tensor = 1.0,
    expression_prior_weight: float | Tensor = 1.0,
    iterations: int = 50,
    tolerance: float = 1e-6,
    rotation_prior: Tensor | None = None,
) -> LandmarkFit:
    """Fit pose, shape and expression to one image per person.

    landmarks ``(B, 68, 2)`` iBUG-68 pixel coordinates (x right, y down);
    weights ``(B, 68)`` or ``(68,)``, >= 0 (0 = not visible; default all ones);
    prior weights are scalars or per-mode ``(S,)`` / ``(E,)`` tensors;
    ``rotation_prior`` ``(B, 3, 3)`` anchors the rotation (see the module docstring).
    Returns a single-view ``LandmarkFit``. Not differentiable (inputs are detached).
    """
    if landmarks.ndim != 3:
        raise ValueError(
            f"landmarks must be (B, 68, 2), got shape {tuple(landmarks.shape)}; "
            "use fit_landmarks_multiview for (B, K, 68, 2)"
        )
    if weights is not None and weights.ndim == 2:
        weights = weights[:, None]
    fit = fit_landmarks_multiview(
        model,
        landmarks[:, None],
        weights,
        shared_expression=True,
        shape_prior_weight=shape_prior_weight,
        expression_prior_weight=expression_prior_weight,
        iterations=iterations,
        tolerance=tolerance,
        rotation_prior=None if rotation_prior is None else rotation_prior[:, None],
    )
    return LandmarkFit(
        shape=fit.shape,
        expression=fit.expression[:, 0],
        rotation=fit.rotation[:, 0],
        scale=fit.scale[:, 0],
        translation=fit.translation[:, 0],
        yaw=fit.yaw[:, 0],
        pitch=fit.pitch[:, 0],
        roll=fit.roll[:, 0],
        rmse=fit.rmse[:, 0],
        rotation_change=fit.rotation_change[:, 0],
    )


def fit_landmarks_multiview(
    model: MorphableModel,
    landmarks: Tensor,
    weights: Tensor | None = None,
    shared_expression: bool = True,
    shape_prior_weight: float | Tensor = 1.0,
    expression_prior_weight: float | Tensor = 1.0,
    iterations: int = 50,
    tolerance: float = 1e-6,
    rotation_prior: Tensor | None = None,
) -> LandmarkFit:
    """Fit one shared shape, per-view poses and shared or per-view expressions.

    landmarks ``(B, K, 68, 2)``: K views of each of B people, iBUG-68 pixels;
    weights ``(B, K, 68)`` or anything broadcastable to it (default ones);
    ``shared_expression``: one expression for all K views (views of one
    moment, e.g. a GAN pose walk) or one per view. Solved for ``iterations``
    Levenberg-Marquardt steps at most; a person's fit stops once an accepted
    step lowers its cost by less than ``tolerance`` relative (1e-6 suits fp32)
    or no step lowers it any more. ``rotation_prior`` ``(B, K, 3, 3)``: each view's
    anchor rotation (see the module docstring), None = free. Returns a multi-view ``LandmarkFit``.
    """
    landmarks, weights = _validated_inputs(model, landmarks, weights)
    work_dtype = torch.promote_types(landmarks.dtype, torch.float32)
    device = landmarks.device
    ids = model.landmark_ids.to(device)
    vertex_ids = model.landmark_vertices.to(device)
    weights = weights[..., ids].to(work_dtype)  # (B, K, L)
    targets = torch.where(weights[..., None] > 0, landmarks[..., ids, :], 0.0).to(work_dtype)  # (B, K, L, 2)
    _check_visible_count(weights)

    mean = model.mean[vertex_ids].to(device, work_dtype)  # (L, 3)
    shape_basis = model.shape_basis[vertex_ids].to(device, work_dtype)  # (L, 3, S)
    expression_basis = model.expression_basis[vertex_ids].to(device, work_dtype)  # (L, 3, E)
    num_views = landmarks.shape[1]
    num_shape, num_expression = shape_basis.shape[-1], expression_basis.shape[-1]
    num_expression_sets = 1 if shared_expression else num_views
    sqrt_shape_prior = _sqrt_prior(shape_prior_weight, num_shape, "shape_prior_weight", device, work_dtype)
    sqrt_expression_prior = _sqrt_prior(
        expression_prior_weight, num_expression, "expression_prior_weight", device, work_dtype
    )

    batch = landmarks.shape[0]
    rotation, scale, translation = affine_pose_init(mean.expand(batch, num_views, -1, -1), targets, weights)
    if rotation_prior is None:
        anchor, sqrt_anchor_weight = rotation, torch.zeros_like(scale)
    else:
        if rotation_prior.shape != rotation.shape:
            raise ValueError(f"rotation_prior must be (B, K, 3, 3) = {tuple(rotation.shape)}, one rotation per view, "
                             f"got {tuple(rotation_prior.shape)}")
        anchor = rotation_prior.detach().to(device, work_dtype)
        rotation = anchor.clone()
        scale, translation = _scale_translation(mean, rotation, targets, weights)
        centred = targets - (weights[..., None] * targets).sum(-2, keepdim=True) / weights.sum(-1)[..., None, None]
        spread_sq = (weights * centred.square().sum(-1)).sum(-1) / weights.sum(-1)  # r^2, (B, K)
        sqrt_anchor_weight = (weights.sum(-1) * spread_sq / 2.0).sqrt()
    omega = torch.zeros_like(translation[..., :1]).expand(-1, -1, 3)  # increments around the initial rotation
    pose = torch.cat([omega, scale.log()[..., None], translation], dim=-1)  # (B, K, 6)
    coefficients = torch.zeros(batch, num_shape + num_expression_sets * num_expression, dtype=work_dtype, device=device)
    params = torch.cat([coefficients, pose.flatten(1)], dim=1)  # (B, P)

    residual_fn = partial(
        _residuals,
        mean=mean,
        shape_basis=shape_basis,
        expression_basis=expression_basis,
        num_expression_sets=num_expression_sets,
        sqrt_shape_prior=sqrt_shape_prior,
        sqrt_expression_prior=sqrt_expression_prior,
    )
    params, rotation = _levenberg_marquardt(
        residual_fn, params, rotation, targets, weights.sqrt(), sqrt_anchor_weight, anchor, iterations, tolerance
    )
    fit = _unpack_fit(params, rotation, targets, weights, sqrt_anchor_weight, anchor, residual_fn, num_shape, num_expression,
                      num_expression_sets)
    fit.rotation_change = rotation_angle(rotation, anchor) if rotation_prior is not None else torch.zeros_like(fit.rmse)
    return fit


def _scale_translation(mean: Tensor, rotation: Tensor, targets: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted least-squares scale ``(B, K)`` and translation ``(B, K, 2)`` of the mean landmarks ``(L, 3)`` under
    fixed rotations ``(B, K, 3, 3)``, to ``targets`` ``(B, K, L, 2)`` with ``weights`` ``(B, K, L)``."""
    unit = project(mean.expand(*rotation.shape[:2], -1, -1).flatten(0, 1), rotation.flatten(0, 1),
                   torch.ones(rotation.shape[:2].numel(), dtype=mean.dtype, device=mean.device),
                   torch.zeros(rotation.shape[:2].numel(), 2, dtype=mean.dtype, device=mean.device))
    unit = unit[..., :2].unflatten(0, rotation.shape[:2])  # (B, K, L, 2)
    total = weights.sum(-1)[..., None, None]
    unit_centre = (weights[..., None] * unit).sum(-2, keepdim=True) / total
    target_centre = (weights[..., None] * targets).sum(-2, keepdim=True) / total
    centred_unit, centred_target = unit - unit_centre, targets - target_centre
    scale = (weights[..., None] * centred_unit * centred_target).sum((-1, -2)) / (
        weights[..., None] * centred_unit.square()).sum((-1, -2)).clamp_min(1e-12)
    scale = scale.clamp_min(1e-6)
    return scale, (target_centre - scale[..., None, None] * unit_centre).squeeze(-2)


def _validated_inputs(model: MorphableModel, landmarks: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """Checks layouts and values; returns detached landmarks ``(B, K, 68, 2)`` and weights ``(B, K, 68)``."""
    if landmarks.ndim != 4 or landmarks.shape[-2:] != (NUM_IBUG_LANDMARKS, 2):
        raise ValueError(
            f"landmarks must be (B, K, {NUM_IBUG_LANDMARKS}, 2) iBUG-68 pixel coordinates, "
            f"got shape {tuple(landmarks.shape)}; use to_ibug68 to scatter a model's landmarks into iBUG-68 rows"
        )
    if not landmarks.is_floating_point():
        raise ValueError(f"landmarks must be a floating-point tensor, got {landmarks.dtype}")
    if model.landmark_vertices.numel() == 0:
        raise ValueError("the morphable model has no landmark vertices; load it with its landmark mapping")
    landmarks = landmarks.detach()
    if weights is None:
        weights = torch.ones(landmarks.shape[:-1], dtype=landmarks.dtype, device=landmarks.device)
    else:
        try:
            weights = torch.broadcast_to(weights.detach().to(landmarks.device), landmarks.shape[:-1])
        except RuntimeError as error:
            raise ValueError(
                f"weights of shape {tuple(weights.shape)} do not broadcast to the landmarks' "
                f"{tuple(landmarks.shape[:-1])} (one weight per landmark and view)"
            ) from error
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and >= 0 (0 marks a landmark that is not visible)")
    if not torch.isfinite(landmarks[weights > 0]).all():
        raise ValueError("landmarks with a positive weight must be finite; give NaN landmarks weight 0")
    return landmarks, weights


def _check_visible_count(weights: Tensor) -> None:
    """Raises when a view has fewer than 4 weighted landmarks; weights ``(B, K, L)``."""
    visible = (weights > 0).sum(-1)
    if (visible < _MIN_VISIBLE).any():
        person, view = (visible < _MIN_VISIBLE).nonzero()[0].tolist()
        raise ValueError(
            f"person {person}, view {view} has {visible[person, view].item()} visible landmarks among the "
            f"model's; at least {_MIN_VISIBLE} are needed to fit a pose"
        )


def _sqrt_prior(weight: float | Tensor, size: int, name: str, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Square root of a scalar or per-mode prior weight, as a ``(size,)`` tensor."""
    weight = torch.as_tensor(weight, dtype=dtype, device=device)
    if weight.ndim > 1 or (weight.ndim == 1 and weight.numel() != size):
        raise ValueError(
            f"{name} must be a scalar or have one entry per mode ({size}), got shape {tuple(weight.shape)}"
        )
    if not torch.isfinite(weight).all() or (weight < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    return weight.sqrt().expand(size)


def _residuals(
    params: Tensor,
    rotation_base: Tensor,
    targets: Tensor,
    sqrt_weights: Tensor,
    sqrt_anchor_weight: Tensor,
    anchor: Tensor,
    *,
    mean: Tensor,
    shape_basis: Tensor,
    expression_basis: Tensor,
    num_expression_sets: int,
    sqrt_shape_prior: Tensor,
    sqrt_expression_prior: Tensor,
) -> Tensor:
    """Whitened residuals of one person: params ``(P,)``, rotation_base ``(K, 3, 3)``,
    targets ``(K, L, 2)``, sqrt_weights ``(K, L)``, sqrt_anchor_weight ``(K,)`` and anchor ``(K, 3, 3)`` (the
    rotation prior; weight 0 = none) -> ``(K*L*2 + S + sets*E + K*9,)``."""
    num_views = targets.shape[0]
    num_shape, num_expression = shape_basis.shape[-1], expression_basis.shape[-1]
    alpha = params[:num_shape]
    beta = params[num_shape : num_shape + num_expression_sets * num_expression].reshape(num_expression_sets, -1)
    pose = params[num_shape + num_expression_sets * num_expression :].reshape(num_views, _POSE_SIZE)
    vertices = mean + shape_basis @ alpha + torch.einsum("lce,ke->klc", expression_basis, beta)  # (K or 1, L, 3)
    vertices = vertices.expand(num_views, -1, -1)
    rotation = axis_angle_to_matrix(pose[:, :3]) @ rotation_base
    screen = project(vertices, rotation, pose[:, 3].exp(), pose[:, 4:])[..., :2]
    data = (screen - targets) * sqrt_weights[..., None]
    anchored = (rotation - anchor) * sqrt_anchor_weight[:, None, None]
    return torch.cat([data.reshape(-1), sqrt_shape_prior * alpha, (sqrt_expression_prior * beta).reshape(-1),
                      anchored.reshape(-1)])


def _levenberg_marquardt(
    residual_fn: Callable[..., Tensor],
    params: Tensor,
    rotation: Tensor,
    targets: Tensor,
    sqrt_weights: Tensor,
    sqrt_anchor_weight: Tensor,
    anchor: Tensor,
    iterations: int,
    tolerance: float,
) -> tuple[Tensor, Tensor]:
    """Batched LM with Marquardt's diagonal damping; params ``(B, P)``, rotation ``(B, K, 3, 3)``.

    After each accepted step the axis-angle increments are folded into
    ``rotation`` and reset to zero, so every linearisation happens at omega = 0.
    A converged person is frozen while the others go on.
    """
    num_views = rotation.shape[1]
    pose_slice = slice(params.shape[1] - num_views * _POSE_SIZE, None)
    residuals = vmap(residual_fn)
    jacobian = vmap(jacfwd(residual_fn))
    with torch.no_grad():
        res = residuals(params, rotation, targets, sqrt_weights, sqrt_anchor_weight, anchor)  # (B, R)
        cost = res.square().sum(-1)
        damping = torch.full_like(cost, 1e-3)
        done = cost == 0
        for _ in range(iterations):
            jac = jacobian(params, rotation, targets, sqrt_weights, sqrt_anchor_weight, anchor)  # (B, R, P)
            normal = jac.mT @ jac
            diagonal = normal.diagonal(dim1=-2, dim2=-1)
            diagonal = diagonal.clamp_min(1e-9 * diagonal.amax(-1, keepdim=True) + torch.finfo(params.dtype).tiny)
            step = torch.linalg.solve(
                normal + torch.diag_embed(damping[:, None] * diagonal), -(jac.mT @ res[..., None])
            ).squeeze(-1)
            candidate = params + step
            candidate_res = residuals(candidate, rotation, targets, sqrt_weights, sqrt_anchor_weight, anchor)
            candidate_cost = candidate_res.square().sum(-1)
            accept = ~done & torch.isfinite(candidate_cost) & (candidate_cost < cost)
            # fold the accepted rotation increments into the base rotation
            pose = candidate[:, pose_slice].reshape(-1, num_views, _POSE_SIZE)
            folded = axis_angle_to_matrix(pose[..., :3]) @ rotation
            pose = torch.cat([torch.zeros_like(pose[..., :3]), pose[..., 3:]], dim=-1)
            candidate = torch.cat([candidate[:, : pose_slice.start], pose.flatten(1)], dim=1)
            done = done | (accept & (cost - candidate_cost <= tolerance * cost)) | (damping >= _MAX_DAMPING)
            params = torch.where(accept[:, None], candidate, params)
            rotation = torch.where(accept[:, None, None, None], folded, rotation)
            res = torch.where(accept[:, None], candidate_res, res)  # folding leaves the residuals unchanged
            cost = torch.where(accept, candidate_cost, cost)
            damping = torch.where(accept, damping / 10.0, damping * 10.0).clamp_min(1e-12)
            if done.all():
                break
    return params, rotation


def _unpack_fit(
    params: Tensor,
    rotation: Tensor,
    targets: Tensor,
    weights: Tensor,
    sqrt_anchor_weight: Tensor,
    anchor: Tensor,
    residual_fn: Callable[..., Tensor],
    num_shape: int,
    num_expression: int,
    num_expression_sets: int,
) -> LandmarkFit:
    """Splits the parameter vectors ``(B, P)`` into a multi-view ``LandmarkFit``."""
    batch, num_views, num_landmarks = weights.shape
    expression_end = num_shape + num_expression_sets * num_expression
    expression = params[:, num_shape:expression_end].reshape(batch, num_expression_sets, num_expression)
    pose = params[:, expression_end:].reshape(batch, num_views, _POSE_SIZE)
    with torch.no_grad():
        residuals = vmap(residual_fn)(params, rotation, targets, weights.sqrt(), sqrt_anchor_weight, anchor)
    data = residuals[:, : num_views * num_landmarks * 2].reshape(batch, num_views, num_landmarks, 2)
    rmse = (data.square().sum((-1, -2)) / weights.sum(-1)).sqrt()
    yaw, pitch, roll = rotation_to_euler(rotation.reshape(-1, 3, 3))
    return LandmarkFit(
        shape=params[:, :num_shape],
        expression=expression.expand(-1, num_views, -1),
        rotation=rotation,
        scale=pose[..., 3].exp(),
        translation=pose[..., 4:],
        yaw=yaw.reshape(batch, num_views),
        pitch=pitch.reshape(batch, num_views),
        roll=roll.reshape(batch, num_views),
        rmse=rmse,
        rotation_change=torch.zeros_like(rmse),
    )
