"""NVlabs' call style (``G(z, c, truncation_psi, truncation_cutoff, noise_mode)``, ``G.mapping(z, c, ...)``,
``G.synthesis(ws, noise_mode)``, ``G.z_dim`` ...) on generators loaded from NVlabs pickles and rosinality files,
checked against NVlabs' forward written out in test_nvlabs_pickle."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facetex.gan.checkpoints import seeded_stylegan2
from facetex.gan.generator_file import load_generator
from facetex.gan.nvlabs_pickle import load_nvlabs_pickle
from facetex.gan.stylegan3 import Generator as StyleGAN3
from facetex.gan.stylegan3 import stylegan3_config
from tests.facetex.gan.test_nvlabs_pickle import (
    SG2_W_DIM,
    nvlabs_mapping,
    nvlabs_stylegan2_state,
    nvlabs_synthesis,
    write_stylegan2_pickle,
)


def test_stylegan2_pickle_answers_nvlabs_calls_as_nvlabs(tmp_path: Path) -> None:
    state = nvlabs_stylegan2_state(seed=1)
    G = load_nvlabs_pickle(write_stylegan2_pickle(tmp_path, state))
    assert (G.z_dim, G.c_dim, G.w_dim, G.num_ws, G.img_resolution, G.img_channels) == (16, 0, 16, 6, 16, 3)
    z = torch.randn(3, SG2_W_DIM, generator=torch.Generator().manual_seed(4))
    w = nvlabs_mapping(state, z)
    expected_ws = w[:, None].repeat(1, 6, 1)
    expected_ws[:, :2] = state["mapping.w_avg"] + 0.7 * (expected_ws[:, :2] - state["mapping.w_avg"])
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7, truncation_cutoff=2)
        torch.testing.assert_close(ws, expected_ws, atol=1e-5, rtol=1e-5)
        expected = nvlabs_synthesis(state, expected_ws)
        torch.testing.assert_close(G.synthesis(ws, noise_mode="const"), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(G(z, None, truncation_psi=0.7, truncation_cutoff=2, noise_mode="const"), expected,
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(G(z, torch.zeros(3, 0), 0.7, 2, noise_mode="const"), expected, atol=1e-4, rtol=1e-4)
        # NVlabs' default noise_mode, in G(z, c) and in G.synthesis(ws) alike, is 'random': two calls differ
        assert not torch.equal(G(z, None), G(z, None))
        assert not torch.equal(G.synthesis(ws), G.synthesis(ws))
        torch.manual_seed(5)
        drawn = G.synthesis(ws)
        torch.manual_seed(5)
        torch.testing.assert_close(drawn, G.synthesis(ws, noise_mode="random"), rtol=0, atol=0)
        # the project's interface is unchanged: mapping(z) -> (B, D), forward(styles, ...) rosinality's
        assert G.mapping(z).shape == (3, SG2_W_DIM)
        truncated = state["mapping.w_avg"] + 0.7 * (w - state["mapping.w_avg"])  # every row
        torch.testing.assert_close(G(z, truncation=0.7, truncation_latent=state["mapping.w_avg"][None], noise_mode="const"),
                                   nvlabs_synthesis(state, truncated[:, None].expand(-1, 6, -1)), atol=1e-4, rtol=1e-4)
    assert "w_avg" not in G.state_dict()  # the state dict stays rosinality's
    with pytest.raises(ValueError, match="unconditional"):
        G.mapping(z, torch.ones(3, 4))


def test_rosinality_file_truncates_towards_its_latent_avg_or_says_how_to_set_one(tmp_path: Path) -> None:
    config = {"size": 16, "style_dim": 16, "n_mlp": 2, "channel_max": 8}
    generator = seeded_stylegan2(config, seed=2).eval()
    latent_avg = torch.randn(1, 16)
    torch.save({"g_ema": generator.state_dict(), "latent_avg": latent_avg}, tmp_path / "converted.pt")
    torch.save({"g_ema": generator.state_dict()}, tmp_path / "train.pt")
    G = load_generator(tmp_path / "converted.pt")[0]
    z = torch.randn(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(G(z, None, truncation_psi=0.5, noise_mode="const"),
                                   generator(z, truncation=0.5, truncation_latent=latent_avg, noise_mode="const"))
    untracked = load_generator(tmp_path / "train.pt")[0]
    with pytest.raises(ValueError, match="set_w_avg"):
        untracked(z, None, truncation_psi=0.5)
    untracked.set_w_avg(latent_avg)
    with torch.no_grad():
        torch.testing.assert_close(untracked.mapping(z, None, 0.5), G.mapping(z, None, 0.5))


def test_stylegan3_takes_nvlabs_keywords() -> None:
    torch.manual_seed(0)
    G = StyleGAN3(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                  **{**stylegan3_config("t"), "channel_base": 128, "channel_max": 64, "num_layers": 4}).eval()
    G.mapping.w_avg.normal_()
    z = torch.randn(2, 16)
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7, truncation_cutoff=3, update_emas=False)
        image = G(z, None, truncation_psi=0.7, truncation_cutoff=3, noise_mode="const", force_fp32=True)
        torch.testing.assert_close(image, G.synthesis(ws, noise_mode="random", force_fp32=True))
    assert not torch.equal(ws[:, 3], ws[:, 2]) and torch.equal(ws[:, 3], ws[:, -1])  # rows from the cutoff on untouched
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")
