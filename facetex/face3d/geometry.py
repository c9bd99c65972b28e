"""Triangle-mesh normals.

A triangle ``(a, b, c)`` counter-clockwise when seen from outside has its normal
pointing outside (right-hand rule): ``(b - a) x (c - a)``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _check(vertices: Tensor, faces: Tensor) -> None:
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (B, V, 3), got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3 or faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces must be an integer tensor of shape (F, 3), got {tuple(faces.shape)} {faces.dtype}")


def _normalize(vectors: Tensor) -> Tensor:
    """Unit vectors along the last axis; zero vectors stay zero."""
    norm = vectors.norm(dim=-1, keepdim=True)
    return vectors / norm.clamp_min(torch.finfo(vectors.dtype).tiny)


def face_area_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Cross products ``(b - a) x (c - a)``: ``(B, F, 3)``, length = twice the triangle area."""
    _check(vertices, faces)
    faces = faces.long()
    a, b, c = vertices[:, faces[:, 0]], vertices[:, faces[:, 1]], vertices[:, faces[:, 2]]
    return torch.linalg.cross(b - a, c - a, dim=-1)


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit normal of each triangle, ``(B, F, 3)``; zero for degenerate triangles."""
    return _normalize(face_area_normals(vertices, faces))


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals, ``(B, V, 3)``.

    Each vertex sums the un-normalised normals of its triangles (so larger triangles
    weigh more, and slivers barely count), then the sum is normalised. Vertices
    used by no triangle get a zero normal.
    """
    cross = face_area_normals(vertices, faces)
    faces = faces.long()
    summed = torch.zeros_like(vertices)
    for corner in range(3):
        summed = summed.index_add(1, faces[:, corner], cross)
    return _normalize(summed)
