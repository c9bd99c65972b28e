"""Synthetic renders: texture reproduction, coverage masks and landmark ground truth."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facetex.face3d.camera import project
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.rasterizer import rasterize
from facetex.face3d.synthetic import (
    checkerboard_texture,
    lambertian_shading,
    random_face_batch,
    render_textured,
    sample_texture,
)


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / F.mse_loss(image, reference)))


def quad(size: float, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A square of side ``size`` pixels at ``offset``, with uv covering the unit square (v up)."""
    screen = torch.tensor([[[0.0, 0.0, 1.0], [size, 0.0, 1.0], [size, size, 1.0], [0.0, size, 1.0]]])
    screen[..., :2] += offset
    uv = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    return screen, torch.tensor([[0, 1, 2], [0, 2, 3]]), uv


def test_flat_quad_reproduces_the_texture() -> None:
    texture = checkerboard_texture(64, squares=4)[None]
    screen, faces, uv = quad(64)
    images, mask = render_textured(screen, faces, uv, texture, 64)
    assert bool(mask.all())
    assert psnr(images, texture) > 60
    # Twice the size: equals bilinear upsampling of the texture.
    screen, faces, uv = quad(128)
    images, _ = render_textured(screen, faces, uv, texture, 128)
    upsampled = F.interpolate(texture, scale_factor=2, mode="bilinear", align_corners=False)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # borders clamp differently
    assert psnr(images[inner], upsampled[inner]) > 30


def test_checkerboard_orientation_and_colours() -> None:
    texture = checkerboard_texture(32, squares=2, low=0.5, high=1.0)
    # Row 0 is v = 1 (top): green (grows with v) is high there; red grows to the right.
    assert float(texture[1, 0].mean()) > float(texture[1, -1].mean())
    assert float(texture[0, :, -1].mean()) > float(texture[0, :, 0].mean())
    # Squares alternate: top-left square (u < .5, v > .5) has parity 1 -> high.
    assert float(texture[2, 0, 0]) == pytest.approx((1.0 - 0.6 * (0.5 / 32)) * 1.0)
    assert float(texture[2, 0, 16]) == pytest.approx((1.0 - 0.6 * (16.5 / 32)) * 0.5)


def test_sample_texture_hits_texel_centres() -> None:
    texture = torch.arange(12.0).view(1, 1, 3, 4)
    uv = torch.tensor([[[[(1 + 0.5) / 4, 1 - (2 + 0.5) / 3]]]])  # column 1, row 2
    assert float(sample_texture(texture, uv)) == pytest.approx(9.0)


def test_mask_matches_rasterised_coverage_and_background_shows() -> None:
    screen, faces, uv = quad(20, offset=6.3)
    background = torch.full((1, 3, 32, 32), 0.25)
    images, mask = render_textured(screen, faces, uv, checkerboard_texture(16)[None], 32, background=background)
    assert torch.equal(mask[:, 0].bool(), rasterize(screen, faces, 32).mask)
    assert torch.equal(images[:, :, ~mask[0, 0].bool()], torch.full((1, 3, int((mask == 0).sum())), 0.25))


def test_lambertian_shading_known_values() -> None:
    normals = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]])
    shading = lambertian_shading(normals, torch.tensor([[0.0, 0.0, 2.0]]), ambient=0.3, diffuse=0.7)
    assert torch.allclose(shading[0, :, 0], torch.tensor([1.0, 0.3, 0.3]))
    tilted = lambertian_shading(normals[:, :1], torch.tensor([[1.0, 0.0, 1.0]]), ambient=0.0, diffuse=1.0)
    assert float(tilted) == pytest.approx(2 ** -0.5)


def test_shading_multiplies_the_texture() -> None:
    screen, faces, uv = quad(16)
    texture = checkerboard_texture(16)[None]
    shading = torch.full((1, 4, 1), 0.5)
    shaded, _ = render_textured(screen, faces, uv, texture, 16, shading=shading)
    plain, _ = render_textured(screen, faces, uv, texture, 16)
    assert torch.allclose(shaded, 0.5 * plain)


@pytest.fixture(scope="module")
def sfm(shared_assets: Path) -> MorphableModel:
    return MorphableModel.from_sfm(shared_assets / "sfm" / "sfm_3448.npz")


def test_random_face_batch_ground_truth(sfm: MorphableModel) -> None:
    batch = random_face_batch(sfm, 3, 96, torch.Generator().manual_seed(0))
    assert batch.images.shape == (3, 3, 96, 96) and batch.masks.shape == (3, 1, 96, 96)
    assert float(batch.images.min()) >= 0 and float(batch.images.max()) <= 1
    assert bool(((batch.yaw >= -60) & (batch.yaw <= 60)).all())
    vertices = sfm(batch.shape, batch.expression)
    screen = project(vertices, batch.rotation, batch.scale, batch.translation)
    assert torch.allclose(batch.screen_vertices, screen)
    assert torch.allclose(batch.landmarks2d, screen[:, sfm.landmark_vertices, :2])
    assert torch.equal(batch.masks[:, 0].bool(), rasterize(screen, sfm.triangles, 96).mask)
    coverage = batch.masks.mean(dim=(1, 2, 3))
    assert bool(((coverage > 0.15) & (coverage < 0.8)).all())
    # The face is textured and lit: its pixels vary, and differ from one sample to the next.
    assert float(batch.images[0][:, batch.masks[0, 0].bool()].std()) > 0.02
    assert not torch.allclose(batch.images[0], batch.images[1])


def test_random_face_batch_is_reproducible(sfm: MorphableModel) -> None:
    first = random_face_batch(sfm, 2, 48, torch.Generator().manual_seed(5), yaw_range=(10.0, 20.0))
    second = random_face_batch(sfm, 2, 48, torch.Generator().manual_seed(5), yaw_range=(10.0, 20.0))
    assert torch.equal(first.images, second.images)
    assert bool(((first.yaw >= 10) & (first.yaw <= 20)).all())


def test_random_face_batch_needs_uv(sfm: MorphableModel) -> None:
    no_uv = MorphableModel(sfm.mean, sfm.shape_basis, sfm.expression_basis, sfm.triangles, sfm.landmark_vertices,
                           sfm.landmark_ids)
    with pytest.raises(ValueError, match="texture coordinates"):
        random_face_batch(no_uv, 1, 32, torch.Generator().manual_seed(0))
