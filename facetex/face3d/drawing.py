"""Drawing on image tensors for the training logs: landmarks as pixels, and batches tiled into one image."""
from __future__ import annotations

import torch
from torch import Tensor


def draw_points(images: Tensor, points: Tensor, colour: tuple[float, float, float]) -> Tensor:
    """Paint ``points (N, L, 2)`` (pixel coordinates, centres at +0.5) on ``images (N, 3, H, W)`` as single pixels."""
    drawn = images.clone()
    height, width = images.shape[-2:]
    columns = points[..., 0].floor().long()
    rows = points[..., 1].floor().long()
    inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    image_index = torch.arange(images.shape[0], device=images.device)[:, None].expand_as(columns)
    for channel, value in enumerate(colour):
        drawn[image_index[inside], channel, rows[inside], columns[inside]] = value
    return drawn


def image_grid(images: Tensor, columns: int = 4) -> Tensor:
    """Tile ``(N, 3, H, W)`` images into one ``(3, rows * H, columns * W)`` image (blank cells black)."""
    count, channels, height, width = images.shape
    rows = -(-count // columns)
    padded = torch.cat([images, images.new_zeros(rows * columns - count, channels, height, width)])
    return padded.view(rows, columns, channels, height, width).permute(2, 0, 3, 1, 4).reshape(
        channels, rows * height, columns * width
    )
