"""SeFa's closed form: the eigenvectors of the row-normalised, stacked style-modulation weights of the chosen layers."""
from __future__ import annotations

import pytest
import torch

from facetex.gan.checkpoints import seeded_stylegan2
from facetex.gan.pose_walk import apply_walk
from facetex.gan.sefa import modulation_weight, sefa_boundary, sefa_directions

CONFIG = {"size": 16, "style_dim": 16, "n_mlp": 2, "channel_max": 8}  # n_latent 6, 8 channels per layer


def test_directions_recover_the_axes_the_modulation_weights_are_built_from() -> None:
    generator = seeded_stylegan2(CONFIG, seed=0)
    basis = torch.eye(16)
    rows = torch.cat([basis[3].repeat(11, 1), basis[7].repeat(5, 1)])  # 11 channels read axis 3, 5 read axis 7
    scales = (torch.linspace(0.5, 6, 16) * torch.tensor([1.0, -1.0]).repeat(8))[:, None]
    with torch.no_grad():  # layers 0 (conv1) and 1 (convs.0): row norms differ, SeFa normalises them away
        generator.conv1.conv.modulation.weight.copy_((rows * scales)[:8])
        generator.convs[0].conv.modulation.weight.copy_((rows * scales)[8:])
    directions, eigenvalues = sefa_directions(generator, [0, 1])
    torch.testing.assert_close(eigenvalues[:3], torch.tensor([11.0, 5.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(directions[0].abs(), basis[3], atol=1e-6, rtol=0)
    torch.testing.assert_close(directions[1].abs(), basis[7], atol=1e-6, rtol=0)
    torch.testing.assert_close(directions @ directions.T, torch.eye(16), atol=1e-5, rtol=0)


def test_layer_i_is_the_convolution_reading_w_plus_row_i() -> None:
    generator = seeded_stylegan2(CONFIG, seed=1)
    assert torch.equal(modulation_weight(generator, 0), generator.conv1.conv.modulation.weight)
    assert torch.equal(modulation_weight(generator, 3), generator.convs[2].conv.modulation.weight)
    assert torch.equal(modulation_weight(generator, 5), generator.to_rgbs[-1].conv.modulation.weight)
    with pytest.raises(ValueError, match="layer 6 is not a W\\+ row .*\\(0..5\\)"):
        modulation_weight(generator, 6)


def test_boundary_moves_only_the_factorised_rows_along_the_top_direction() -> None:
    generator = seeded_stylegan2(CONFIG, seed=2)
    directions, eigenvalues = sefa_directions(generator, [1, 2])
    assert torch.all(eigenvalues[:-1] >= eigenvalues[1:])  # largest first
    stacked = torch.cat([modulation_weight(generator, 1), modulation_weight(generator, 2)]).double()
    stacked = stacked / stacked.norm(dim=1, keepdim=True)
    top = directions[0].double()  # the maximiser of sum ||A n||^2 over unit n: no random unit vector beats it
    trial = torch.nn.functional.normalize(torch.randn(200, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=1)
    assert (stacked @ top).square().sum() >= (stacked @ trial.T).square().sum(0).max()
    torch.testing.assert_close((stacked @ top).square().sum().float(), eigenvalues[0], atol=1e-4, rtol=1e-5)
    boundary = sefa_boundary(generator, [1, 2], component=0)
    assert boundary.shape == (6, 16) and torch.equal(boundary[[0, 3, 4, 5]], torch.zeros(4, 16))
    ws = torch.randn(1, 6, 16)
    walked = apply_walk(ws, boundary, torch.tensor([2.0]))[0, 0]
    torch.testing.assert_close(walked - ws[0], 2 * boundary)
    with pytest.raises(ValueError, match="component 16 out of range"):
        sefa_boundary(generator, [1, 2], component=16)
