"""The 3D-GANTex multi-view pipeline on a real photo: both view paths, both geometry paths, and its errors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from facetex.face3d.camera import project
from facetex.face3d.detector import FaceDetector, NoFaceError
from facetex.face3d.fitting import to_ibug68
from facetex.face3d.image_io import load_image
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.pipeline import AssetPaths, load_face_model, regress_landmarks
from facetex.face3d.regressor import FaceRegressor
from facetex.gan.align import align_face, apply_transform
from facetex.gan.generator_file import load_generator
from facetex.gan.inversion import InversionConfig, PTIConfig
from facetex.gan.multiview import (
    MultiViewConfig,
    MultiViewPipeline,
    ViewsWithoutFaceError,
    generator_resolution,
)
from facetex.gan.stylegan2 import Generator
from facetex.gan.stylegan3 import Generator as StyleGAN3
from facetex.gan.stylegan3 import stylegan3_config

QUICK_INVERSION = InversionConfig(steps=5, n_mean_latent=200)


class MirrorGenerator(nn.Module):
    """A stand-in StyleGAN whose image is a real face, mirrored when ``w . n > 0``: walking along ``n``
    flips the face's yaw sign, so calibration and measurement run on detectable faces."""

    n_latent, style_dim, size = 4, 8, 256

    def __init__(self, face: Tensor, direction: Tensor) -> None:
        super().__init__()
        self.register_buffer("face", face)  # (3, S, S) in [-1, 1]
        self.register_buffer("direction", direction)  # (1, style_dim)
        self.gain = nn.Parameter(torch.ones(()))

    def mapping(self, z: Tensor) -> Tensor:
        return z

    def synthesis(self, ws: Tensor, noise_mode: str = "random") -> Tensor:  # noise-free: every mode alike
        mirrored = (ws[:, 0] @ self.direction.T)[:, :, None, None] > 0  # (B, 1, 1, 1)
        image = torch.where(mirrored, self.face.flip(-1), self.face)
        return image * self.gain + 0.0 * ws.sum(dim=(1, 2))[:, None, None, None]


@pytest.fixture(scope="module")
def parts(shared_assets: Path) -> tuple[FaceDetector, FaceRegressor, MorphableModel]:
    assets = AssetPaths.from_folder(shared_assets)
    return (FaceDetector.from_checkpoint(assets.detector),
            FaceRegressor.from_files(assets.regressor, assets.param_stats, assets.landmark_bases),
            load_face_model(assets, "sfm"))


@pytest.fixture(scope="module")
def photo(shared_assets: Path) -> Tensor:
    return load_image(shared_assets / "faces" / "ffhq_00009.png")


def random_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(64, style_dim=16, n_mlp=1, channel_max=8).eval()


def pipeline(parts: tuple, generator: nn.Module, **config: object) -> MultiViewPipeline:
    detector, regressor, model = parts
    boundary = torch.nn.functional.normalize(torch.ones(1, generator.style_dim), dim=1)
    options = {"texture_size": 256, "turntable_size": 64, "inversion": QUICK_INVERSION, **config}
    return MultiViewPipeline(generator, boundary, detector, regressor, model, MultiViewConfig(**options))


