"""FaceBoxes (Zhang et al. 2017), the CPU face detector 3DDFA_V2 runs before its regressor.

A small single-shot detector: two "rapidly digested" CReLU convolutions (stride 32 in total), three
Inception blocks, then anchors on three feature maps (strides 32, 64, 128; anchor sides 32/64/128,
256 and 512 px, the small ones densified 4x4 and 2x2 per cell). Each anchor predicts a face score and
a box offset encoded SSD-style with variances (0.1, 0.2). Module names follow 3DDFA_V2's
``FaceBoxes/models/faceboxes.py`` so ``FaceBoxesProd.pth`` loads strictly.

Inference follows 3DDFA_V2's ``FaceBoxes.__call__``: images taller than 720 px (or wider than 1080 px
after that) are scaled down, the network sees BGR minus the mean (104, 117, 123), anchors scoring
above 0.05 go to non-maximum suppression (IoU 0.3), and faces scoring above 0.5 are kept. Boxes are
clipped to the image.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundation.checkpoints import CheckpointError, load_strictly, read_state_dict
from foundation.errors import InputError

BGR_MEAN = (104.0, 117.0, 123.0)
VARIANCES = (0.1, 0.2)
STEPS = (32, 64, 128)
ANCHOR_SIZES = ((32, 64, 128), (256,), (512,))
_DENSITY = {32: 4, 64: 2}  # anchors per cell side for the small, densified anchor sizes
MAX_HEIGHT, MAX_WIDTH = 720, 1080


SCORE_THRESHOLD_OPTIONS = ("scripts/photo_to_mesh.py --score-threshold, "
                           "main.py predict --model.init_args.score_threshold")


class ScoreThresholdError(InputError, ValueError):
    """A detector score threshold outside [0, 1)."""


def check_score_threshold(value: float) -> float:
    """``value`` if it is a usable detector score threshold (in [0, 1)), else ``ScoreThresholdError``."""
    if not 0.0 <= value < 1.0:
        raise ScoreThresholdError(f"the face detector's score threshold must be in [0, 1) (default 0.5; lower finds "
                                  f"fainter faces and more false ones), got {value}")
    return value


class NoFaceError(InputError, RuntimeError):
    """The detector found no face scoring above its threshold."""


class DetectorCheckpointError(CheckpointError):
    """A file that is not a readable FaceBoxes state dict."""


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BN -> ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class CRelu(nn.Module):
    """Conv -> BN -> concatenated ReLU ``[relu(x), relu(-x)]``: doubles channels at half the convolution cost."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(torch.cat([x, -x], dim=1))


class Inception(nn.Module):
    """FaceBoxes' Inception block: four branches of 32 channels (1x1, pool+1x1, 3x3, two 3x3), 128 -> 128."""

    def __init__(self) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(128, 32, 1)
        self.branch1x1_2 = BasicConv2d(128, 32, 1)
        self.branch3x3_reduce = BasicConv2d(128, 24, 1)
        self.branch3x3 = BasicConv2d(24, 32, 3, padding=1)
        self.branch3x3_reduce_2 = BasicConv2d(128, 24, 1)
        self.branch3x3_2 = BasicConv2d(24, 32, 3, padding=1)
        self.branch3x3_3 = BasicConv2d(32, 32, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch1x1_2(pooled),
            self.branch3x3(self.branch3x3_reduce(x)),
            self.branch3x3_3(self.branch3x3_2(self.branch3x3_reduce_2(x))),
        ], dim=1)


def _anchors_per_cell(sizes: tuple[int, ...]) -> int:
    return sum(_DENSITY.get(size, 1) ** 2 for size in sizes)


