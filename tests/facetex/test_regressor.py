"""3DDFA_V2 regressor and crop: architecture and checkpoint, parameter decoding and pose conventions,
crop known answers, and detect -> crop -> regress on the real photos (flip symmetry, landmarks, determinism)."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d.crop import crop_image, crop_to_image, roi_box_from_bbox, roi_box_from_landmarks
from facetex.face3d.detector import FaceDetector
from facetex.face3d.image_io import load_image
from facetex.face3d.regressor import (
    CheckpointError,
    FaceRegressor,
    LandmarkBasis,
    MobileNetV1,
    apply_pose,
    crop_pose_to_image,
    decode_params,
    load_3ddfa_checkpoint,
    load_param_stats,
    pose_angles,
    pose_to_scale_rotation,
)

FACES = {"ffhq_00009.png": 1, "ffhq_00012.png": 1, "emma.jpg": 3, "jianzhu_guo.jpg": 1, "two_faces.jpg": 2}
NOSE_TIP = 30  # iBUG-68 index (0-based)


# ---------------------------------------------------------------- crop


def test_roi_box_from_bbox_known_answer() -> None:
    # mean side 100 -> side trunc(158) = 158, centre (50, 50 + 14)
    roi = roi_box_from_bbox(torch.tensor([0.0, 0.0, 100.0, 100.0, 0.99]))
    torch.testing.assert_close(roi, torch.tensor([-29.0, -15.0, 129.0, 143.0]))
    # a non-square box: mean side 60.5 -> side trunc(95.59) = 95, centre (25.5, 35 + 8.47)
    roi = roi_box_from_bbox(torch.tensor([[0.0, 0.0, 51.0, 70.0], [0.0, 0.0, 51.0, 70.0]]))
    torch.testing.assert_close(roi[1], torch.tensor([25.5 - 47.5, 43.47 - 47.5, 25.5 + 47.5, 43.47 + 47.5]))


def test_roi_box_from_landmarks_known_answer() -> None:
    points = torch.tensor([[0.0, 0.0, 5.0], [60.0, 10.0, 5.0], [20.0, 80.0, 5.0]])
    half = 80 * math.sqrt(2.0) / 2  # bounding square side 80, centre (30, 40); the box side is its diagonal
    # 3DDFA_V2 builds the box from its pixel coordinates, ours - 0.5: centre (29.5, 39.5)
    expected = torch.tensor([29.5 - half, 39.5 - half, 29.5 + half, 39.5 + half])
    torch.testing.assert_close(roi_box_from_landmarks(points), expected)


def test_crop_identity_box_is_the_normalised_image() -> None:
    image = torch.randint(0, 256, (3, 120, 120), dtype=torch.uint8)
    crop = crop_image(image, torch.tensor([0.0, 0.0, 120.0, 120.0]))
    torch.testing.assert_close(crop, (image.float() - 127.5) / 128.0)


def test_crop_halves_two_by_two_blocks_exactly_and_pads_with_zero() -> None:
    blocks = torch.randint(0, 256, (3, 60, 60), dtype=torch.uint8)
    image = blocks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # 120 x 120, constant 2x2 blocks
    crop = crop_image(image, torch.tensor([-120.0, 0.0, 120.0, 240.0]))  # left half and bottom half outside
    torch.testing.assert_close(crop[:, :60, 60:], (blocks.float() - 127.5) / 128.0)
    outside = torch.full((3, 60, 60), -127.5 / 128.0)
    torch.testing.assert_close(crop[:, :60, :60], outside)
    torch.testing.assert_close(crop[:, 60:, 60:], outside)


def test_crop_of_float_image_matches_uint8() -> None:
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    roi = torch.tensor([-10.3, 5.6, 80.2, 96.1])
    torch.testing.assert_close(crop_image(image.float() / 255.0, roi), crop_image(image, roi), atol=1e-5, rtol=0)


def test_crop_to_image_inverts_the_crop() -> None:
    image = torch.zeros((3, 300, 300), dtype=torch.uint8)
    image[:, 50:52, 70:72] = 255  # a 2x2 block centred at image (x, y) = (71, 51)
    roi = torch.tensor([20.0, 10.0, 260.0, 250.0])  # 240 px -> 2 image pixels per crop pixel
    crop = crop_image(image, roi)
    row, col = divmod(int(crop[0].argmax()), 120)
    centre = crop_to_image(torch.tensor([[col + 0.5, row + 0.5]]), roi)
    torch.testing.assert_close(centre, torch.tensor([[71.0, 51.0]]))


# ---------------------------------------------------------------- network and checkpoint


@pytest.mark.parametrize(("widen_factor", "millions"), [(1.0, 3.27), (0.5, 0.85)])
def test_mobilenet_size_matches_3ddfa_v2(widen_factor: float, millions: float) -> None:
    """3DDFA_V2 reports 3.27M (MobileNetV1) and 0.85M (x0.5) parameters for the 62-parameter network."""
    model = MobileNetV1(widen_factor, landmark_head=False)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions
    assert model(torch.zeros(2, 3, 120, 120)).shape == (2, 62)


def test_official_checkpoint_loads_strictly(shared_assets: Path) -> None:
    path = shared_assets / "3ddfa_v2" / "mb05_120x120.pth"
    model = load_3ddfa_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    renamed = {k.removeprefix("module.").replace("fc_param.", "fc."): v for k, v in saved.items()}
    assert model.widen_factor == 0.5 and not model.training
    assert set(renamed) == set(model.state_dict())  # nothing missing, nothing unexpected
    for key, value in model.state_dict().items():
        assert torch.equal(value, renamed[key]), key


def _small_checkpoint() -> tuple[MobileNetV1, dict[str, torch.Tensor]]:
    model = MobileNetV1(0.25).eval()
    return model, {f"module.{k.replace('fc.', 'fc_param.')}": v for k, v in model.state_dict().items()}


def test_wrapped_prefixed_and_bare_checkpoints_round_trip(tmp_path: Path) -> None:
    model, prefixed = _small_checkpoint()
    torch.save({"epoch": 3, "state_dict": prefixed}, tmp_path / "wrapped.pth")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    x = torch.randn(2, 3, 120, 120)
    for name in ("wrapped.pth", "bare.pth"):
        loaded = load_3ddfa_checkpoint(tmp_path / name)
        assert loaded.widen_factor == 0.25
        torch.testing.assert_close(loaded(x), model(x))


def test_checkpoint_errors(tmp_path: Path) -> None:
    _, prefixed = _small_checkpoint()
    torch.save({"epoch": 1, "state_dict": prefixed}, tmp_path / "mb025.pth")
    with pytest.raises(CheckpointError, match="widen_factor 0.25, not 0.5"):
        load_3ddfa_checkpoint(tmp_path / "mb025.pth", widen_factor=0.5)

    torch.save(nn.Sequential(nn.Linear(4, 4), nn.ReLU()).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a 3DDFA_V2 MobileNetV1 checkpoint"):
        load_3ddfa_checkpoint(tmp_path / "other.pth")

    del prefixed["module.dw6.bn_sep.running_var"]
    prefixed["module.extra.weight"] = torch.zeros(1)
    torch.save(prefixed, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match=r"missing \['dw6.bn_sep.running_var'\], unexpected \['extra.weight'\]"):
        load_3ddfa_checkpoint(tmp_path / "edited.pth")

    data = (tmp_path / "mb025.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="it is a zip archive that torch cannot read \\(truncated"):
        load_3ddfa_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="it is a text file"):
        load_3ddfa_checkpoint(tmp_path / "notes.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_3ddfa_checkpoint(tmp_path / "absent.pth")


# ---------------------------------------------------------------- parameters and pose


def test_param_stats_real_file(shared_assets: Path) -> None:
    mean, std = load_param_stats(shared_assets / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl")
    assert mean.shape == std.shape == (62,) and bool((std > 0).all())
    assert mean[3].item() == pytest.approx(60.168, abs=1e-3)  # mean x translation of the pose


def test_param_stats_wrong_keys(tmp_path: Path) -> None:
    with (tmp_path / "stats.pkl").open("wb") as handle:
        pickle.dump({"mean": np.zeros(62)}, handle)
    with pytest.raises(CheckpointError, match="'mean' and 'std'"):
        load_param_stats(tmp_path / "stats.pkl")


def test_decode_params_layout_round_trip() -> None:
    mean, std = torch.randn(62), torch.rand(62) + 0.5
    params = torch.randn(2, 62)
    decoded = decode_params((params - mean) / std, mean, std)
    torch.testing.assert_close(decoded.pose, params[:, :12].reshape(2, 3, 4))  # row-major [sR | t]
    torch.testing.assert_close(decoded.shape, params[:, 12:52])
    torch.testing.assert_close(decoded.expression, params[:, 52:])


def _pose(yaw: float, pitch: float, roll: float, scale: float, translation: list[float]) -> torch.Tensor:
    rotation = euler_to_rotation(yaw, pitch, roll)
    return torch.cat([scale * rotation, torch.tensor(translation)[:, None]], dim=1)[None]


def test_pose_decomposition_recovers_scale_rotation_angles() -> None:
    pose = _pose(25.0, -10.0, 5.0, 6e-4, [60.0, 70.0, -60.0])
    scale, rotation, translation = pose_to_scale_rotation(pose)
    torch.testing.assert_close(scale, torch.tensor([6e-4]))
    torch.testing.assert_close(rotation[0], euler_to_rotation(25.0, -10.0, 5.0))
    torch.testing.assert_close(translation, torch.tensor([[60.0, 70.0, -60.0]]))
    yaw, pitch, roll = pose_angles(pose)
    torch.testing.assert_close(torch.cat([yaw, pitch, roll]), torch.tensor([25.0, -10.0, 5.0]))


def test_angles_are_3ddfa_matrix2angle_with_yaw_negated() -> None:
    """3DDFA_V2's matrix2angle: yaw = asin(R20), pitch = atan2(R21, R22), roll = atan2(R10, R00)."""
    generator = torch.Generator().manual_seed(0)
    angles = (torch.rand(16, 3, generator=generator) - 0.5) * torch.tensor([160.0, 100.0, 60.0])
    rotation = euler_to_rotation(angles[:, 0], angles[:, 1], angles[:, 2])
    pose = torch.cat([5e-4 * rotation, torch.zeros(16, 3, 1)], dim=2)
    yaw, pitch, roll = pose_angles(pose)
    theirs_yaw = torch.rad2deg(torch.asin(rotation[:, 2, 0]))
    theirs_pitch = torch.rad2deg(torch.atan2(rotation[:, 2, 1], rotation[:, 2, 2]))
    theirs_roll = torch.rad2deg(torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0]))
    torch.testing.assert_close(yaw, -theirs_yaw, atol=1e-3, rtol=0)
    torch.testing.assert_close(pitch, theirs_pitch, atol=1e-3, rtol=0)
    torch.testing.assert_close(roll, theirs_roll, atol=1e-3, rtol=0)


