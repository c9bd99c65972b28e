"""Pose walk against a synthetic ground truth: a stand-in generator that renders a real 3DMM
(the Surrey Face Model) at yaw = a * (w - w_avg) . n for a hidden unit n, and an image-based
yaw estimator that reads landmarks off the rendering and fits the 3DMM to them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d.fitting import fit_landmarks, to_ibug68
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.synthetic import render_textured
from facetex.gan.pose_walk import (
    BoundaryFileError,
    apply_walk,
    calibrate,
    fit_boundary,
    learn_boundary,
    load_boundary,
)

STYLE_DIM, N_LATENT, IMAGE_SIZE = 16, 4, 128
YAW_SLOPE, PITCH_SLOPE = 10.0, 5.0  # degrees per unit of w along the hidden yaw / pitch directions


def uv_colour_texture(size: int = 256) -> Tensor:
    """``(1, 3, size, size)``: red = u, green = v, blue = 1 (marks the face), so a pixel's colour is its UV."""
    texel = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    u, v = texel[None, :].expand(size, size), 1.0 - texel[:, None].expand(size, size)
    return torch.stack([u, v, torch.ones_like(u)])[None]


class RenderedHeadGenerator(nn.Module):
    """A LatentGenerator whose 'image' is the 3DMM turned by yaw a * (w - w_avg) . n and pitch along m."""

    def __init__(self, model: MorphableModel, seed: int = 0) -> None:
        super().__init__()
        rng = torch.Generator().manual_seed(seed)
        self.n_latent, self.style_dim = N_LATENT, STYLE_DIM
        self.model = model
        basis, _ = torch.linalg.qr(torch.randn(STYLE_DIM, STYLE_DIM, generator=rng))
        self.register_buffer("yaw_direction", basis[:, 0])
        self.register_buffer("pitch_direction", basis[:, 1])
        self.register_buffer("shape_directions", basis[:, 2:5])  # identity varies along 3 more directions
        self.register_buffer("mixing", torch.eye(STYLE_DIM) + 0.3 * torch.randn(STYLE_DIM, STYLE_DIM, generator=rng))
        self.register_buffer("w_avg", torch.randn(STYLE_DIM, generator=rng))
        self.register_buffer("texture", uv_colour_texture())
        extent = float(model.mean[:, 1].amax() - model.mean[:, 1].amin())
        self.pixels_per_unit = 0.6 * IMAGE_SIZE / extent

    def mapping(self, z: Tensor) -> Tensor:
        w = z @ self.mixing.T + self.w_avg
        return w[:, None].expand(-1, self.n_latent, -1)

    def true_yaw(self, ws: Tensor) -> Tensor:
        return YAW_SLOPE * ((ws.mean(1) - self.w_avg) @ self.yaw_direction)

    def synthesis(self, ws: Tensor, noise_mode: str = "random") -> Tensor:  # noise-free: every mode alike
        offset = ws.mean(1) - self.w_avg
        batch = ws.shape[0]
        pitch = PITCH_SLOPE * (offset @ self.pitch_direction)
        shape = torch.zeros(batch, self.model.num_shape)
        shape[:, :3] = 0.2 * offset @ self.shape_directions
        vertices = self.model(shape, torch.zeros(batch, self.model.num_expression))
        rotation = euler_to_rotation(self.true_yaw(ws), pitch, torch.zeros(batch))
        screen = project(vertices, rotation, torch.full((batch,), self.pixels_per_unit),
                         torch.full((batch, 2), IMAGE_SIZE / 2))
        images, _ = render_textured(screen, self.model.triangles, self.model.uv, self.texture, IMAGE_SIZE)
        return images * 2.0 - 1.0


