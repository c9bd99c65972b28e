"""Face and vertex normals on meshes with known answers."""
from __future__ import annotations

import torch

from facetex.face3d.geometry import face_normals, vertex_normals


def unit_cube() -> tuple[torch.Tensor, torch.Tensor]:
    """A cube centred at the origin, side 2, triangles counter-clockwise seen from outside."""
    vertices = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = torch.tensor([tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))])
    return vertices[None], faces


def test_cube_face_normals_point_outward_along_axes() -> None:
    vertices, faces = unit_cube()
    normals = face_normals(vertices, faces)[0]
    centroids = vertices[0][faces].mean(dim=1)
    expected = torch.zeros_like(centroids)
    axis = centroids.abs().argmax(dim=1)
    expected[torch.arange(len(axis)), axis] = centroids[torch.arange(len(axis)), axis].sign()
    assert torch.allclose(normals, expected, atol=1e-6)


def test_octahedron_vertex_normals_point_along_the_vertices() -> None:
    # Every vertex touches four congruent faces placed symmetrically around its axis.
    vertices = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    faces = []
    for x in (0, 1):
        for y in (2, 3):
            for z in (4, 5):
                corners = [x, y, z]
                normal = vertices[x] + vertices[y] + vertices[z]
                a, b, c = vertices[corners]
                if torch.dot(torch.linalg.cross(b - a, c - a), normal) < 0:
                    corners = [x, z, y]
                faces.append(corners)
    normals = vertex_normals(vertices[None], torch.tensor(faces))[0]
    assert torch.allclose(normals, vertices, atol=1e-6)
    assert (face_normals(vertices[None], torch.tensor(faces))[0].abs() - 3 ** -0.5).abs().max() < 1e-6


def test_plane_area_weighting_and_units() -> None:
    # Two triangles sharing vertex 0: a large one in the z=0 plane (normal +z) and a
    # small one in the x=0 plane (normal +x); the shared vertex leans to +z by area.
    vertices = torch.tensor([[[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 4, 3]])
    normals = vertex_normals(vertices, faces)[0]
    assert torch.allclose(normals[1], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(normals[3], torch.tensor([1.0, 0.0, 0.0]))
    # Twice-areas 16 (+z) and 1 (+x) at vertex 0.
    assert torch.allclose(normals[0], torch.tensor([1.0, 0.0, 16.0]) / 257 ** 0.5)
    assert torch.allclose(normals.norm(dim=-1), torch.ones(5))