def test_crop_pose_to_image_known_answer_and_camera_agreement() -> None:
    pose = _pose(30.0, 5.0, -8.0, 0.5, [60.0, 62.0, 10.0])
    points = torch.randn(1, 20, 3) * 50
    crop_points = points[0] @ pose[0, :, :3].T + pose[0, :, 3]
    # crop box of 240 px at (100, 40): 2 image pixels per crop pixel; 3DDFA_V2's similar_transform
    # (x - 1, 120 - y, scaled, plus the box corner) in its pixel coordinates, ours - 0.5
    image_pose = crop_pose_to_image(pose, torch.tensor([[100.0, 40.0, 340.0, 280.0]]))
    screen = apply_pose(image_pose, points)[0]
    torch.testing.assert_close(screen[:, 0], 100 + 2 * (crop_points[:, 0] - 1) + 0.5)
    torch.testing.assert_close(screen[:, 1], 40 + 2 * (120 - crop_points[:, 1]) + 0.5)
    torch.testing.assert_close(screen[:, 2], -2 * (crop_points[:, 2] - 10.0))
    # the same map as camera.project's weak-perspective camera
    expected = project(points, euler_to_rotation(30.0, 5.0, -8.0)[None], torch.tensor([1.0]), image_pose[:, :2, 3])
    torch.testing.assert_close(screen, expected[0], atol=1e-3, rtol=1e-5)