class UVLandmarkYawEstimator:
    """Image-based yaw: find each landmark where the pixel colour equals its UV, fit the 3DMM to them."""

    def __init__(self, model: MorphableModel, sigma: float = 0.004) -> None:
        self.model = model
        self.landmark_uv = model.uv[model.landmark_vertices]  # (L, 2)
        self.sigma = sigma

    def __call__(self, images: Tensor) -> Tensor:
        colours = (images + 1.0) / 2.0
        height, width = colours.shape[-2:]
        face = (colours[:, 2] > 0.5).flatten(1)  # (B, HW)
        uv = colours[:, :2].flatten(2).transpose(1, 2)  # (B, HW, 2)
        distance_sq = (uv[:, None] - self.landmark_uv[None, :, None]).square().sum(-1)  # (B, L, HW)
        weight = torch.exp(-distance_sq / (2 * self.sigma**2)) * face[:, None]
        rows, cols = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        centres = torch.stack([cols, rows], dim=-1).reshape(-1, 2)  # (HW, 2) pixel centres (x, y)
        points = weight @ centres / weight.sum(-1, keepdim=True).clamp_min(1e-12)  # (B, L, 2)
        visible = (weight.amax(-1) > math.exp(-0.5)).float()  # some pixel within one sigma of the landmark's UV
        landmarks, _ = to_ibug68(points, self.model.landmark_ids)
        fit = fit_landmarks(self.model, landmarks, to_ibug68(visible[..., None], self.model.landmark_ids)[0][..., 0])
        return fit.yaw


@pytest.fixture(scope="module")
def sfm(shared_assets) -> MorphableModel:
    return MorphableModel.from_sfm(shared_assets / "sfm" / "sfm_3448.npz")


@pytest.fixture(scope="module")
def stand_in(sfm):
    return RenderedHeadGenerator(sfm), UVLandmarkYawEstimator(sfm)


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_estimator_reads_rendered_yaw(stand_in):
    generator, estimator = stand_in
    ws = generator.mapping(torch.randn(8, STYLE_DIM, generator=torch.Generator().manual_seed(3)))
    wanted = torch.linspace(-42.0, 42.0, 8)
    ws = ws + ((wanted - generator.true_yaw(ws)) / YAW_SLOPE)[:, None, None] * generator.yaw_direction
    truth = generator.true_yaw(ws)
    torch.testing.assert_close(truth, wanted)
    measured = estimator(generator.synthesis(ws))
    assert (measured - truth).abs().max() < 2.5, (truth, measured)  # landmark fit with unknown shape and pitch


@pytest.mark.slow  # 9-20 s on 2 shared cores
def test_learn_calibrate_and_views_recover_the_hidden_pose_direction(stand_in):
    generator, estimator = stand_in
    rng = torch.Generator().manual_seed(0)
    boundary, report = learn_boundary(generator, estimator, num_samples=96, batch_size=32, rng=rng)
    assert boundary.shape == (1, STYLE_DIM)
    assert torch.isclose(boundary.norm(), torch.tensor(1.0))
    alignment = cosine(boundary, generator.yaw_direction)
    assert alignment >= 0.95, alignment
    assert report.score > 0.95
    assert report.slope == pytest.approx(YAW_SLOPE, rel=0.1)

    # InterFaceGAN's split on the same measurements points the same way.
    split, split_report = fit_boundary(report.latents, report.yaw, method="logistic")
    assert cosine(split, generator.yaw_direction) >= 0.9
    assert split_report.score > 0.95

    ws = generator.mapping(torch.randn(3, STYLE_DIM, generator=torch.Generator().manual_seed(1)))
    calibration = calibrate(generator, boundary, estimator, ws, strengths=torch.arange(-2.0, 3.0), batch_size=32)
    expected_slope = YAW_SLOPE * alignment  # w' . n moves by f * (boundary . n) per unit strength
    assert calibration.pooled_slope == pytest.approx(expected_slope, rel=0.05)
    assert torch.allclose(calibration.intercept, generator.true_yaw(ws), atol=3.0)
    asked = torch.arange(-40.0, 41.0, 10.0)
    strengths = calibration.strength_for(asked)
    assert strengths.shape == (3, asked.numel())
    views, measured = calibration.views_at(ws, asked, refine_steps=2)
    assert views.shape == (3, asked.numel(), N_LATENT, STYLE_DIM)
    assert (measured - asked).abs().max() <= 2.0, measured
    assert (generator.true_yaw(views.flatten(0, 1)).reshape(3, -1) - asked).abs().max() <= 4.0


