"""Official ReStyle checkpoints: files laid out as restyle-encoder / stylegan3-editing save them load strictly,
and the encoder computes what the published network (written out below from its module and key names) computes."""
from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facetex.gan import stylegan2, stylegan3
from facetex.gan.checkpoints import seeded_stylegan2
from facetex.gan.generator_file import load_generator
from facetex.gan.restyle_checkpoint import (
    ReStyleCheckpointError,
    load_restyle_checkpoint,
    load_restyle_encoder,
)
from facetex.gan.stylegan3 import stylegan3_config
from foundation.errors import InputError
from tests.facetex.gan.official_restyle import INPUT_SIZE, STYLE_DIM, reference_encoder, save_restyle

SG2_CONFIG = {"size": 16, "style_dim": STYLE_DIM, "n_mlp": 2, "channel_max": 8}  # n_latent 6


def tiny_sg3() -> stylegan3.Generator:
    torch.manual_seed(0)
    kwargs = {**stylegan3_config("r"), "channel_base": 128, "channel_max": 64, "num_layers": 4}
    return stylegan3.Generator(z_dim=STYLE_DIM, c_dim=0, w_dim=STYLE_DIM, img_resolution=16, img_channels=3, **kwargs)


@pytest.mark.parametrize(("encoder_type", "progressive"), [("BackboneEncoder", False),
                                                           ("ProgressiveBackboneEncoder", True)])
