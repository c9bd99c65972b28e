"""FFHQ alignment: known answers on a similarity-transformed template, round trips, and a real FFHQ image."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facetex.face3d.detector import FaceDetector
from facetex.face3d.image_io import load_image
from facetex.face3d.regressor import FaceRegressor
from facetex.gan.align import (
    AlignmentError,
    align_face,
    align_photo,
    apply_transform,
    ffhq_landmarks,
    ffhq_quad,
    paste_back,
    quad_to_transform,
    to_image_units,
)

TEMPLATE_SIZE = 256


def similarity(angle_degrees: float, scale: float, tx: float, ty: float) -> torch.Tensor:
    angle = math.radians(angle_degrees)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def template_landmarks() -> torch.Tensor:
    """68 points whose FFHQ quad is exactly the ``TEMPLATE_SIZE`` frame (eyes, mouth placed like a face)."""
    points = torch.rand(68, 2, generator=torch.Generator().manual_seed(0)) * 100 + 50
    points[36:42] = torch.tensor([88.0, 110.0]) + torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    points[42:48] = torch.tensor([166.0, 106.0]) + torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    points[48], points[54] = torch.tensor([100.0, 190.0]), torch.tensor([160.0, 187.0])
    to_template = torch.linalg.inv(quad_to_transform(ffhq_quad(points), TEMPLATE_SIZE))
    return apply_transform(to_template, points)


def smooth_image(size: int, seed: int = 0) -> torch.Tensor:
    coarse = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def warp_by(image: torch.Tensor, source_to_target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Independent reference warp: target pixel centre p samples the source at inverse(M) p."""
    inverse = torch.linalg.inv(source_to_target)
    ys, xs = torch.meshgrid(torch.arange(size[0]) + 0.5, torch.arange(size[1]) + 0.5, indexing="ij")
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    grid = torch.stack([2 * source_x / image.shape[-1] - 1, 2 * source_y / image.shape[-2] - 1], dim=-1)
    return F.grid_sample(image[None], grid[None], align_corners=False, padding_mode="zeros")[0]


def test_quad_of_an_upright_face_by_hand():
    """Eyes at (100, 100) and (160, 100), mouth corners at (110, 160) and (150, 160): eye_to_eye = (60, 0),
    eye_to_mouth = (0, 60), x = (120, 0) (2 * 60 > 1.8 * 60), y = (0, 120), centre (130, 106)."""
    points = torch.zeros(68, 2)
    points[36:42], points[42:48] = torch.tensor([100.0, 100.0]), torch.tensor([160.0, 100.0])
    points[48], points[54] = torch.tensor([110.0, 160.0]), torch.tensor([150.0, 160.0])
    expected = torch.tensor([[10.0, -14.0], [10.0, 226.0], [250.0, 226.0], [250.0, -14.0]])
    torch.testing.assert_close(ffhq_quad(points), expected)


def test_template_quad_is_the_output_frame():
    frame = torch.tensor([[0.0, 0.0], [0.0, 256.0], [256.0, 256.0], [256.0, 0.0]])
    torch.testing.assert_close(ffhq_quad(template_landmarks()), frame, atol=1e-3, rtol=0)


@pytest.mark.parametrize("output_size", [256, 64])  # 64: quad ~2.6x larger than needed -> FFHQ's shrink path
def test_similarity_of_the_template_aligns_back_to_it(output_size):
    template = template_landmarks()
    template_image = smooth_image(TEMPLATE_SIZE)
    placement = similarity(25.0, 1.7, 180.0, 60.0)  # template frame -> photo
    photo = warp_by(template_image, placement, (700, 720))
    photo_landmarks = apply_transform(placement, template)

    aligned = align_face(photo, photo_landmarks, output_size=output_size)
    to_template = torch.diag(torch.tensor([TEMPLATE_SIZE / output_size, TEMPLATE_SIZE / output_size, 1.0]))
    torch.testing.assert_close(aligned.aligned_to_original, placement @ to_template, atol=1e-3, rtol=1e-4)
    recovered = apply_transform(aligned.original_to_aligned, photo_landmarks)
    torch.testing.assert_close(recovered, template * output_size / TEMPLATE_SIZE, atol=1e-2, rtol=0)
    expected = F.interpolate(template_image[None], size=(output_size, output_size), mode="bilinear",
                             antialias=True, align_corners=False)[0]
    border = output_size // 16
    error = (aligned.image - expected)[:, border:-border, border:-border].abs()
    assert error.mean() < 0.01 and error.max() < 0.05, (error.mean(), error.max())