def test_photo_geometry_turns_the_photo_fit_to_each_view_yaw(parts: tuple, photo: Tensor) -> None:
    """Random views hold no face: each is skipped with its reason, yet the mesh (fitted to the photo) is
    turned to the asked yaws; at the photo's own yaw its landmarks land on the photo's in the crop."""
    detector, regressor, model = parts
    regression = regress_landmarks(photo, detector, regressor)
    photo_yaw = float(regression.yaw[0])
    yaws = (-20.0, photo_yaw)
    run = pipeline(parts, random_generator(), yaws=yaws, strengths=(-1.0, 1.0), landmarks_source="photo")
    result = run(photo, torch.Generator().manual_seed(0))

    assert sorted(result.skipped) == [0, 1] and all("no face" in reason for reason in result.skipped.values())
    assert torch.isnan(result.measured_yaw).all()
    assert result.used_views.tolist() == [0, 1]
    fit = result.reconstruction.fit
    torch.testing.assert_close(fit.yaw[0], torch.tensor(yaws), atol=1e-3, rtol=0)
    assert torch.equal(fit.pitch[0, 0], fit.pitch[0, 1]) and torch.equal(fit.scale[0, 0], fit.scale[0, 1])
    # the view at the photo's yaw: projected model landmarks vs the photo's 3DDFA landmarks in the crop
    in_crop = apply_transform(result.aligned.original_to_aligned, regression.landmarks[0, :, :2].float())
    screen = project(result.reconstruction.vertices[1:2], fit.rotation[0, 1:2], fit.scale[0, 1:2],
                     fit.translation[0, 1:2])
    predicted, known = to_ibug68(model.landmarks(screen)[..., :2], model.landmark_ids)
    known = known[0].bool()
    error = (predicted[0][known] - in_crop[known]).norm(dim=-1)
    print(f"\nlandmark RMSE at the photo yaw: {float(error.square().mean().sqrt()):.2f} px of 64")
    assert float(error.square().mean().sqrt()) < 0.04 * 64  # a few pixels of the 64 px crop
    assert result.views.shape == (2, 3, 64, 64) and result.turntable.shape == (2, 3, 64, 64)
    metrics = result.metrics()
    assert metrics["measured_yaws"] == [None, None]
    assert [view["geometry_yaw"] for view in metrics["views"]] == pytest.approx(list(yaws), abs=1e-3)
    assert all(math.isfinite(view["psnr"]) for view in metrics["views"])


def test_calibrated_views_are_measured_and_fitted(parts: tuple, photo: Tensor) -> None:
    """Calibration on a generator of real (mirrored) faces: each asked yaw is reached to within the
    face's own yaw error, measured again, and every view is used for the shared fit and the texture.
    The stand-in's yaw is a step in the strength (face or mirror), so any strength on the photo's side of
    the step reaches the photo's yaw: the sign check holds because the calibration over -2, 0, 2 straddles
    the step. Measured with the default re-crop: strengths [3.73, -3.80], measured yaws [-32.2, 33.3];
    with ``crop_policy="box"`` (single crop, other inverted code): [-0.089, -3.87], both views still
    within 8 degrees of the asked yaw."""
    detector, regressor, _ = parts
    aligned = align_face(photo, regress_landmarks(photo, detector, regressor).landmarks[0, :, :2], 256)
    direction = torch.nn.functional.normalize(torch.ones(1, 8), dim=1)
    generator = MirrorGenerator(aligned.image * 2 - 1, direction)
    run = pipeline(parts, generator, yaws=(-30.0, 30.0), strengths=None, landmarks_source="views", refine_steps=2)
    result = run(photo, torch.Generator().manual_seed(0))

    print(f"\nasked {result.asked_yaw.tolist()} measured {result.measured_yaw.tolist()} strengths "
          f"{result.strengths.tolist()} fit yaw {result.view_yaw.tolist()} PSNR {result.psnr.tolist()} "
          f"SSIM {result.ssim.tolist()}")
    assert result.skipped == {} and result.used_views.tolist() == [0, 1]
    assert (result.measured_yaw - result.asked_yaw).abs().max() < 8.0
    assert float(result.strengths[0]) * float(result.strengths[1]) < 0  # opposite turns for opposite yaws
    # the shared fit agrees with the measured yaws of its views, and the texture re-renders the real face
    assert (result.view_yaw - result.measured_yaw).abs().max() < 10.0
    assert float(result.psnr.min()) > 20.0 and float(result.ssim.min()) > 0.6


