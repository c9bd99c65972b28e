"""FaceBoxes: anchors, box decoding, NMS and resize policy (known answers), strict loading of the
official weights, and detections on the real photos (face counts, boxes in the image, no face in noise)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from facetex.face3d.detector import (
    DetectorCheckpointError,
    FaceBoxesNet,
    FaceDetector,
    NoFaceError,
    ScoreThresholdError,
    box_iou,
    check_score_threshold,
    decode_boxes,
    detection_scale,
    nms,
    prior_boxes,
)
from facetex.face3d.image_io import load_image

FACES = {"ffhq_00009.png": 1, "ffhq_00012.png": 1, "emma.jpg": 3, "jianzhu_guo.jpg": 1, "two_faces.jpg": 2}


def test_prior_boxes_of_one_cell_known_answer() -> None:
    priors = prior_boxes(32, 32)  # one cell on each of the three feature maps
    assert priors.shape == (16 + 4 + 1 + 1 + 1, 4)
    dense32 = torch.tensor([[x, y, 1.0, 1.0] for y in (0, 0.25, 0.5, 0.75) for x in (0, 0.25, 0.5, 0.75)])
    dense64 = torch.tensor([[x, y, 2.0, 2.0] for y in (0, 0.5) for x in (0, 0.5)])
    torch.testing.assert_close(priors[:16], dense32)
    torch.testing.assert_close(priors[16:20], dense64)
    single = torch.tensor([[0.5, 0.5, 4.0, 4.0], [1.0, 1.0, 8.0, 8.0], [2.0, 2.0, 16.0, 16.0]])
    torch.testing.assert_close(priors[20:], single)


def test_prior_boxes_follow_the_network_output_grid() -> None:
    height, width = 100, 230
    priors = prior_boxes(height, width)
    cells = [math.ceil(height / s) * math.ceil(width / s) for s in (32, 64, 128)]
    assert priors.shape[0] == 21 * cells[0] + cells[1] + cells[2]
    loc, conf = FaceBoxesNet().eval()(torch.zeros(1, 3, height, width))
    assert loc.shape == (1, priors.shape[0], 4) and conf.shape == (1, priors.shape[0], 2)
    # the 128 px anchor of the second cell of row 0 on the first map (step 32) is centred at x = 48 px
    in_pixels = priors[21 + 20] * torch.tensor([width, height, width, height])
    torch.testing.assert_close(in_pixels, torch.tensor([48.0, 16.0, 128.0, 128.0]))


def test_decode_inverts_ssd_encoding() -> None:
    priors = torch.tensor([[0.5, 0.4, 0.2, 0.3], [0.1, 0.9, 0.05, 0.05]])
    truth = torch.tensor([[0.35, 0.3, 0.6, 0.55], [0.0, 0.8, 0.2, 1.0]])  # [x1, y1, x2, y2]
    centers, sizes = (truth[:, :2] + truth[:, 2:]) / 2, truth[:, 2:] - truth[:, :2]
    loc = torch.cat([(centers - priors[:, :2]) / (0.1 * priors[:, 2:]), torch.log(sizes / priors[:, 2:]) / 0.2], dim=1)
    torch.testing.assert_close(decode_boxes(loc, priors), truth)
    corners = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)
    torch.testing.assert_close(decode_boxes(torch.zeros(2, 4), priors), corners)


def test_box_iou_and_nms_known_answers() -> None:
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 11.0]]
    )
    torch.testing.assert_close(box_iou(boxes[0], boxes), torch.tensor([1.0, 1.0 / 3.0, 0.0, 10.0 / 11.0]))
    scores = torch.tensor([0.6, 0.9, 0.7, 0.8])
    # 1 (0.9) first; 3 overlaps it by 50/160 > 0.3 -> dropped; 2 kept; 0 overlaps 1 by 1/3 -> dropped
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.35).tolist() == [1, 3, 2]
    assert nms(boxes[:0], scores[:0], 0.3).numel() == 0


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(551, 413, 1.0), (1024, 1024, 720 / 1024), (689, 1536, 1080 / 1536), (1901, 3913, 1080 / 3913)],
)
def test_detection_scale_policy(height: int, width: int, scale: float) -> None:
    assert detection_scale(height, width) == pytest.approx(scale)


def test_official_weights_load_strictly(shared_assets: Path) -> None:
    path = shared_assets / "3ddfa_v2" / "FaceBoxesProd.pth"
    detector = FaceDetector.from_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert set(saved) == set(detector.network.state_dict())  # bare state dict, no "module." prefix
    for key, value in detector.network.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_prefixed_wrapped_weights_round_trip(tmp_path: Path) -> None:
    network = FaceBoxesNet().eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, tmp_path / "wrapped.pth")
    loaded = FaceDetector.from_checkpoint(tmp_path / "wrapped.pth").network
    x = torch.randn(1, 3, 64, 96)
    for ours, theirs in zip(loaded(x), network(x)):
        torch.testing.assert_close(ours, theirs)


def test_checkpoint_errors(tmp_path: Path) -> None:
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(DetectorCheckpointError, match="not a FaceBoxes checkpoint"):
        FaceDetector.from_checkpoint(tmp_path / "linear.pth")
    torch.save(FaceBoxesNet().state_dict(), tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(DetectorCheckpointError, match="cannot read"):
        FaceDetector.from_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(DetectorCheckpointError, match="cannot read"):
        FaceDetector.from_checkpoint(tmp_path / "notes.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        FaceDetector.from_checkpoint(tmp_path / "absent.pth")


@pytest.fixture(scope="module")
def detector(shared_assets: Path) -> FaceDetector:
    return FaceDetector.from_checkpoint(shared_assets / "3ddfa_v2" / "FaceBoxesProd.pth")


@pytest.mark.parametrize(("name", "count"), list(FACES.items()))
def test_real_photos_have_their_faces(detector: FaceDetector, shared_assets: Path, name: str, count: int) -> None:
    image = load_image(shared_assets / "faces" / name)
    detections = detector.detect_faces(image)
    height, width = image.shape[1:]
    assert detections.shape == (count, 5)
    boxes, scores = detections[:, :4], detections[:, 4]
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())
    assert bool((boxes[:, 2:] - boxes[:, :2] > 40).all())  # real faces here are larger than 40 px
    assert bool((scores > 0.5).all()) and torch.equal(scores, scores.sort(descending=True).values)
    if name.startswith("ffhq"):  # FFHQ is aligned: the face box is centred on the image (within 15%)
        centre = (boxes[0, :2] + boxes[0, 2:]) / 2
        assert bool(((centre - width / 2).abs() < 0.15 * width).all())


def test_noise_and_gradient_have_no_face(detector: FaceDetector) -> None:
    noise = torch.randint(0, 256, (3, 480, 640), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    gradient = torch.linspace(0.0, 1.0, 640).expand(3, 480, 640)  # float image in [0, 1]
    for image in (noise, gradient):
        with pytest.raises(NoFaceError, match="no face found in the 640x480 image") as raised:
            detector.detect_faces(image)
        # the hint names the options a user can set: the script's flag and main.py predict's model argument
        assert "photo_to_mesh.py --score-threshold" in str(raised.value)
        assert "--model.init_args.score_threshold" in str(raised.value)


def test_score_threshold_must_lie_in_zero_one() -> None:
    assert check_score_threshold(0.0) == 0.0 and check_score_threshold(0.5) == 0.5
    for value in (-0.1, 1.0, 2.0):
        with pytest.raises(ScoreThresholdError, match=r"must be in \[0, 1\)"):
            check_score_threshold(value)
