"""Face-skin masks: polygon fill and erosion by brute force, the robust skin-colour model against outliers,
and the whole mask on a flat synthetic face; robust cross-view outlier rejection in fusion."""
from __future__ import annotations

import pytest
import torch

from facetex.face3d.face_mask import (
    MOUTH_INTERIOR,
    box_mean,
    convex_hull,
    erode,
    face_skin_mask,
    inner_face_polygon,
    inner_face_vertices,
    polygon_mask,
    skin_colour_mask,
    skin_colour_model,
)
from facetex.face3d.view_outliers import reject_outliers, weighted_median


def test_polygon_mask_fills_pixel_centres_inside() -> None:
    square = torch.tensor([[2.0, 3.0], [7.0, 3.0], [7.0, 9.0], [2.0, 9.0]])
    expected = torch.zeros(12, 10, dtype=torch.bool)
    expected[3:9, 2:7] = True  # centres j + 0.5 in [2, 7) x [3, 9)
    assert torch.equal(polygon_mask(square, 12, 10), expected)
    triangle = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    assert abs(int(polygon_mask(triangle, 100, 100).sum()) - 5000) <= 100


def test_erode_removes_a_border_of_radius_pixels() -> None:
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:8, 1:9] = True
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[3:7, 2:8] = True
    assert torch.equal(erode(mask, 1), expected)
    assert torch.equal(erode(mask, 0), mask)
    assert not erode(torch.ones(3, 3, dtype=torch.bool), 2).any()  # outside the image counts as outside


def test_skin_colour_model_ignores_a_minority_of_outliers() -> None:
    generator = torch.Generator().manual_seed(0)
    skin = torch.tensor([0.7, 0.5, 0.4])
    image = skin[:, None, None] + 0.02 * torch.randn(3, 40, 40, generator=generator)
    image[:, :12] = torch.tensor([0.05, 0.04, 0.03])[:, None, None]  # 30% hair in the sample
    mean, covariance, inlier_share = skin_colour_model(image, torch.ones(40, 40, dtype=torch.bool))
    torch.testing.assert_close(mean, skin, atol=0.01, rtol=0)
    assert 0.68 < inlier_share <= 0.70
    mask = skin_colour_mask(image, mean, covariance, 5.0)
    assert not mask[:12].any() and mask[12:].float().mean() > 0.99
    with pytest.raises(ValueError, match="skin sample region"):
        skin_colour_model(image, torch.zeros(40, 40, dtype=torch.bool))


