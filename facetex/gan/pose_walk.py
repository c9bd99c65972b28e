"""Pose walk in StyleGAN's W+: the InterFaceGAN boundary, learning it, and calibrating it to degrees.

3D-GANTex makes its K views by moving an inverted code along the InterFaceGAN pose
boundary ``n`` (a unit normal in W): ``w'_i = w_i + f n`` on every W+ row ``i``, with
integer strengths ``f = -3..4``. A strength has no fixed meaning in degrees: how far a
face turns per unit depends on the generator, the boundary and the face. This module

* reads the published boundaries (:func:`load_boundary`),
* applies the walk (:func:`apply_walk`),
* learns a boundary for any generator from a yaw estimator (:func:`learn_boundary`),
* measures yaw against strength and fits ``yaw = a f + b`` (:func:`calibrate`), so that
  views can be asked for as yaw angles (:meth:`Calibration.views_at`), each view's yaw
  measured again on the generated image.

A yaw estimator is any callable ``images (B, 3, H, W) in [-1, 1] -> yaw (B,)`` in degrees
with the project's convention (positive yaw turns the nose toward the image's right),
e.g. 3DDFA_V2's regressor behind a face detector.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from facetex.gan.latent_generator import LatentGenerator
from foundation.checkpoints import load_checkpoint
from foundation.errors import InputError

YawEstimator = Callable[[Tensor], Tensor]
BoundaryMethod = Literal["regression", "logistic"]


class BoundaryFileError(InputError, ValueError):
    """A boundary file is unreadable or does not hold a usable direction."""


def _checked_rows(direction: Tensor, source: str) -> Tensor:
    """``(R, d)`` -> the same rows as float32, refused when not finite or all zero."""
    direction = direction.detach().to(torch.float32)
    if not torch.isfinite(direction).all():
        raise BoundaryFileError(f"{source} holds NaN or infinite values; re-export the boundary")
    if (direction == 0).all():
        raise BoundaryFileError(f"{source} is all zeros; it defines no direction")
    return direction


def _ganspace_component(path: Path, component: int | None) -> Tensor:
    """Row ``component`` of a GANSpace ``.npz``'s ``lat_comp`` ``(K, 1, D)`` (PCA axes in W) as ``(1, D)``."""
    with np.load(path, allow_pickle=False) as archive:
        if "lat_comp" not in archive.files:
            raise BoundaryFileError(f"{str(path)!r} has no 'lat_comp' array (found {sorted(archive.files)}); expected "
                                    "a GANSpace components file (lat_comp, lat_mean, lat_stdev)")
        components = np.asarray(archive["lat_comp"], dtype=np.float32)
    components = components.reshape(components.shape[0], -1) if components.ndim == 3 else components
    if components.ndim != 2:
        raise BoundaryFileError(f"{str(path)!r}: lat_comp has shape {components.shape}; expected (K, 1, D) or (K, D)")
    if component is None or not 0 <= component < components.shape[0]:
        raise BoundaryFileError(f"{str(path)!r} holds {components.shape[0]} GANSpace components; choose the pose one "
                                f"with component=k, 0 <= k < {components.shape[0]} (got {component})")
    return torch.from_numpy(components[component : component + 1])