def test_transform_and_image_round_trip():
    photo = smooth_image(300, seed=4)
    landmarks = apply_transform(similarity(-10.0, 0.9, 40.0, 30.0), template_landmarks())
    aligned = align_face((photo * 255).round().to(torch.uint8), landmarks, output_size=256)
    assert aligned.image.dtype == torch.float32 and aligned.image.shape == (3, 256, 256)
    points = torch.rand(500, 2, generator=torch.Generator().manual_seed(1)) * 300
    back = apply_transform(aligned.aligned_to_original, apply_transform(aligned.original_to_aligned, points))
    assert (back - points).abs().max() < 0.5
    pasted, coverage = paste_back(aligned.image, aligned.aligned_to_original, photo)
    assert pasted.shape == photo.shape and coverage.shape == (1, 300, 300)
    inside = F.max_pool2d(1 - coverage[None], 5, stride=1, padding=2)[0] == 0  # away from the square's edge
    assert inside.float().mean() > 0.3
    error = (pasted - photo).abs()[:, inside[0]]
    assert error.mean() < 0.01 and error.max() < 0.03, (error.mean(), error.max())
    assert torch.equal(pasted[:, coverage[0] == 0], photo[:, coverage[0] == 0])


def test_image_units_of_a_pixel_similarity():
    """A 64 px shift of a 256 px frame is a quarter image width; a rotation about the centre stays one."""
    shift = torch.tensor([[1.0, 0.0, 64.0], [0.0, 1.0, -32.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(to_image_units(shift, 256), torch.tensor([[1.0, 0, 0.25], [0, 1.0, -0.125], [0, 0, 1]]))
    about_centre = torch.tensor([[1.0, 0, 128], [0, 1, 128], [0, 0, 1]]) @ similarity(30.0, 1.0, 0.0, 0.0) @ torch.tensor(
        [[1.0, 0, -128], [0, 1, -128], [0, 0, 1]])
    torch.testing.assert_close(to_image_units(about_centre, 256), similarity(30.0, 1.0, 0.0, 0.0), atol=1e-6, rtol=0)


def test_bad_landmarks_raise_clear_errors():
    with pytest.raises(AlignmentError, match="68"):
        ffhq_quad(torch.zeros(5, 2))
    with pytest.raises(AlignmentError, match="coincide"):
        ffhq_quad(torch.zeros(68, 2))
    with pytest.raises(AlignmentError, match="NaN"):
        ffhq_quad(torch.full((68, 2), float("nan")))
    with pytest.raises(ValueError, match="RGB"):
        align_face(torch.zeros(64, 64), template_landmarks())


@pytest.mark.parametrize("name", ["ffhq_00009.png", "ffhq_00012.png"])
def test_real_ffhq_image_is_already_aligned(shared_assets, name):
    """FFHQ images were aligned from dlib's landmarks; 3DDFA_V2's landmarks (another definition of the
    eye and mouth points) give nearly the same square. Measured with align_photo's re-crop
    (ffhq_00009 / ffhq_00012): centre 27.0 / 1.4 px off, side 1042.1 / 999.9 px, angle -0.54 / 0.23
    degrees, corners within 39.1 / 18.5 px of the 1024 frame. Tolerances: 30 px, 6%, 1 degree, 50 px.
    The centre bound was 25 px ("within 17 px") when the crop was not yet the official one: the official
    code's own landmarks (3ddfa_v2/official_outputs.json, single crop, its correct point 44) put
    ffhq_00009's square 32.4 px off (side 1044.0 px, corners 46.9 px); ours with the same crop 31.2 px.
    The single crop's square is the farther one on both photos (corners 47.0 / 27.2 px), which is why
    alignment re-crops; 30 px keeps that choice tested."""
    v2 = shared_assets / "3ddfa_v2"
    detector = FaceDetector.from_checkpoint(v2 / "FaceBoxesProd.pth")
    regressor = FaceRegressor.from_files(v2 / "mb05_120x120.pth", v2 / "param_mean_std_62d_120x120.pkl",
                                         shared_assets / "bfm" / "bfm_noneck_mean.npz")
    image = load_image(shared_assets / "faces" / name)
    aligned = align_photo(image, detector, regressor, output_size=256)
    quad = aligned.quad
    side = quad[3] - quad[0]
    assert (quad.mean(0) - 512.0).norm() < 30.0
    assert side.norm() == pytest.approx(1024.0, rel=0.06)
    assert abs(math.degrees(math.atan2(side[1], side[0]))) < 1.0
    frame = torch.tensor([[0.0, 0.0], [0.0, 1024.0], [1024.0, 1024.0], [1024.0, 0.0]])
    assert (quad - frame).norm(dim=-1).max() < 50.0
    single_crop = ffhq_quad(ffhq_landmarks(image, detector, regressor, crop_policy="box"))
    assert (quad - frame).norm(dim=-1).max() < (single_crop - frame).norm(dim=-1).max()
    expected = F.interpolate(image[None].float() / 255, size=(256, 256), mode="bilinear", antialias=True,
                             align_corners=False)[0]
    assert (aligned.image - expected).abs().mean() < 0.1