class FaceBoxesNet(nn.Module):
    """The FaceBoxes network: ``(B, 3, H, W)`` mean-subtracted BGR -> box offsets and face/background logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = CRelu(3, 24, kernel_size=7, stride=4, padding=3)
        self.conv2 = CRelu(48, 64, kernel_size=5, stride=2, padding=2)
        self.inception1 = Inception()
        self.inception2 = Inception()
        self.inception3 = Inception()
        self.conv3_1 = BasicConv2d(128, 128, 1)
        self.conv3_2 = BasicConv2d(128, 256, 3, stride=2, padding=1)
        self.conv4_1 = BasicConv2d(256, 128, 1)
        self.conv4_2 = BasicConv2d(128, 256, 3, stride=2, padding=1)
        channels = (128, 256, 256)
        anchors = [_anchors_per_cell(sizes) for sizes in ANCHOR_SIZES]
        self.loc = nn.Sequential(*(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(channels, anchors)))
        self.conf = nn.Sequential(*(nn.Conv2d(c, a * 2, 3, padding=1) for c, a in zip(channels, anchors)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns offsets ``(B, P, 4)`` and logits ``(B, P, 2)`` for the ``P`` anchors of :func:`prior_boxes`."""
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        x = F.max_pool2d(self.conv2(x), kernel_size=3, stride=2, padding=1)
        sources = [self.inception3(self.inception2(self.inception1(x)))]
        sources.append(self.conv3_2(self.conv3_1(sources[-1])))
        sources.append(self.conv4_2(self.conv4_1(sources[-1])))
        batch = x.shape[0]
        loc = torch.cat([head(s).permute(0, 2, 3, 1).reshape(batch, -1, 4) for head, s in zip(self.loc, sources)], 1)
        conf = torch.cat([head(s).permute(0, 2, 3, 1).reshape(batch, -1, 2) for head, s in zip(self.conf, sources)], 1)
        return loc, conf