def _flat_face() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A square mesh over pixels [8, 56)^2 and 68 plausible landmarks on it: jaw a U from (12, 20) down to
    (32, 52) and up to (52, 20), brows on row 20, eyes on row 24, upper lip on row 40, inner lips rows 40-44."""
    vertices = torch.tensor([[8.0, 8.0, 0.0], [56.0, 8.0, 0.0], [56.0, 56.0, 0.0], [8.0, 56.0, 0.0]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    landmarks = torch.full((68, 2), 32.0)
    angle = torch.pi - torch.arange(17) * torch.pi / 16
    landmarks[:17] = torch.stack([32 + 20 * angle.cos(), 20 + 32 * angle.sin()], dim=1)
    landmarks[17:27] = torch.stack([torch.linspace(14, 50, 10), torch.full((10,), 20.0)], dim=1)
    landmarks[36:48] = torch.stack([torch.cat([torch.linspace(16, 28, 6), torch.linspace(36, 48, 6)]),
                                    torch.full((12,), 24.0)], dim=1)
    landmarks[28] = torch.tensor([32.0, 26.0])
    landmarks[48:55] = torch.stack([torch.linspace(24, 40, 7), torch.tensor([42.0, 41, 40, 40, 40, 41, 42])], dim=1)
    landmarks[list(MOUTH_INTERIOR)] = torch.tensor([[26.0, 40.0], [32.0, 40.0], [38.0, 40.0], [38.0, 42.0],
                                                    [38.0, 44.0], [32.0, 44.0], [26.0, 44.0], [26.0, 42.0]])
    return vertices, faces, landmarks


def test_face_skin_mask_drops_background_hair_and_mouth_but_keeps_the_inner_face() -> None:
    vertices, faces, landmarks = _flat_face()
    image = torch.zeros(3, 64, 64)
    image[:] = torch.tensor([1.0, 0.0, 1.0])[:, None, None]  # magenta everywhere
    image[:, 4:60, 4:60] = torch.tensor([0.7, 0.5, 0.4])[:, None, None]  # skin beyond the mesh's outline
    image[:, 8:16, 8:56] = torch.tensor([0.1, 0.08, 0.05])[:, None, None]  # hair over the mesh's top rows
    image[:, 50:56, 8:14] = torch.tensor([0.1, 0.08, 0.05])[:, None, None]  # a dark collar outside the jaw line
    image[:, 46:50, 28:36] = torch.tensor([0.1, 0.08, 0.05])[:, None, None]  # a beard inside it
    mask = face_skin_mask(image, vertices, faces, landmarks, erosion=1)
    covered = torch.zeros(64, 64, dtype=torch.bool)
    covered[8:56, 8:56] = True
    assert not mask[~covered].any()  # nothing beyond the mesh
    assert not mask[8:17].any()  # the hair and one row next to it (erosion)
    assert not mask[49:56, 8:15].any()  # the collar and the pixels next to it
    assert mask[46:50, 28:36].all()  # the beard is the face
    assert not mask[41:44, 27:38].any()  # the mouth interior
    assert mask[17:40, 8:56].all() and mask[45:56, 20:44].all()  # the skin
    with pytest.raises(ValueError, match="68, 2"):
        face_skin_mask(image, vertices, faces, landmarks[:60])


def test_box_mean_is_the_weighted_mean_over_each_square() -> None:
    generator = torch.Generator().manual_seed(1)
    values, weights = torch.rand(2, 9, 11, generator=generator), (torch.rand(9, 11, generator=generator) > 0.4).float()
    mean, total = box_mean(values, weights, 2)
    for row, col in [(0, 0), (4, 5), (8, 10), (3, 1)]:
        rows, cols = slice(max(0, row - 2), row + 3), slice(max(0, col - 2), col + 3)
        assert total[row, col].item() == weights[rows, cols].sum().item()
        expected = (values[:, rows, cols] * weights[rows, cols]).sum(dim=(1, 2)) / weights[rows, cols].sum()
        torch.testing.assert_close(mean[:, row, col], expected)


def test_background_showing_through_a_too_large_mesh_inside_the_face_outline_is_cut() -> None:
    """A mesh 4 px wider on the left than the face, all of it inside the face (as a profile's nose and upper lip
    are): the dark background seen through it is cut (it was kept: only the 1 px silhouette band was colour-tested
    inside the face), while a patch of the same dark colour deeper inside (a beard) and a red patch at the outline
    (lips: not skin, but not like the background either) stay."""
    vertices, faces, landmarks = _flat_face()
    background, skin = torch.tensor([0.1, 0.1, 0.12]), torch.tensor([0.7, 0.5, 0.4])
    image = background[:, None, None].expand(3, 64, 64).clone()
    image[:, :, 12:60] = skin[:, None, None]  # the face starts 4 px right of the mesh's left edge (x = 8)
    image[:, 44:50, 26:36] = background[:, None, None]  # a beard of the background's colour, deep inside
    image[:, 24:34, 52:56] = torch.tensor([0.6, 0.1, 0.1])[:, None, None]  # red at the mesh's right outline
    mask = face_skin_mask(image, vertices, faces, landmarks, inner_face=torch.ones(4, dtype=torch.bool), erosion=1)
    assert not mask[:, :13].any()  # the background through the mesh, and the pixel next to it
    assert mask[8:40, 13:54].all() and mask[45:56, 13:56].all()  # the skin, the beard
    assert mask[24:34, 52:54].all()  # the red patch (but the 1 px silhouette band and its erosion, as before)


def test_inner_face_on_the_surface_is_the_landmark_outline_seen_frontally() -> None:
    _, _, landmarks = _flat_face()
    ys, xs = torch.meshgrid(torch.arange(64.0) + 0.5, torch.arange(64.0) + 0.5, indexing="ij")
    # model space: y up, so the image's rows are -y; any depth
    vertices = torch.stack([xs.flatten(), -ys.flatten(), torch.rand(64 * 64)], dim=1)
    model_landmarks = torch.cat([landmarks * torch.tensor([1.0, -1.0]), torch.zeros(68, 1)], dim=1)
    inner = inner_face_vertices(vertices, model_landmarks).reshape(64, 64)
    assert torch.equal(inner, polygon_mask(inner_face_polygon(landmarks), 64, 64))
    assert inner[30, 32] and not inner[10, 32]  # the nose is inside; the forehead above the raised brows is not
    assert inner[18, 32] and not inner[17, 32]  # brows on row 20 raised by half their 4-pixel gap to the eyes


def test_a_sample_that_is_not_one_colour_switches_the_colour_test_off() -> None:
    vertices, faces, landmarks = _flat_face()
    image = torch.zeros(3, 64, 64)
    image[:] = torch.tensor([0.7, 0.5, 0.4])[:, None, None]
    image[:, ::2] = torch.tensor([0.1, 0.08, 0.05])[:, None, None]  # stripes: half the cheeks dark
    image[:, 8:16, 8:56] = torch.tensor([0.1, 0.08, 0.05])[:, None, None]
    mask = face_skin_mask(image, vertices, faces, landmarks)
    assert mask[8:40, 8:56].all()  # only the mesh and the mouth cut it
    assert not mask[41:44, 27:38].any()


def test_convex_hull_and_the_outline_of_a_model_without_a_jaw_contour() -> None:
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [1.0, 1.0], [1.0, 0.0]])
    hull = convex_hull(square)
    assert sorted(map(tuple, hull.tolist())) == [(0.0, 0.0), (0.0, 2.0), (2.0, 0.0), (2.0, 2.0)]
    _, _, landmarks = _flat_face()
    no_jaw = landmarks.clone()
    no_jaw[[i for i in range(17) if i != 8]] = float("nan")  # the Surrey model marks the chin only
    outline = polygon_mask(inner_face_polygon(no_jaw), 64, 64)
    assert outline[30, 32] and outline[50, 32] and outline[19, 15]  # nose, chin, above the outer brow end
    assert not outline[50, 14] and not outline[10, 32]  # beside the chin, the forehead above the raised brows
    assert (outline & ~polygon_mask(inner_face_polygon(landmarks), 64, 64)).sum() < 0.5 * outline.sum()


def test_weighted_median_and_outlier_rejection() -> None:
    values = torch.tensor([1.0, 2.0, 10.0])[:, None]
    assert weighted_median(values, torch.tensor([1.0, 1.0, 1.0])[:, None]).item() == 2.0
    assert weighted_median(values, torch.tensor([0.2, 0.2, 1.0])[:, None]).item() == 10.0
    # four views agree on skin, one sees hair: the hair sample goes, the others stay
    colours = torch.tensor([[0.70, 0.5, 0.4], [0.72, 0.5, 0.41], [0.69, 0.49, 0.4], [0.71, 0.52, 0.4],
                            [0.1, 0.08, 0.05]])[:, :, None, None]
    weights = torch.tensor([1.0, 0.5, 0.5, 0.3, 0.8])[:, None, None]
    kept = reject_outliers(colours, weights, z=3.0, floor=0.05)
    assert torch.equal(kept[:, 0, 0], torch.tensor([1.0, 0.5, 0.5, 0.3, 0.0]))
    # two views cannot outvote each other; z = 0 keeps everything
    assert torch.equal(reject_outliers(colours[3:], weights[3:], 3.0, 0.05), weights[3:])
    assert torch.equal(reject_outliers(colours, weights, 0.0, 0.05), weights)