# ---------------------------------------------------------------- landmark bases


def test_landmark_basis_mean_is_the_bfm_mean_face(shared_assets: Path) -> None:
    basis = LandmarkBasis.from_npz(shared_assets / "bfm" / "bfm_noneck_mean.npz")
    with np.load(shared_assets / "bfm" / "bfm_noneck_mean.npz") as data:
        truth = torch.from_numpy(data["u"][:, data["kpt_vid"]].T.copy())
    torch.testing.assert_close(basis.mean, truth)
    zeros = basis(torch.zeros(1, 40), torch.zeros(1, 10))
    torch.testing.assert_close(zeros[0], truth)
    assert basis.mean[16, 0] > basis.mean[0, 0] and basis.mean[NOSE_TIP, 2] > basis.mean[:, 2].mean()  # x right, z out


class _DenseModel(nn.Module):
    """The attributes of a MorphableModel that LandmarkBasis reads."""

    def __init__(self, num_vertices: int = 300, num_shape: int = 45, num_expression: int = 12) -> None:
        super().__init__()
        self.mean = torch.randn(num_vertices, 3)
        self.shape_basis = torch.randn(num_vertices, 3, num_shape)
        self.expression_basis = torch.randn(num_vertices, 3, num_expression)
        self.landmark_vertices = torch.randperm(num_vertices)[:68]
        self.landmark_ids = torch.randperm(68)
        self.num_shape, self.num_expression = num_shape, num_expression


def test_landmark_basis_from_dense_model_matches_dense_landmarks() -> None:
    model = _DenseModel()
    basis = LandmarkBasis.from_morphable_model(model)
    shape, expression = torch.randn(2, 40), torch.randn(2, 10)
    dense = model.mean + torch.einsum("vcs,bs->bvc", model.shape_basis[..., :40], shape) \
        + torch.einsum("vce,be->bvc", model.expression_basis[..., :10], expression)
    expected = torch.empty(2, 68, 3)
    expected[:, model.landmark_ids] = dense[:, model.landmark_vertices]
    torch.testing.assert_close(basis(shape, expression), expected, atol=1e-4, rtol=1e-5)