def prior_boxes(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """FaceBoxes anchors for an ``height x width`` input: ``(P, 4)`` ``(cx, cy, w, h)`` as fractions of the image.

    Order matches the network's output: feature map, then row, column, then anchor size, then the
    dense offsets (row-major). Densified anchors start at the cell corner (offsets ``k / n``) and
    the others at its centre, as in 3DDFA_V2's ``PriorBox``.
    """
    anchors = []
    for step, sizes in zip(STEPS, ANCHOR_SIZES):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cell = []  # (offset x, offset y, side) of each anchor within one cell, in output order
        for size in sizes:
            density = _DENSITY.get(size)
            offsets = [k / density for k in range(density)] if density else [0.5]
            cell += [(ox, oy, size) for oy in offsets for ox in offsets]
        cell_t = torch.tensor(cell, dtype=torch.float64, device=device)
        i = torch.arange(rows, dtype=torch.float64, device=device)[:, None, None]
        j = torch.arange(cols, dtype=torch.float64, device=device)[None, :, None]
        cx = (j + cell_t[:, 0]) * step / width
        cy = (i + cell_t[:, 1]) * step / height
        w = (cell_t[:, 2] / width).expand(rows, cols, -1)
        h = (cell_t[:, 2] / height).expand(rows, cols, -1)
        anchors.append(torch.stack(torch.broadcast_tensors(cx, cy, w, h), dim=-1).reshape(-1, 4))
    return torch.cat(anchors).float()


def decode_boxes(loc: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """SSD box decoding: offsets ``(P, 4)`` relative to anchors ``(P, 4)`` -> ``(P, 4)`` ``[x1, y1, x2, y2]`` fractions.

    ``center = prior_center + loc_xy * v0 * prior_size``, ``size = prior_size * exp(loc_wh * v1)``.
    """
    centers = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    return torch.cat([centers - sizes / 2, centers + sizes / 2], dim=1)


def box_iou(box: Tensor, boxes: Tensor) -> Tensor:
    """Intersection over union of one ``(4,)`` box with ``(N, 4)`` boxes, all ``[x1, y1, x2, y2]`` -> ``(N,)``."""
    top_left = torch.maximum(box[:2], boxes[:, :2])
    bottom_right = torch.minimum(box[2:], boxes[:, 2:])
    intersection = (bottom_right - top_left).clamp_min(0).prod(dim=1)
    area = (box[2:] - box[:2]).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    return intersection / (area + areas - intersection).clamp_min(torch.finfo(boxes.dtype).tiny)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: indices ``(K,)`` of kept boxes, highest score first."""
    order = torch.argsort(scores, descending=True)
    keep = []
    while order.numel() > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long, device=boxes.device)


def detection_scale(height: int, width: int) -> float:
    """3DDFA_V2's resize factor: fit the height to 720 px, then the width to 1080 px; never enlarge."""
    scale = 1.0
    if height > MAX_HEIGHT:
        scale = MAX_HEIGHT / height
    if width * scale > MAX_WIDTH:
        scale *= MAX_WIDTH / (width * scale)
    return scale


class FaceDetector(nn.Module):
    """FaceBoxes with 3DDFA_V2's pre- and post-processing: an RGB photo -> face boxes with scores."""

    def __init__(
        self,
        network: FaceBoxesNet,
        score_threshold: float = 0.5,
        candidate_threshold: float = 0.05,
        iou_threshold: float = 0.3,
        top_k: int = 5000,
    ) -> None:
        super().__init__()
        self.network = network.eval()
        self.score_threshold = score_threshold
        self.candidate_threshold = candidate_threshold
        self.iou_threshold = iou_threshold
        self.top_k = top_k

    @classmethod
    def from_checkpoint(cls, path: str | Path, **thresholds: float) -> FaceDetector:
        """Load ``FaceBoxesProd.pth``, a bare state dict (a ``module.`` prefix or ``state_dict`` wrapper is fine)."""
        path = Path(path)
        state = read_state_dict(path, "FaceBoxes weights", "download FaceBoxes/weights/FaceBoxesProd.pth from "
                                "github.com/cleardusk/3DDFA_V2", DetectorCheckpointError)
        network = FaceBoxesNet()
        load_strictly(network, state, path, "is not a FaceBoxes checkpoint", "FaceBoxes", DetectorCheckpointError)
        return cls(network, **thresholds)  # type: ignore[arg-type]

    @torch.no_grad()
    def detect_faces(self, image: Tensor) -> Tensor:
        """Faces in an RGB image ``(3, H, W)`` (uint8, or floating in [0, 1]).

        Returns:
            ``(N, 5)`` float32 ``[x1, y1, x2, y2, score]`` in pixels, highest score first.
        Raises:
            NoFaceError: no face scores above ``score_threshold``.
        """
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an RGB image of shape (3, H, W), got {tuple(image.shape)}")
        height, width = image.shape[1:]
        device = next(self.network.parameters()).device
        pixels = image.to(device).float()
        if image.dtype != torch.uint8:
            pixels = pixels * 255.0
        scale = detection_scale(height, width)
        if scale != 1.0:
            size = (int(scale * height), int(scale * width))
            pixels = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False)[0]
        bgr = pixels.flip(0) - pixels.new_tensor(BGR_MEAN)[:, None, None]
        loc, logits = self.network(bgr[None])
        scores = torch.softmax(logits[0].float(), dim=-1)[:, 1]
        scaled_height, scaled_width = bgr.shape[1:]
        boxes = decode_boxes(loc[0].float(), prior_boxes(scaled_height, scaled_width, device))
        boxes = boxes * boxes.new_tensor([scaled_width, scaled_height] * 2) / scale
        candidates = torch.nonzero(scores > self.candidate_threshold).squeeze(1)
        candidates = candidates[torch.argsort(scores[candidates], descending=True)[: self.top_k]]
        kept = candidates[nms(boxes[candidates], scores[candidates], self.iou_threshold)]
        kept = kept[scores[kept] > self.score_threshold]
        if kept.numel() == 0:
            best = scores.max().item()
            raise NoFaceError(
                f"no face found in the {width}x{height} image (best score {best:.3f} <= threshold "
                f"{self.score_threshold}); use a photo with a visible face at least ~20 px wide, "
                f"or lower the detector's score threshold ({SCORE_THRESHOLD_OPTIONS})"
            )
        clipped = torch.stack([
            boxes[kept, 0].clamp(0, width), boxes[kept, 1].clamp(0, height),
            boxes[kept, 2].clamp(0, width), boxes[kept, 3].clamp(0, height),
        ], dim=1)
        return torch.cat([clipped, scores[kept, None]], dim=1)
