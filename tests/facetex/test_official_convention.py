"""The official 3DDFA_V2 numbers: identical photos give the official crop bytes, parameters, poses and landmarks.

``official_outputs.json`` holds what cleardusk/3DDFA_V2's own code (FaceBoxes -> TDDFA mb05, crop policy
'box') outputs on the shared photos and their mirror images. Fed the same roi boxes, the project must
cut the same 8-bit crops (``crop_u8_sha256``), hence regress the same parameters, and map them to the
same landmarks (3DDFA_V2's ``recon_vers`` + ``similar_transform``; its pixel coordinates are ours
minus 0.5) and poses (``calc_pose``; its yaw is our yaw negated).

Landmark 44 is left out of the landmark comparison: the shared 68-point bases (``bfm/u_base.txt``,
``w_shp_base.txt``, from 3DDFA v1) differ from ``bfm_noneck_v3.pkl``'s keypoint 44 in their shape rows
(the official landmark 44 is reproduced by no affine map of the shared bases' point, while the other
67 agree to 0.002 px); the test asserts that this is the only such landmark.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facetex.face3d.crop import crop_image, roi_box_from_bbox
from facetex.face3d.image_io import load_image
from facetex.face3d.regressor import FaceRegressor, LandmarkBasis, apply_pose, crop_pose_to_image, pose_angles

BASIS_MISMATCH = 44  # see the module docstring
OTHERS = torch.arange(68) != BASIS_MISMATCH


def _pattern(height: int, width: int) -> np.ndarray:
    """A deterministic ``(H, W, 3)`` uint8 test card with no structure a resize could hide behind."""
    i, j, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    return ((((i * 7919 + j * 104729 + c * 1299709 + i * j * 31) % 65521) * 40503) % 256).astype(np.uint8)


# sha256 of cv2.resize(_pattern(h, w), (120, 120), interpolation=cv2.INTER_LINEAR), opencv-python-headless 5.0.0.93
CV2_RESIZE_SHA256 = {
    (37, 41): "a6e5537d290d33248368f73eddd275a0625cf5d5ea45410892bd649e02e299cf",
    (100, 100): "4a2767df90cb3e2d0df9d1332025baa6f795502f112d4374bb43b87b4d416917",
    (333, 250): "bd0d501df840166b6155770ccd579ac57bb58af7de8f78c3e07a31daf8036bab",
    (120, 121): "0a8dc01f8b2981dde661aae6814b82afe541c55f4e69d2a8563156106836e617",
}


def _crop_bytes(image: torch.Tensor, roi_box: torch.Tensor) -> bytes:
    """The 8-bit ``(120, 120, C)`` crop behind ``crop_image``'s normalised output, as bytes."""
    normalised = crop_image(image, roi_box)
    return (normalised * 128 + 127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy().tobytes()


@pytest.mark.parametrize(("height", "width"), sorted(CV2_RESIZE_SHA256))
def test_crop_resize_is_opencv_inter_linear_bit_for_bit(height: int, width: int) -> None:
    image = torch.from_numpy(_pattern(height, width)).permute(2, 0, 1)
    digest = hashlib.sha256(_crop_bytes(image, torch.tensor([0.0, 0.0, width, height]))).hexdigest()
    assert digest == CV2_RESIZE_SHA256[(height, width)]


@pytest.fixture(scope="module")
def official(shared_assets: Path) -> dict:
    return json.loads((shared_assets / "3ddfa_v2" / "official_outputs.json").read_text())


@pytest.fixture(scope="module")
def photos(shared_assets: Path, official: dict) -> list[tuple[torch.Tensor, list[dict]]]:
    """(RGB image as the official run saw it, its faces) for every entry of the file."""
    out = []
    for entry in official["images"]:
        image = load_image(shared_assets / entry["image"])
        out.append((image.flip(-1) if entry["flipped"] else image, entry["faces"]))
    return out


def test_roi_boxes_from_official_detector_boxes_are_the_official_ones(photos: list) -> None:
    for _, faces in photos:
        for face in faces:
            roi = roi_box_from_bbox(torch.tensor(face["det_box_xyxy_score"], dtype=torch.float32))
            assert roi.tolist() == face["roi_box"], face["crop_key"]


def test_crops_are_the_official_bytes(photos: list) -> None:
    count = 0
    for image, faces in photos:
        for face in faces:
            bgr = image.flip(0)  # the official crop is of OpenCV's BGR image
            digest = hashlib.sha256(_crop_bytes(bgr, torch.tensor(face["roi_box"]))).hexdigest()
            assert digest == face["crop_u8_sha256"], face["crop_key"]
            count += 1
    assert count == 16


def _official_landmarks(face: dict) -> torch.Tensor:
    """``(68, 3)`` official landmarks in the project's convention: x, y + 0.5 (3DDFA_V2's z kept)."""
    points = torch.tensor(face["landmarks68_xyz"], dtype=torch.float64).T
    return points + torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)


def _official_depth(landmarks: torch.Tensor) -> torch.Tensor:
    """Our depth (smaller = nearer) -> 3DDFA_V2's z (larger = nearer, minimum 0)."""
    return landmarks[:, 2].max() - landmarks[:, 2]


def test_official_parameters_map_to_the_official_landmarks(shared_assets: Path, official: dict) -> None:
    basis = LandmarkBasis.from_npz(shared_assets / "bfm" / "bfm_noneck_mean.npz").double()
    for entry in official["images"]:
        for face in entry["faces"]:
            params = torch.tensor(face["param_62"], dtype=torch.float64)[None]
            image_pose = crop_pose_to_image(params[:, :12].reshape(1, 3, 4), torch.tensor([face["roi_box"]]).double())
            ours = apply_pose(image_pose, basis(params[:, 12:52], params[:, 52:]))[0]
            theirs = _official_landmarks(face)
            error = (ours[:, :2] - theirs[:, :2]).abs().amax(dim=1)
            assert error[OTHERS].max() < 0.05, (face["crop_key"], error.max())
            assert (_official_depth(ours) - theirs[:, 2])[OTHERS].abs().max() < 0.05, face["crop_key"]
            yaw, pitch, roll = pose_angles(params[:, :12].reshape(1, 3, 4))
            pose = face["pose_deg"]
            assert abs(-yaw.item() - pose["yaw"]) < 0.01 and abs(pitch.item() - pose["pitch"]) < 0.01, face["crop_key"]
            assert abs(roll.item() - pose["roll"]) < 0.01, face["crop_key"]


def test_photos_give_the_official_parameters_poses_and_landmarks(photos: list, regressor: FaceRegressor) -> None:
    mismatched = set()
    for image, faces in photos:
        result = regressor(image, torch.tensor([face["roi_box"] for face in faces]))
        for index, face in enumerate(faces):
            raw = torch.tensor(face["raw_output_62"])
            torch.testing.assert_close(result.raw[index], raw, atol=1e-5, rtol=0)  # float noise of the same crop
            pose = face["pose_deg"]
            assert abs(-result.yaw[index].item() - pose["yaw"]) < 0.01, face["crop_key"]
            assert abs(result.pitch[index].item() - pose["pitch"]) < 0.01, face["crop_key"]
            assert abs(result.roll[index].item() - pose["roll"]) < 0.01, face["crop_key"]
            theirs = _official_landmarks(face)
            error = (result.landmarks[index, :, :2].double() - theirs[:, :2]).abs().amax(dim=1)
            assert error[OTHERS].max() < 0.05, (face["crop_key"], error.max())
            mismatched |= set(torch.nonzero(error > 0.05).flatten().tolist())
    assert mismatched == {BASIS_MISMATCH}