def test_a_longer_direction_walks_further_per_unit_and_the_calibration_still_gives_degrees(stand_in):
    """A direction file of length 3 (official editors walk ``w + f d`` with it as it is): three times the degrees per
    unit strength, a third of the strengths for the same asked yaws, and views at the asked yaws all the same."""
    generator, estimator = stand_in
    ws = generator.mapping(torch.randn(2, STYLE_DIM, generator=torch.Generator().manual_seed(6)))
    unit = generator.yaw_direction[None]
    calibrations = [calibrate(generator, length * unit, estimator, ws, strengths=[-1.0, 0.0, 1.0], batch_size=32)
                    for length in (1.0, 3.0)]
    assert calibrations[1].pooled_slope == pytest.approx(3 * calibrations[0].pooled_slope, rel=0.05)
    assert calibrations[0].pooled_slope == pytest.approx(YAW_SLOPE, rel=0.1)
    asked = torch.tensor([-30.0, 0.0, 30.0])
    base = generator.true_yaw(ws)
    torch.testing.assert_close(calibrations[1].strength_for(asked, base), calibrations[0].strength_for(asked, base) / 3,
                               rtol=0.05, atol=0.05)
    views, measured = calibrations[1].views_at(ws, asked, refine_steps=1)
    assert (measured - asked).abs().max() <= 2.5, measured
    assert (generator.true_yaw(views.flatten(0, 1)).reshape(2, -1) - asked).abs().max() <= 4.0


def test_apply_walk_adds_strength_times_boundary_to_every_row():
    ws = torch.randn(2, 5, 8)
    boundary = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1)
    strength = torch.tensor([-3.0, 0.0, 4.0])
    walked = apply_walk(ws, boundary, strength)
    assert walked.shape == (2, 3, 5, 8)
    torch.testing.assert_close(walked[:, 1], ws)
    torch.testing.assert_close(walked[:, 2] - ws, 4.0 * boundary.expand(2, 5, 8))
    per_row = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    torch.testing.assert_close(apply_walk(ws, per_row, strength)[:, 0], ws - 3.0 * per_row)
    with pytest.raises(ValueError, match="does not fit"):
        apply_walk(ws, torch.randn(3, 8), strength)


def test_load_boundary_formats_and_errors(tmp_path):
    direction = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
    np.save(tmp_path / "pose_boundary.npy", direction)
    loaded = load_boundary(tmp_path / "pose_boundary.npy")
    assert loaded.shape == (1, 512) and loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, torch.from_numpy(direction))

    per_row = torch.randn(18, 512) * 3
    torch.save(per_row, tmp_path / "pose.pt")
    loaded = load_boundary(tmp_path / "pose.pt")
    assert loaded.shape == (18, 512)
    torch.testing.assert_close(loaded, per_row)

    np.save(tmp_path / "zero.npy", np.zeros((1, 512), np.float32))
    np.save(tmp_path / "cube.npy", np.ones((2, 3, 4), np.float32))
    (tmp_path / "broken.npy").write_bytes(b"not an array")
    with pytest.raises(BoundaryFileError, match="all zeros"):
        load_boundary(tmp_path / "zero.npy")
    with pytest.raises(BoundaryFileError, match="expected"):
        load_boundary(tmp_path / "cube.npy")
    with pytest.raises(BoundaryFileError, match="cannot read"):
        load_boundary(tmp_path / "broken.npy")
    with pytest.raises(FileNotFoundError, match="InterFaceGAN"):
        load_boundary(tmp_path / "missing.npy")


def test_fit_boundary_recovers_a_linear_direction_exactly():
    rng = torch.Generator().manual_seed(5)
    latents = torch.randn(200, 12, generator=rng) * torch.linspace(0.5, 2.0, 12)
    normal = torch.nn.functional.normalize(torch.randn(12, generator=rng), dim=0)
    yaw = 20.0 * latents @ normal + 3.0 + 0.1 * torch.randn(200, generator=rng)
    boundary, report = fit_boundary(latents, yaw, ridge=0.0)
    assert cosine(boundary, normal) > 0.9999
    assert report.slope == pytest.approx(20.0, rel=1e-2)
    with pytest.raises(ValueError, match="one side"):
        fit_boundary(latents, yaw.abs() + 10.0, method="logistic")
