"""Hole filling: the membrane fill is exact on harmonic maps, the guided fill keeps the guide's detail at the
border's level, and neither crosses the domain's edge."""
from __future__ import annotations

import torch

from facetex.face3d.inpaint import membrane_fill

SIZE = 256


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                                indexing="ij")
    return rows / SIZE, cols / SIZE


def test_a_hole_in_a_linear_map_is_filled_exactly_with_no_step_at_its_border() -> None:
    """A linear map is harmonic: the membrane fill of any hole is the map itself (push-pull is off by 0.02 here)."""
    y, x = _grid()
    ramp = torch.stack([x, y, 0.3 + 0.2 * x - 0.1 * y])
    known = torch.ones(SIZE, SIZE, dtype=torch.bool)
    known[50:200, 70:150] = False
    filled = membrane_fill(ramp, known, torch.ones_like(known))
    assert (filled - ramp).abs().max() < 3e-3
    assert torch.equal(filled[:, known], ramp[:, known])


def test_the_guided_fill_takes_the_guides_detail_at_the_level_of_the_border() -> None:
    """Guide = truth + 0.2 (right detail, wrong level, as a mirror half lit differently): the fill is the truth."""
    y, x = _grid()
    truth = torch.stack([0.5 + 0.1 * torch.sin(40 * x) * torch.cos(30 * y), 0.4 + 0.2 * x, 0.3 + 0.05 * torch.sin(60 * y)])
    known = torch.ones(SIZE, SIZE, dtype=torch.bool)
    known[60:180, 40:200] = False
    filled = membrane_fill(truth, known, torch.ones_like(known), guide=truth + 0.2, guided=~known)
    plain = membrane_fill(truth, known, torch.ones_like(known))
    assert (filled - truth).abs().max() < 0.02 < (plain - truth).abs().max()


def test_texels_outside_the_domain_neither_feed_nor_take_the_fill() -> None:
    """Two halves split by a wall outside the domain: the right half's hole is filled from the right half only."""
    values = torch.zeros(1, SIZE, SIZE)
    values[:, :, SIZE // 2:] = 1.0
    domain = torch.ones(SIZE, SIZE, dtype=torch.bool)
    domain[:, SIZE // 2 - 2: SIZE // 2] = False
    known = torch.ones_like(domain)
    known[100:150, SIZE // 2: SIZE // 2 + 40] = False
    filled = membrane_fill(values, known, domain)
    assert torch.allclose(filled[0, 100:150, SIZE // 2: SIZE // 2 + 40], torch.tensor(1.0), atol=1e-6)
    assert torch.equal(filled[:, ~domain], values[:, ~domain])
