"""Face-skin masks: polygon fill and erosion by brute force, the robust skin-colour model against outliers,
and the whole mask on a flat synthetic face; robust cross-view outlier rejection in fusion."""
from __future__ import annotations

import pytest
import torch

from facetex.face3d.face_mask import (
    MOUTH_INTERIOR,
    SKIN_SAMPLE_POLYGON,
    erode,
    face_skin_mask,
    polygon_mask,
    skin_colour_mask,
    skin_colour_model,
)
from facetex.face3d.texture import reject_outliers, weighted_median


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
    mean, covariance = skin_colour_model(image, torch.ones(40, 40, dtype=torch.bool))
    torch.testing.assert_close(mean, skin, atol=0.01, rtol=0)
    mask = skin_colour_mask(image, mean, covariance, 5.0)
    assert not mask[:12].any() and mask[12:].float().mean() > 0.99
    with pytest.raises(ValueError, match="skin sample region"):
        skin_colour_model(image, torch.zeros(40, 40, dtype=torch.bool))


def _flat_face(size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A square mesh over pixels [8, 56)^2 and 68 landmarks on it: the skin polygon around the middle,
    the inner lips a small box at rows 40-44."""
    vertices = torch.tensor([[8.0, 8.0, 0.0], [56.0, 8.0, 0.0], [56.0, 56.0, 0.0], [8.0, 56.0, 0.0]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    landmarks = torch.full((68, 2), 32.0)
    angles = torch.linspace(0, 2 * torch.pi, len(SKIN_SAMPLE_POLYGON) + 1)[:-1]
    landmarks[list(SKIN_SAMPLE_POLYGON)] = torch.stack([32 + 14 * angles.cos(), 30 + 8 * angles.sin()], dim=1)
    landmarks[list(MOUTH_INTERIOR)] = torch.tensor([[26.0, 40.0], [32.0, 40.0], [38.0, 40.0], [38.0, 42.0],
                                                    [38.0, 44.0], [32.0, 44.0], [26.0, 44.0], [26.0, 42.0]])
    return vertices, faces, landmarks


def test_face_skin_mask_drops_background_hair_and_mouth() -> None:
    vertices, faces, landmarks = _flat_face()
    image = torch.zeros(3, 64, 64)
    image[:] = torch.tensor([1.0, 0.0, 1.0])[:, None, None]  # magenta everywhere
    image[:, 4:60, 4:60] = torch.tensor([0.7, 0.5, 0.4])[:, None, None]  # skin beyond the mesh's outline
    image[:, 8:16, 8:56] = torch.tensor([0.1, 0.08, 0.05])[:, None, None]  # hair over the mesh's top rows
    mask = face_skin_mask(image, vertices, faces, landmarks, erosion=1)
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[17:56, 8:56] = True  # the mesh, less the hair and one more row next to it
    expected[40:44, 26:38] = False  # the mouth interior
    assert torch.equal(mask, expected)
    with pytest.raises(ValueError, match="68, 2"):
        face_skin_mask(image, vertices, faces, landmarks[:60])


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