def test_landmark_basis_rejects_models_3ddfa_cannot_drive() -> None:
    with pytest.raises(ValueError, match="need 40 and 10"):
        LandmarkBasis.from_morphable_model(_DenseModel(num_shape=0, num_expression=0))
    partial = _DenseModel()
    partial.landmark_ids = torch.arange(68) + 1
    with pytest.raises(ValueError, match="needs all 68"):
        LandmarkBasis.from_morphable_model(partial)


def test_face_regressor_rejects_bad_network_and_inputs() -> None:
    basis = LandmarkBasis(torch.zeros(68, 3), torch.zeros(68, 3, 40), torch.zeros(68, 3, 10))
    with pytest.raises(ValueError, match="regresses 72 parameters"):
        FaceRegressor(MobileNetV1(0.25, num_params=72), torch.zeros(62), torch.ones(62), basis)
    regressor = FaceRegressor(MobileNetV1(0.25), torch.zeros(62), torch.ones(62), basis)
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"roi boxes of shape \(N, 4\) with N >= 1"):
        regressor(image, torch.zeros(0, 4))
    with pytest.raises(ValueError, match="RGB image of shape"):
        regressor(image[:1], torch.tensor([[0.0, 0.0, 64.0, 64.0]]))
    with pytest.raises(ValueError, match="empty after rounding"):
        regressor(image, torch.tensor([[10.0, 10.0, 10.2, 30.0]]))


# ---------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def detected(shared_assets: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """name -> (image, boxes, flipped image, its boxes); boxes sorted left to right in the original's frame."""
    detector = FaceDetector.from_checkpoint(shared_assets / "3ddfa_v2" / "FaceBoxesProd.pth")
    out = {}
    for name in FACES:
        image = load_image(shared_assets / "faces" / name)
        flipped = image.flip(-1)
        boxes, flipped_boxes = detector.detect_faces(image), detector.detect_faces(flipped)
        left_to_right = boxes[:, 0].argsort()
        right_to_left = flipped_boxes[:, 0].argsort(descending=True)  # the same faces, mirrored
        out[name] = (image, boxes[left_to_right], flipped, flipped_boxes[right_to_left])
    return out


@pytest.mark.parametrize("refine", [False, True])
def test_flipped_photo_has_opposite_yaw(regressor: FaceRegressor, detected: dict, refine: bool) -> None:
    for name, (image, boxes, flipped, flipped_boxes) in detected.items():
        assert len(boxes) == len(flipped_boxes) == FACES[name], name
        yaw = regressor.from_boxes(image, boxes, refine=refine).yaw
        flipped_yaw = regressor.from_boxes(flipped, flipped_boxes, refine=refine).yaw
        assert (yaw + flipped_yaw).abs().max() < 3.0, (name, yaw.tolist(), flipped_yaw.tolist())


def test_landmarks_lie_on_the_detected_face(regressor: FaceRegressor, detected: dict) -> None:
    for name, (image, boxes, _, _) in detected.items():
        result = regressor.from_boxes(image, boxes)
        points = result.landmarks[..., :2]
        for face, box, roi in zip(points, boxes, result.roi_boxes):
            in_roi = (face >= roi[:2]) & (face <= roi[2:])
            in_box = (face >= box[:2]) & (face <= box[2:4])
            assert bool(in_roi.all()), name
            assert bool(in_box[NOSE_TIP].all()) and in_box.all(dim=1).float().mean() > 0.8, name


def test_weak_perspective_camera_reproduces_landmarks(regressor: FaceRegressor, detected: dict) -> None:
    image, boxes, _, _ = detected["two_faces.jpg"]
    result = regressor.from_boxes(image, boxes)
    model_points = regressor.landmark_basis(result.params.shape, result.params.expression)
    projected = project(model_points, result.rotation, result.scale, result.translation)
    face_width = (boxes[:, 2] - boxes[:, 0])[:, None, None]
    # P2sRt drops the small skew and the x/y scale difference of P: under 1% of the face width
    assert bool(((projected[..., :2] - result.landmarks[..., :2]).abs() < 0.01 * face_width).all())


def test_regression_is_deterministic(regressor: FaceRegressor, detected: dict) -> None:
    image, boxes, _, _ = detected["jianzhu_guo.jpg"]
    first, second = regressor.from_boxes(image, boxes), regressor.from_boxes(image, boxes)
    assert torch.equal(first.raw, second.raw) and torch.equal(first.landmarks, second.landmarks)