def test_views_geometry_without_faces_names_the_photo_path(parts: tuple, photo: Tensor) -> None:
    run = pipeline(parts, random_generator(), yaws=(0.0,), strengths=(0.0,), landmarks_source="views")
    with pytest.raises(ViewsWithoutFaceError, match="landmarks_source='photo'"):
        run(photo, torch.Generator().manual_seed(0))


def test_calibration_without_faces_asks_for_raw_strengths(parts: tuple, photo: Tensor) -> None:
    run = pipeline(parts, random_generator(), yaws=(0.0,), strengths=None, landmarks_source="photo")
    with pytest.raises(ViewsWithoutFaceError, match="raw `strengths`"):
        run(photo, torch.Generator().manual_seed(0))


def test_photo_without_a_face_raises(parts: tuple) -> None:
    ramp = torch.linspace(0, 255, 200).to(torch.uint8)
    gradient = torch.stack([ramp[None].expand(200, -1), ramp[:, None].expand(-1, 200), ramp.flip(0)[None].expand(200, -1)])
    run = pipeline(parts, random_generator(), yaws=(0.0,), strengths=(0.0,), landmarks_source="photo")
    with pytest.raises(NoFaceError, match="no face found"):
        run(gradient)


def test_config_pairs_strengths_with_yaws() -> None:
    with pytest.raises(ValueError, match="one to one"):
        MultiViewConfig(yaws=(0.0, 10.0), strengths=(0.0,))
    with pytest.raises(ValueError, match="landmarks_source"):
        MultiViewConfig(landmarks_source="mesh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crop_policy"):
        MultiViewConfig(crop_policy="tracking")  # type: ignore[arg-type]


def test_load_generator_reads_rosinality_and_refuses_unknown_files(tmp_path: Path) -> None:
    generator = random_generator()
    torch.save({"g_ema": generator.state_dict()}, tmp_path / "g.pt")
    loaded, _ = load_generator(tmp_path / "g.pt")
    codes = torch.randn(1, generator.n_latent, generator.style_dim)
    torch.testing.assert_close(loaded.synthesis(codes, noise_mode="const"), generator.synthesis(codes, noise_mode="const"))
    assert generator_resolution(loaded) == 64
    with pytest.raises(FileNotFoundError, match="not found"):
        load_generator(tmp_path / "missing.pkl")
    (tmp_path / "g.onnx").write_bytes(b"\0")
    with pytest.raises(ValueError, match="unknown generator format"):
        load_generator(tmp_path / "g.onnx")


def test_stylegan3_with_pivotal_tuning_on_the_bfm_mesh(parts: tuple, photo: Tensor, shared_assets: Path) -> None:
    """The StyleGAN3 path with PTI and the 38,365-vertex BFM mesh; PTI tunes a copy, never the pipeline's generator."""
    detector, regressor, _ = parts
    torch.manual_seed(0)
    generator = StyleGAN3(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3,
                          **{**stylegan3_config("r"), "channel_base": 1024, "channel_max": 32})
    before = {name: p.clone() for name, p in generator.named_parameters()}
    config = MultiViewConfig(yaws=(-20.0, 20.0), strengths=(-2.0, 2.0), landmarks_source="photo", texture_size=256,
                             turntable_size=64, inversion=QUICK_INVERSION, pti=PTIConfig(steps=3))
    bfm = load_face_model(AssetPaths.from_folder(shared_assets), "bfm")
    boundary = torch.nn.functional.normalize(torch.ones(1, 32), dim=1)
    result = MultiViewPipeline(generator, boundary, detector, regressor, bfm, config)(photo, torch.Generator().manual_seed(0))
    assert result.views.shape == (2, 3, 64, 64) and result.w_plus.shape == (1, generator.n_latent, 32)
    assert result.reconstruction.vertices.shape == (2, 38365, 3)
    assert all(torch.equal(p, before[name]) for name, p in generator.named_parameters())
    assert math.isfinite(result.inversion_psnr) and torch.isfinite(result.psnr).all()