def test_restyle_sg2_checkpoint_loads_strictly_and_encodes_as_the_official_network(
        tmp_path: Path, encoder_type: str, progressive: bool) -> None:
    decoder = seeded_stylegan2(SG2_CONFIG, seed=3).eval()
    encoder_state = save_restyle(tmp_path / "restyle.pt", decoder, encoder_type)
    restyle = load_restyle_checkpoint(tmp_path / "restyle.pt")
    assert restyle.iterations == 4 and restyle.encoder.iterations == 4 and restyle.encoder_type == encoder_type
    assert not restyle.encoder.training and restyle.encoder.input_size == INPUT_SIZE
    x = torch.randn(2, 6, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference_encoder(encoder_state, x, decoder.n_latent, progressive)
        torch.testing.assert_close(restyle.encoder(x), expected, atol=1e-5, rtol=1e-5)
        assert expected.std() > 0.1
        ws = torch.randn(1, decoder.n_latent, STYLE_DIM)
        torch.testing.assert_close(restyle.decoder.synthesis(ws, noise_mode="const"), decoder.synthesis(ws, noise_mode="const"), atol=0, rtol=0)
    assert restyle.latent_avg.shape == (1, decoder.n_latent, STYLE_DIM)


def test_inversion_follows_restyles_inference_loop(tmp_path: Path) -> None:
    decoder = seeded_stylegan2(SG2_CONFIG, seed=3).eval()
    encoder_state = save_restyle(tmp_path / "restyle.pt", decoder, "BackboneEncoder")
    restyle = load_restyle_checkpoint(tmp_path / "restyle.pt")
    image = torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():  # run_on_batch: y_0 = face_pool(G(avg)), codes = E(cat(x, y)) + previous codes
        codes = restyle.latent_avg
        y = F.adaptive_avg_pool2d(decoder.synthesis(codes, noise_mode="const"), INPUT_SIZE)
        expected = []
        for _ in range(restyle.iterations):
            codes = reference_encoder(encoder_state, torch.cat([image, y], dim=1), decoder.n_latent, False) + codes
            y = F.adaptive_avg_pool2d(decoder.synthesis(codes, noise_mode="const"), INPUT_SIZE)
            expected.append(codes)
        found = restyle.encoder.invert(restyle.decoder, image, restyle.iterations, latent_avg=restyle.latent_avg)
    assert len(found) == 4
    for mine, theirs in zip(found, expected):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


def test_stylegan3_editing_checkpoint_with_paths_in_opts_and_batched_transform(tmp_path: Path) -> None:
    decoder = tiny_sg3().eval()
    decoder.synthesis.input.transform = torch.eye(3).repeat(2, 1, 1)  # set before every call by psp3.forward
    encoder_state = save_restyle(tmp_path / "restyle_e4e_ffhq.pt", decoder, "ProgressiveBackboneEncoder",
                                 exp_dir=pathlib.PurePosixPath("/exp"), stylegan_weights=pathlib.Path("sg3.pt"))
    restyle = load_restyle_checkpoint(tmp_path / "restyle_e4e_ffhq.pt")
    assert isinstance(restyle.decoder, stylegan3.Generator) and restyle.decoder.n_latent == decoder.n_latent
    assert torch.equal(restyle.decoder.synthesis.input.transform, torch.eye(3))
    x = torch.randn(1, 6, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(8))
    decoder.synthesis.input.transform = torch.eye(3)
    with torch.no_grad():
        torch.testing.assert_close(restyle.encoder(x), reference_encoder(encoder_state, x, decoder.n_latent, True),
                                   atol=1e-5, rtol=1e-5)
        ws = torch.randn(2, decoder.n_latent, STYLE_DIM)
        torch.testing.assert_close(restyle.decoder.synthesis(ws, noise_mode="const"), decoder.synthesis(ws, noise_mode="const"), atol=0, rtol=0)


def test_load_generator_reads_the_decoder_of_ckpt_and_dataparallel_files(tmp_path: Path) -> None:
    decoder = seeded_stylegan2(SG2_CONFIG, seed=4).eval()
    save_restyle(tmp_path / "restyle.ckpt", decoder, "BackboneEncoder", prefix="module.")
    generator, latent_avg = load_generator(tmp_path / "restyle.ckpt")
    assert isinstance(generator, stylegan2.Generator) and latent_avg.shape == (1, STYLE_DIM)
    torch.testing.assert_close(latent_avg[0], torch.randn(STYLE_DIM, generator=torch.Generator().manual_seed(1)))
    for key, value in decoder.state_dict().items():
        assert torch.equal(generator.state_dict()[key], value), key
    encoder, start = load_restyle_encoder(tmp_path / "restyle.ckpt", generator)
    assert start.shape == (1, 6, STYLE_DIM)


def test_rosinality_ckpt_with_module_prefix_loads(tmp_path: Path) -> None:
    generator = seeded_stylegan2(SG2_CONFIG, seed=5)
    torch.save({"g_ema": {f"module.{k}": v for k, v in generator.state_dict().items()}}, tmp_path / "g.ckpt")
    loaded, latent_avg = load_generator(tmp_path / "g.ckpt")
    assert latent_avg is None and torch.equal(loaded.input.input, generator.input.input)


def test_refused_files_name_what_they_are_and_what_to_do(tmp_path: Path) -> None:
    decoder = seeded_stylegan2(SG2_CONFIG, seed=3).eval()
    save_restyle(tmp_path / "psp.pt", decoder, "BackboneEncoderUsingLastLayerIntoW")
    with pytest.raises(ReStyleCheckpointError, match="BackboneEncoderUsingLastLayerIntoW encoder .* restyle_e4e_ffhq.pt"):
        load_restyle_checkpoint(tmp_path / "psp.pt")
    assert isinstance(load_generator(tmp_path / "psp.pt")[0], stylegan2.Generator)  # its decoder still loads

    save_restyle(tmp_path / "restyle.pt", decoder, "BackboneEncoder")
    other = seeded_stylegan2(SG2_CONFIG, seed=9)
    with pytest.raises(ReStyleCheckpointError, match="not the pipeline's .* use that file as the generator"):
        load_restyle_encoder(tmp_path / "restyle.pt", other)

    checkpoint = torch.load(tmp_path / "restyle.pt", weights_only=True)
    del checkpoint["latent_avg"]
    torch.save(checkpoint, tmp_path / "no_avg.pt")
    with pytest.raises(ReStyleCheckpointError, match="no 'latent_avg' .*ReStyle starts from latent_avg's image"):
        load_restyle_checkpoint(tmp_path / "no_avg.pt")
    torch.save({"g_ema": decoder.state_dict()}, tmp_path / "rosinality.pt")
    with pytest.raises(ReStyleCheckpointError, match="not a pSp / e4e / ReStyle checkpoint .*'g_ema'"):
        load_restyle_checkpoint(tmp_path / "rosinality.pt")
    with pytest.raises(InputError, match="not found"):
        load_restyle_checkpoint(tmp_path / "missing.pt")
