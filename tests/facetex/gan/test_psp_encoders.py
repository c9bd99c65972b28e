"""pSp's and e4e's own checkpoints (psp_ffhq_encode.pt, e4e_ffhq_encode.pt): files laid out as their coaches save
them load strictly, and invert as the published networks (written out in official_psp.py) do: E(x) + latent_avg."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facetex.gan.checkpoints import seeded_stylegan2
from facetex.gan.encoder import SMALL_STAGES
from facetex.gan.generator_file import load_generator
from facetex.gan.psp_encoders import FeaturePyramidEncoder
from facetex.gan.restyle_checkpoint import ReStyleCheckpointError, load_restyle_checkpoint, load_restyle_encoder
from tests.facetex.gan.official_psp import reference_pyramid_encoder, save_psp
from tests.facetex.gan.official_restyle import INPUT_SIZE, STYLE_DIM

SG2_CONFIG = {"size": 32, "style_dim": STYLE_DIM, "n_mlp": 2, "channel_max": 8}  # n_latent 8: coarse, middle and fine


@pytest.mark.parametrize(("encoder_type", "progressive"), [("GradualStyleEncoder", False), ("Encoder4Editing", True)])
def test_psp_and_e4e_checkpoints_load_strictly_and_invert_as_the_official_network(
        tmp_path: Path, encoder_type: str, progressive: bool) -> None:
    decoder = seeded_stylegan2(SG2_CONFIG, seed=3).eval()
    encoder_state, latent_avg = save_psp(tmp_path / "psp.pt", decoder, encoder_type)
    loaded = load_restyle_checkpoint(tmp_path / "psp.pt")
    encoder = loaded.encoder
    assert isinstance(encoder, FeaturePyramidEncoder) and encoder.progressive == progressive
    assert loaded.iterations == 1 and encoder.iterations == 1 and loaded.encoder_type == encoder_type
    assert not encoder.training and encoder.input_size == INPUT_SIZE and encoder.n_latent == 8
    x = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        expected = reference_pyramid_encoder(encoder_state, x, decoder.n_latent, progressive)
        assert expected.std() > 0.1 and not torch.allclose(expected[:, 7], expected[:, 2])  # fine rows differ
        torch.testing.assert_close(encoder(x), expected, atol=1e-5, rtol=1e-5)
        (codes,) = encoder.invert(loaded.decoder, x, 1, latent_avg=loaded.latent_avg)
        torch.testing.assert_close(codes, expected + latent_avg, atol=1e-5, rtol=1e-5)  # start_from_latent_avg
        ws = torch.randn(1, decoder.n_latent, STYLE_DIM)
        torch.testing.assert_close(loaded.decoder.synthesis(ws, noise_mode="const"),
                                   decoder.synthesis(ws, noise_mode="const"), atol=0, rtol=0)
    torch.testing.assert_close(loaded.latent_avg[0], latent_avg)


def test_photos_are_resized_to_the_encoder_input_and_the_pipeline_hook_checks_the_generator(tmp_path: Path) -> None:
    decoder = seeded_stylegan2(SG2_CONFIG, seed=3).eval()
    encoder_state, latent_avg = save_psp(tmp_path / "e4e.pt", decoder, "Encoder4Editing")
    generator = load_generator(tmp_path / "e4e.pt")[0]
    encoder, start = load_restyle_encoder(tmp_path / "e4e.pt", generator)
    photo = torch.rand(1, 3, 2 * INPUT_SIZE, 2 * INPUT_SIZE, generator=torch.Generator().manual_seed(6)) * 2 - 1
    resized = torch.nn.functional.interpolate(photo, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
    with torch.no_grad():
        (codes,) = encoder.invert(generator, photo, 1, latent_avg=start)
        torch.testing.assert_close(codes, reference_pyramid_encoder(encoder_state, resized, 8, True) + latent_avg,
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one pass, not 3 refinement steps"):
        encoder.invert(generator, photo, 3, latent_avg=start)
    other = seeded_stylegan2(SG2_CONFIG, seed=9)
    with pytest.raises(ReStyleCheckpointError, match="not the pipeline's"):
        load_restyle_encoder(tmp_path / "e4e.pt", other)


def test_other_psp_encoders_are_refused_with_what_to_use(tmp_path: Path) -> None:
    decoder = seeded_stylegan2(SG2_CONFIG, seed=3).eval()
    save_psp(tmp_path / "w.pt", decoder, "BackboneEncoderUsingLastLayerIntoWPlus")
    with pytest.raises(ReStyleCheckpointError, match="BackboneEncoderUsingLastLayerIntoWPlus encoder .* psp_ffhq_encode"):
        load_restyle_checkpoint(tmp_path / "w.pt")
    checkpoint = torch.load(tmp_path / "w.pt", weights_only=True)
    checkpoint["opts"]["encoder_type"] = "GradualStyleEncoder"
    weight = checkpoint["state_dict"]["encoder.input_layer.0.weight"]
    checkpoint["state_dict"]["encoder.input_layer.0.weight"] = weight[:, :1]  # a segmentation/sketch pSp (label_nc)
    torch.save(checkpoint, tmp_path / "sketch.pt")
    with pytest.raises(ReStyleCheckpointError, match="reads 1 channels, not a photo's 3"):
        load_restyle_checkpoint(tmp_path / "sketch.pt")
    with pytest.raises(ValueError, match="last three body stages"):
        FeaturePyramidEncoder(8, 16, SMALL_STAGES[:2], input_size=16)


@pytest.mark.parametrize("encoder_type", ["GradualStyleEncoder", "Encoder4Editing"])
def test_a_checkpoint_trained_without_start_from_latent_avg_inverts_to_the_encoder_output_alone(
        tmp_path: Path, encoder_type: str) -> None:
    """pSp's and e4e's coaches save latent_avg only with --start_from_latent_avg and their inference adds it only
    then: such a file loads, and inverts to E(x) as the official code does (no average added, none invented)."""
    decoder = seeded_stylegan2(SG2_CONFIG, seed=3).eval()
    encoder_state, _ = save_psp(tmp_path / "plain.pt", decoder, encoder_type, start_from_latent_avg=False)
    assert "latent_avg" not in torch.load(tmp_path / "plain.pt", weights_only=True)
    loaded = load_restyle_checkpoint(tmp_path / "plain.pt")
    generator, w_avg = load_generator(tmp_path / "plain.pt")
    encoder, start = load_restyle_encoder(tmp_path / "plain.pt", generator)
    x = torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        expected = reference_pyramid_encoder(encoder_state, x, decoder.n_latent, encoder_type == "Encoder4Editing")
        (codes,) = encoder.invert(generator, x, 1, latent_avg=start)
        torch.testing.assert_close(codes, expected, atol=1e-5, rtol=1e-5)
        (codes,) = loaded.encoder.invert(loaded.decoder, x, 1, latent_avg=loaded.latent_avg)
        torch.testing.assert_close(codes, expected, atol=1e-5, rtol=1e-5)
    assert w_avg is None and torch.isnan(generator.w_avg).all()  # no truncation centre is made up either


def test_e4e_with_start_from_latent_avg_but_no_saved_average_uses_the_mean_latent_as_e4e_does(tmp_path: Path) -> None:
    decoder = seeded_stylegan2(SG2_CONFIG, seed=3).eval()
    encoder_state, _ = save_psp(tmp_path / "e4e.pt", decoder, "Encoder4Editing", save_latent_avg=False)
    loaded = load_restyle_checkpoint(tmp_path / "e4e.pt")
    mean = decoder.mean_latent(10000, torch.Generator().manual_seed(7))  # e4e: decoder.mean_latent(10000)
    assert (loaded.latent_avg[0] - mean).abs().max() < 0.1 * mean.abs().max()  # 10,000 samples: close, not equal
    assert torch.equal(loaded.latent_avg[0, 0], loaded.latent_avg[0, -1])  # one w on every row
    save_psp(tmp_path / "psp.pt", decoder, "GradualStyleEncoder", save_latent_avg=False)
    with pytest.raises(ReStyleCheckpointError, match="no 'latent_avg' .*start_from_latent_avg.* incomplete"):
        load_restyle_checkpoint(tmp_path / "psp.pt")  # pSp's own inference has nothing to add and fails
