"""3DDFA_V2's face crop: a square region of interest around a face, cut out, resized and normalised.

The regressor sees a ``size x size`` (120) crop of a square ``roi_box = [sx, sy, ex, ey]`` in image
pixels. The box comes from a detector box (``parse_roi_box_from_bbox`` in 3DDFA_V2: 1.58 times the
mean side, shifted down by 0.14 of it) or from 68 landmarks (``parse_roi_box_from_landmark``: the
diagonal of the landmarks' bounding square). As in 3DDFA_V2 the box is rounded to whole pixels
before cutting, the part outside the image is zero, the cut is resized bilinearly (OpenCV's
``INTER_LINEAR``, half-pixel centres, no antialiasing) and normalised as ``(x - 127.5) / 128``.

Coordinates follow the project's screen convention: pixel ``(row i, col j)`` covers ``[j, j+1) x
[i, i+1)`` with its centre at ``(j + 0.5, i + 0.5)``. ``crop_to_image`` is the exact inverse of the
crop for such continuous coordinates.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CROP_SIZE = 120
PIXEL_MEAN = 127.5
PIXEL_STD = 128.0


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
    """Square 3DDFA_V2 region of interest from landmarks (its second, ``crop_policy='landmark'`` pass).

    Args:
        points: ``(..., L, 2+)`` image coordinates (a depth column is ignored).
    Returns:
        ``(..., 4)``: the square around the landmarks' bounding square whose side is that square's diagonal.
    """
    lower = points[..., :2].amin(dim=-2)
    upper = points[..., :2].amax(dim=-2)
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


def crop_image(image: torch.Tensor, roi_box: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """Cut ``roi_box`` out of ``image`` (zeros outside it), resize to ``size x size``, normalise.

    Args:
        image: ``(C, H, W)`` uint8 in [0, 255], or floating in [0, 1].
        roi_box: ``(4,)`` ``[sx, sy, ex, ey]`` in pixels.
        size: side of the output crop (3DDFA_V2: 120).
    Returns:
        ``(C, size, size)`` float32, ``(x - 127.5) / 128`` of the 0-255 intensities; channel order kept.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (C, H, W), got {tuple(image.shape)}")
    intensity_scale = 1.0 if image.dtype == torch.uint8 else 255.0
    sx, sy, ex, ey = pixel_box(roi_box)
    height, width = image.shape[-2:]
    canvas = torch.zeros((image.shape[0], ey - sy, ex - sx), device=image.device)
    x0, y0, x1, y1 = max(sx, 0), max(sy, 0), min(ex, width), min(ey, height)
    if x1 > x0 and y1 > y0:
        canvas[:, y0 - sy : y1 - sy, x0 - sx : x1 - sx] = image[:, y0:y1, x0:x1].float() * intensity_scale
    resized = F.interpolate(canvas[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return (resized - PIXEL_MEAN) / PIXEL_STD


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


def crop_scale(roi_box: torch.Tensor, size: int = CROP_SIZE) -> float:
    """Image pixels per crop pixel, the mean of the two axes (used to scale depth like 3DDFA_V2)."""
    sx, sy, ex, ey = pixel_box(roi_box)
    return ((ex - sx) + (ey - sy)) / (2 * size)