def load_boundary(path: str | Path, component: int | None = None) -> Tensor:
    """Read a pose boundary as a ``(1, style_dim)`` or ``(n_latent, style_dim)`` float32 tensor, rows as stored.

    Accepts InterFaceGAN's ``.npy`` (``(1, 512)`` float64 or float32, e.g. ``stylegan_ffhq_pose_w_boundary.npy``
    or 3D-GANTex's ``pose_boundary.npy``; a flat ``(512,)`` is read as one row), e4e's
    ``.pt``/``.pth`` tensors (``editings/interfacegan_directions/pose.pt`` is ``(1, 18, 512)``, one direction
    per W+ row, saved on CUDA; ``age.pt``/``smile.pt`` are ``(1, 512)``; ``(18, 512)`` too), read onto the CPU
    whatever device they were saved from, and GANSpace's components ``.npz`` (``lat_comp`` ``(K, 1, 512)``), of
    which ``component`` picks one (SeFa's closed-form directions come from ``facetex.gan.sefa.sefa_boundary``).
    The rows are kept as stored: a strength ``f`` walks ``w + f d`` as InterFaceGAN's ``linear_interpolate`` (W+),
    e4e's ``LatentEditor.apply_interfacegan`` and 3D-GANTex's ``FaceEditor.edit`` do, so the published strengths
    mean what they mean there (the published directions are unit-norm; a direction of another length scales the
    walk, which :func:`calibrate` measures in degrees per unit of ``f`` like any other).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boundary file {str(path)!r} not found; pass the path of an InterFaceGAN .npy "
                                "(e.g. stylegan_ffhq_pose_w_boundary.npy), an e4e direction .pt (e.g. pose.pt) or a "
                                "GANSpace components .npz")
    suffix = path.suffix.lower()
    if component is not None and suffix != ".npz":
        raise BoundaryFileError(f"{str(path)!r} holds one direction; component={component} only picks among the "
                                "components of a GANSpace .npz")
    try:
        if suffix == ".npz":
            direction = _ganspace_component(path, component)
        elif suffix == ".npy":
            direction = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        elif suffix in (".pt", ".pth"):
            direction = load_checkpoint(path, BoundaryFileError, "e4e direction tensor (.pt)")
        else:
            raise BoundaryFileError(f"{str(path)!r}: unknown boundary format {suffix!r}; use .npy (InterFaceGAN), "
                                    ".pt (e4e) or .npz (GANSpace)")
    except BoundaryFileError:
        raise
    except Exception as error:  # numpy and torch raise many types for damaged files
        raise BoundaryFileError(f"cannot read {str(path)!r} as a boundary ({type(error).__name__}: {error}); "
                                "the file is damaged or not a saved array/tensor") from error
    if not isinstance(direction, Tensor):
        raise BoundaryFileError(f"{str(path)!r} holds a {type(direction).__name__}, not a tensor of shape (rows, dim)")
    shape = tuple(direction.shape)
    while direction.dim() > 2 and direction.shape[0] == 1:  # e4e's (1, n_latent, style_dim)
        direction = direction[0]
    if direction.dim() == 1:
        direction = direction[None]
    if direction.dim() != 2 or direction.shape[1] < 2:
        raise BoundaryFileError(f"{str(path)!r} has shape {shape}; expected (1, style_dim), (n_latent, style_dim) "
                                "or (1, n_latent, style_dim), e.g. (1, 512), (18, 512) or (1, 18, 512)")
    return _checked_rows(direction, repr(str(path)))


def _check_boundary(ws: Tensor, boundary: Tensor) -> None:
    """Raise unless ``boundary (1 or n_latent, d)`` fits ``ws (B, n_latent, d)``."""
    if ws.dim() != 3:
        raise ValueError(f"ws must be (B, n_latent, style_dim), got {tuple(ws.shape)}")
    if boundary.dim() != 2 or boundary.shape[1] != ws.shape[2] or boundary.shape[0] not in (1, ws.shape[1]):
        raise ValueError(f"boundary of shape {tuple(boundary.shape)} does not fit ws of shape {tuple(ws.shape)}; "
                         f"expected (1, {ws.shape[2]}) or ({ws.shape[1]}, {ws.shape[2]})")


def apply_walk(ws: Tensor, boundary: Tensor, strength: Tensor) -> Tensor:
    """``w' = w + f n`` on every W+ row: ``ws (B, n_latent, d)``, ``strength (K,)`` -> ``(B, K, n_latent, d)``.

    ``boundary`` is ``(1, d)`` (one direction for all rows, as 3D-GANTex) or ``(n_latent, d)``
    (one per row, as e4e's directions). ``strength`` may also be ``(B, K)``, one set per code.
    """
    _check_boundary(ws, boundary)
    strength = torch.as_tensor(strength, dtype=ws.dtype, device=ws.device)
    if strength.dim() == 1:
        strength = strength.expand(ws.shape[0], -1)
    if strength.dim() != 2 or strength.shape[0] != ws.shape[0]:
        raise ValueError(f"strength must be (K,) or (B, K) with B = {ws.shape[0]}, got {tuple(strength.shape)}")
    return ws[:, None] + strength[:, :, None, None] * boundary.to(ws)[None, None]


def _sample_ws(generator: LatentGenerator, num_samples: int, rng: torch.Generator | None,
               device: torch.device | str | None) -> Tensor:
    """``num_samples`` codes ``(N, n_latent, d)`` from the mapping network (z ~ N(0, I), drawn on ``rng``'s
    device and moved to ``device``, the generator's)."""
    z = torch.randn(num_samples, generator.style_dim, generator=rng, device=rng.device if rng is not None else None)
    with torch.no_grad():
        ws = generator.mapping(z.to(device))
    if ws.dim() == 2:
        ws = ws[:, None].expand(-1, generator.n_latent, -1)
    if ws.shape[1:] != (generator.n_latent, generator.style_dim):
        raise ValueError(f"generator.mapping returned {tuple(ws.shape)}; expected (N, {generator.n_latent}, "
                         f"{generator.style_dim}) or (N, {generator.style_dim})")
    return ws


def measure_yaw(generator: LatentGenerator, yaw_estimator: YawEstimator, ws: Tensor, batch_size: int = 16) -> Tensor:
    """Render ``ws (N, n_latent, d)`` and estimate each image's yaw: ``(N,)`` degrees, in chunks of ``batch_size``."""
    yaws = []
    with torch.no_grad():
        for chunk in ws.split(batch_size):
            yaw = torch.as_tensor(yaw_estimator(generator.synthesis(chunk, noise_mode="const")))
            if yaw.shape != (chunk.shape[0],):
                raise ValueError(f"the yaw estimator returned shape {tuple(yaw.shape)} for {chunk.shape[0]} images; "
                                 "it must return one yaw in degrees per image, shape (B,)")
            if not torch.isfinite(yaw).all():
                raise RuntimeError("the yaw estimator returned NaN/inf for some generated images; make it raise "
                                   "or return a finite yaw for every face it is given")
            yaws.append(yaw.to(ws.device, torch.float32))
    return torch.cat(yaws)


@dataclass
class BoundaryReport:
    """How well the learned boundary explains the measured yaws.

    ``latents (N, d)`` and ``yaw (N,)`` the samples; ``method``; ``slope`` degrees per unit of
    ``w . n`` (regression) or the logistic weight norm; ``score`` R^2 of the linear yaw model
    (regression) or the split's training accuracy (logistic); ``num_used`` samples in the fit.
    """

    latents: Tensor
    yaw: Tensor
    method: BoundaryMethod
    slope: float
    score: float
    num_used: int


def fit_boundary(latents: Tensor, yaw: Tensor, method: BoundaryMethod = "regression", ridge: float = 1e-3,
                 margin: float = 5.0, iterations: int = 200) -> tuple[Tensor, BoundaryReport]:
    """The unit normal ``(1, d)`` of the yaw direction in W from ``latents (N, d)`` and ``yaw (N,)`` degrees.

    ``regression``: ridge least squares ``yaw ~ c . (w - mean) + b``; the boundary is ``c / |c|``
    and ``|c|`` the degrees per unit step. Uses the measured angles, so it needs fewer samples.
    ``logistic``: InterFaceGAN's recipe of a linear classifier splitting left from right faces
    (yaw > 0 vs < 0, samples within ``margin`` degrees of 0 left out), here an L2-regularised
    logistic regression instead of their linear SVM; the boundary is the classifier's unit
    normal, pointing to positive yaw. Solved in float64.
    """
    if latents.dim() != 2 or yaw.shape != latents.shape[:1]:
        raise ValueError(f"latents must be (N, d) and yaw (N,), got {tuple(latents.shape)} and {tuple(yaw.shape)}")
    x = latents.detach().to(torch.float64)
    y = yaw.detach().to(torch.float64)
    x = x - x.mean(0)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    if method == "regression":
        target = y - y.mean()
        coefficients = torch.linalg.solve(x.T @ x + ridge * x.shape[0] * eye, x.T @ target)
        residual = target - x @ coefficients
        score = 1.0 - float(residual.square().sum() / target.square().sum().clamp_min(1e-12))
        used = x.shape[0]
    elif method == "logistic":
        keep = y.abs() >= margin
        if bool((y[keep] > 0).all()) or bool((y[keep] < 0).all()):
            raise ValueError(f"the logistic split needs faces turned both ways beyond {margin} degrees; the sampled "
                             "yaws are all on one side: sample more codes or lower margin")
        x, labels = x[keep], (y[keep] > 0).to(x.dtype)
        coefficients = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
        bias = torch.zeros((), dtype=x.dtype, device=x.device, requires_grad=True)
        optimiser = torch.optim.LBFGS([coefficients, bias], max_iter=iterations, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimiser.zero_grad()
            logits = x @ coefficients + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            loss = loss + 0.5 * ridge * coefficients.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimiser.step(closure)
        coefficients = coefficients.detach()
        score = float(((x @ coefficients + bias.detach() > 0).to(x.dtype) == labels).to(x.dtype).mean())
        used = x.shape[0]
    else:
        raise ValueError(f"unknown method {method!r}; choose 'regression' or 'logistic'")
    norm = coefficients.norm()
    if norm == 0:
        raise RuntimeError("the fitted yaw direction is zero: the measured yaw does not change with w")
    boundary = (coefficients / norm).to(latents.dtype)[None]
    report = BoundaryReport(latents=latents.detach(), yaw=yaw.detach(), method=method, slope=float(norm),
                            score=score, num_used=used)
    return boundary, report


def learn_boundary(generator: LatentGenerator, yaw_estimator: YawEstimator, num_samples: int,
                   method: BoundaryMethod = "regression", batch_size: int = 16, rng: torch.Generator | None = None,
                   device: torch.device | str | None = None, **fit_options: float) -> tuple[Tensor, BoundaryReport]:
    """Learn the pose boundary of ``generator``: sample codes, render, estimate yaw, fit a direction.

    Codes come from the mapping network with ``z ~ N(0, I)`` (drawn from ``rng``); their rows
    are equal, so the fit is in W (row 0), as InterFaceGAN's; ``device`` is where the generator
    lives. Returns the unit boundary
    ``(1, style_dim)`` and a :class:`BoundaryReport`; ``fit_options`` go to :func:`fit_boundary`.
    """
    if num_samples <= generator.style_dim:
        raise ValueError(f"num_samples={num_samples} cannot determine a direction in {generator.style_dim} "
                         "dimensions; sample at least a few times style_dim codes")
    ws = _sample_ws(generator, num_samples, rng, device)
    yaw = measure_yaw(generator, yaw_estimator, ws, batch_size)
    return fit_boundary(ws[:, 0], yaw, method, **fit_options)  # type: ignore[arg-type]


@dataclass
class Calibration:
    """Measured yaw against walk strength for a set of codes, with ``yaw = a f + b`` fitted.

    ``strengths (K,)``; ``measured_yaw (B, K)`` degrees; per code ``slope (B,)`` (a, degrees per
    unit strength), ``intercept (B,)`` (b, the code's own yaw) and ``rmse (B,)`` of the line;
    ``pooled_slope`` the single slope of all codes (each with its own intercept), which
    :meth:`strength_for` uses for codes that were not calibrated.
    """

    boundary: Tensor
    strengths: Tensor
    measured_yaw: Tensor
    slope: Tensor
    intercept: Tensor
    rmse: Tensor
    pooled_slope: float
    generator: LatentGenerator = field(repr=False)
    yaw_estimator: YawEstimator = field(repr=False)
    batch_size: int = 16

    def strength_for(self, yaw_degrees: Tensor | list[float], base_yaw: Tensor | None = None) -> Tensor:
        """Strengths ``(B, Y)`` that turn each code to each asked yaw ``(Y,)`` degrees.

        Without ``base_yaw`` the calibrated codes' own lines are used; with ``base_yaw (B,)``
        (the measured yaw of other codes at strength 0) the pooled slope is.
        """
        yaw = torch.as_tensor(yaw_degrees, dtype=torch.float32, device=self.strengths.device).reshape(-1)
        if base_yaw is None:
            return (yaw[None] - self.intercept[:, None]) / self.slope[:, None]
        return (yaw[None] - base_yaw.to(yaw)[:, None]) / self.pooled_slope

    def views_at(self, ws: Tensor, yaws: Tensor | list[float], refine_steps: int = 1) -> tuple[Tensor, Tensor]:
        """Codes turned to the asked yaws, and the yaw each generated view really has.

        ``ws (B, n_latent, d)``, ``yaws (Y,)`` degrees -> ``ws_views (B, Y, n_latent, d)`` and
        ``measured_yaw (B, Y)``. Each code's yaw at strength 0 is measured, the pooled slope gives
        the first strengths, and ``refine_steps`` secant corrections ``f += (target - measured) / a``
        absorb any curvature of the yaw-strength relation. The returned yaws are measured on the
        views it returns; of the ``refine_steps + 1`` tries, each view keeps the closest one.
        """
        target = torch.as_tensor(yaws, dtype=torch.float32, device=ws.device).reshape(-1)
        base_yaw = measure_yaw(self.generator, self.yaw_estimator, ws, self.batch_size)
        strength = self.strength_for(target, base_yaw).to(ws.device)
        best_views, best_yaw = None, None
        for step in range(refine_steps + 1):
            views = apply_walk(ws, self.boundary.to(ws), strength)
            measured = measure_yaw(self.generator, self.yaw_estimator, views.flatten(0, 1), self.batch_size)
            measured = measured.reshape(strength.shape)
            if best_yaw is None:
                best_views, best_yaw = views, measured
            else:  # keep, per view, the step that came closest (a noisy estimator need not improve every step)
                closer = (measured - target).abs() < (best_yaw - target).abs()
                best_views = torch.where(closer[..., None, None], views, best_views)
                best_yaw = torch.where(closer, measured, best_yaw)
            if step < refine_steps:
                strength = strength + (target[None] - measured) / self.pooled_slope
        return best_views, best_yaw


def calibrate(generator: LatentGenerator, boundary: Tensor, yaw_estimator: YawEstimator, ws: Tensor,
              strengths: Tensor | list[float], batch_size: int = 16) -> Calibration:
    """Measure yaw along the walk for ``ws (B, n_latent, d)`` at ``strengths (K,)`` and fit ``yaw = a f + b``.

    Least squares per code, plus the pooled slope (per-code intercepts, one shared slope). Needs
    at least two distinct strengths; the pooled slope must be non-zero.
    """
    strengths = torch.as_tensor(strengths, dtype=torch.float32, device=ws.device).reshape(-1)
    if strengths.unique().numel() < 2:
        raise ValueError(f"calibration needs at least two distinct strengths, got {strengths.tolist()}")
    views = apply_walk(ws, boundary.to(ws), strengths)
    measured = measure_yaw(generator, yaw_estimator, views.flatten(0, 1), batch_size).reshape(ws.shape[0], -1)
    centred_strength = strengths - strengths.mean()
    centred_yaw = measured - measured.mean(dim=1, keepdim=True)
    denominator = centred_strength.square().sum()
    slope = (centred_yaw * centred_strength).sum(dim=1) / denominator
    intercept = measured.mean(dim=1) - slope * strengths.mean()
    rmse = (measured - (slope[:, None] * strengths + intercept[:, None])).square().mean(dim=1).sqrt()
    pooled_slope = float(slope.mean())
    if pooled_slope == 0.0 or (slope == 0).any():
        raise RuntimeError("the measured yaw does not change along the boundary; check the boundary and the estimator")
    return Calibration(boundary=boundary, strengths=strengths, measured_yaw=measured, slope=slope,
                       intercept=intercept, rmse=rmse, pooled_slope=pooled_slope, generator=generator,
                       yaw_estimator=yaw_estimator, batch_size=batch_size)
