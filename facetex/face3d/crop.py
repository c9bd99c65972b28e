"""3DDFA_V2's face crop: a square region of interest around a face, cut out, resized and normalised.

The regressor sees a ``size x size`` (120) crop of a square ``roi_box = [sx, sy, ex, ey]`` in image
pixels. The box comes from a detector box (``parse_roi_box_from_bbox`` in 3DDFA_V2: 1.58 times the
mean side, shifted down by 0.14 of it) or from 68 landmarks (``parse_roi_box_from_landmark``: the
diagonal of the landmarks' bounding square). As in 3DDFA_V2 (``crop_img`` + ``cv2.resize``) the box
is rounded to whole pixels before cutting, the part outside the image is zero, and the 8-bit cut is
resized to 120 x 120 with OpenCV's 8-bit ``INTER_LINEAR`` arithmetic reproduced bit for bit (11-bit
fixed-point weights, its rounding of the two passes, output rounded to uint8; source positions
``(x + 0.5) * scale - 0.5``, no antialiasing), then normalised as ``(x - 127.5) / 128``. Identical
photos therefore give the official network input exactly, hence the official parameters.

Coordinates follow the project's screen convention: pixel ``(row i, col j)`` covers ``[j, j+1) x
[i, i+1)`` with its centre at ``(j + 0.5, i + 0.5)``; 3DDFA_V2 puts that centre at ``(j, i)``, so its
coordinates are ours minus 0.5. A roi box names pixel edges, the same numbers in both.
``crop_to_image`` is the exact inverse of the crop for continuous coordinates.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

CROP_SIZE = 120
PIXEL_MEAN = 127.5
PIXEL_STD = 128.0
_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: 8-bit bilinear weights in 11-bit fixed point


def roi_box_from_bbox(box: torch.Tensor) -> torch.Tensor:
    """Square 3DDFA_V2 region of interest from detector boxes.

    Args:
        box: ``(..., 4+)`` ``[x1, y1, x2, y2, ...]`` in pixels (extra columns such as a score are ignored).
    Returns:
        ``(..., 4)`` ``[sx, sy, ex, ey]``: side ``trunc(1.58 * s)`` for the mean side ``s``, centred
        on the box centre moved down by ``0.14 * s`` (the box of a detector sits high on the face).
    """
    left, top, right, bottom = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    old_size = (right - left + bottom - top) / 2
    center_x = right - (right - left) / 2
    center_y = bottom - (bottom - top) / 2 + old_size * 0.14
    side = torch.trunc(old_size * 1.58)
    return _square_box(center_x, center_y, side)


def roi_box_from_landmarks(points: torch.Tensor) -> torch.Tensor:
    """Square 3DDFA_V2 region of interest from landmarks (its ``crop_policy='landmark'`` pass).

    Args:
        points: ``(..., L, 2+)`` image coordinates in the project's convention (a depth column is ignored);
            like ``parse_roi_box_from_landmark`` the box is built from 3DDFA_V2's pixel coordinates, ours - 0.5.
    Returns:
        ``(..., 4)``: the square around the landmarks' bounding square whose side is that square's diagonal.
    """
    official = points[..., :2] - 0.5
    lower = official.amin(dim=-2)
    upper = official.amax(dim=-2)
    center = (lower + upper) / 2
    radius = (upper - lower).amax(dim=-1) / 2
    diagonal = 2 * radius * math.sqrt(2.0)
    return _square_box(center[..., 0], center[..., 1], diagonal)


def _square_box(center_x: torch.Tensor, center_y: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """``(...,)`` centres and side -> ``(..., 4)`` ``[sx, sy, sx + side, sy + side]``."""
    start_x = center_x - side / 2
    start_y = center_y - side / 2
    return torch.stack([start_x, start_y, start_x + side, start_y + side], dim=-1)


def pixel_box(roi_box: torch.Tensor) -> tuple[int, int, int, int]:
    """One ``(4,)`` roi box rounded to whole pixels (half to even, like Python's ``round``), as 3DDFA_V2 cuts it."""
    if roi_box.shape != (4,):
        raise ValueError(f"expected one roi box of shape (4,), got {tuple(roi_box.shape)}")
    sx, sy, ex, ey = (int(value) for value in torch.round(roi_box.detach().double()).tolist())
    if ex <= sx or ey <= sy:
        raise ValueError(
            f"roi box {roi_box.tolist()} is empty after rounding to pixels; pass [sx, sy, ex, ey] with ex > sx, ey > sy"
        )
    return sx, sy, ex, ey


def _linear_taps(source: int, target: int, clamp_weights: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """OpenCV's 8-bit ``INTER_LINEAR`` taps along one axis: ``(target,)`` first/second source index and weights.

    Source position ``(d + 0.5) * source / target - 0.5`` in float32; the weights are ``round(w * 2048)``.
    Along x OpenCV clamps the position into the image (weight 0 on the missing neighbour); along y
    it keeps the fraction and clamps only the row indices.
    """
    position = ((torch.arange(target, dtype=torch.float64) + 0.5) * (1.0 / (target / source)) - 0.5).float()
    first = torch.floor(position)
    fraction = position - first
    first = first.long()
    if clamp_weights:
        fraction = torch.where((first < 0) | (first >= source - 1), torch.zeros_like(fraction), fraction)
    first_weight = torch.round((1.0 - fraction) * _COEF_SCALE).long()
    second_weight = torch.round(fraction * _COEF_SCALE).long()
    return first.clamp(0, source - 1), (first + 1).clamp(0, source - 1), first_weight, second_weight


def _cut_rows_cols(image: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``(C, len(rows), len(cols))`` int64 8-bit values of ``image`` at those image indices, 0 outside the image."""
    height, width = image.shape[-2:]
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    values = image[:, rows.clamp(0, height - 1)][:, :, cols.clamp(0, width - 1)]
    if values.dtype != torch.uint8:
        values = torch.round(values.float().clamp(0.0, 1.0) * 255.0)
    return values.long() * inside


def crop_image(image: Tensor, roi_box: Tensor, size: int = CROP_SIZE) -> Tensor:
    """Cut ``roi_box`` out of ``image`` (zeros outside it), resize to ``size x size``, normalise (3DDFA_V2's input).

    The resize is ``cv2.resize(cut, (size, size), interpolation=cv2.INTER_LINEAR)`` on the 8-bit cut,
    bit for bit: a horizontal pass of 11-bit weights, then OpenCV's vectorised vertical pass (the high
    16 bits of each 16-bit product, summed, rounded by a shift of 2).

    Args:
        image: ``(C, H, W)`` uint8 in [0, 255], or floating in [0, 1] (rounded to 8 bits first: the
            regressor was trained on 8-bit crops).
        roi_box: ``(4,)`` ``[sx, sy, ex, ey]`` in pixels.
        size: side of the output crop (3DDFA_V2: 120).
    Returns:
        ``(C, size, size)`` float32, ``(x - 127.5) / 128`` of the resized 8-bit crop; channel order kept.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (C, H, W), got {tuple(image.shape)}")
    sx, sy, ex, ey = pixel_box(roi_box)
    x0, x1, a0, a1 = (t.to(image.device) for t in _linear_taps(ex - sx, size, clamp_weights=True))
    y0, y1, b0, b1 = (t.to(image.device) for t in _linear_taps(ey - sy, size, clamp_weights=False))

    def horizontal(rows: Tensor) -> Tensor:  # (C, size, size), weights scaled by 2048
        return _cut_rows_cols(image, rows + sy, x0 + sx) * a0 + _cut_rows_cols(image, rows + sy, x1 + sx) * a1

    top, bottom = horizontal(y0), horizontal(y1)
    mixed = ((b0[:, None] * (top >> 4)) >> 16) + ((b1[:, None] * (bottom >> 4)) >> 16)
    resized = ((mixed + 2) >> 2).clamp(0, 255)
    return (resized.float() - PIXEL_MEAN) / PIXEL_STD


def crop_to_image(points: torch.Tensor, roi_box: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """Map continuous crop coordinates back to image coordinates (the inverse of ``crop_image``).

    Args:
        points: ``(N, 2)`` ``(x, y)`` in the ``size x size`` crop.
        roi_box: ``(4,)`` the box the crop was cut from (rounded the same way ``crop_image`` rounds it).
    Returns:
        ``(N, 2)`` image coordinates.
    """
    sx, sy, ex, ey = pixel_box(roi_box)
    scale = points.new_tensor([(ex - sx) / size, (ey - sy) / size])
    return points * scale + points.new_tensor([sx, sy])
