"""Official ReStyle checkpoints: files laid out as restyle-encoder / stylegan3-editing save them load strictly,
and the encoder computes what the published network (written out below from its module and key names) computes."""
from __future__ import annotations

import math
import pathlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from facetex.gan import stylegan2, stylegan3
from facetex.gan.checkpoints import load_generator, seeded_stylegan2
from facetex.gan.restyle_checkpoint import (
    ReStyleCheckpointError,
    load_restyle_checkpoint,
    load_restyle_encoder,
)
from facetex.gan.stylegan3 import stylegan3_config
from foundation.errors import InputError

STAGES = ((8, 8, 2), (8, 16, 1), (16, 24, 2), (24, 32, 1))  # (in, depth, units) as helpers.get_blocks lists them
INPUT_SIZE, SPATIAL = 64, 4  # 4 stride-2 stages: 64 -> 4, then log2(4) = 2 stride-2 convs per head
STYLE_DIM = 16
SG2_CONFIG = {"size": 16, "style_dim": STYLE_DIM, "n_mlp": 2, "channel_max": 8}  # n_latent 6


def restyle_encoder_state(n_styles: int, seed: int) -> dict[str, Tensor]:
    """Random tensors under ReStyle's BackboneEncoder names (input_layer, body.{i}.shortcut/res_layer, styles.{j})."""
    rng = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3, shift: float = 0.0) -> Tensor:
        return torch.randn(shape, generator=rng) * scale + shift

    def batch_norm(prefix: str, channels: int) -> dict[str, Tensor]:
        return {f"{prefix}.weight": rand(channels, shift=1.0), f"{prefix}.bias": rand(channels, scale=0.1),
                f"{prefix}.running_mean": rand(channels, scale=0.1), f"{prefix}.running_var": rand(channels).abs() + 0.5,
                f"{prefix}.num_batches_tracked": torch.tensor(7)}

    state = {"input_layer.0.weight": rand(STAGES[0][0], 6, 3, 3), **batch_norm("input_layer.1", STAGES[0][0]),
             "input_layer.2.weight": rand(STAGES[0][0], shift=0.25)}
    unit = 0
    for in_channels, depth, units in STAGES:
        for index in range(units):
            c_in, p = in_channels if index == 0 else depth, f"body.{unit}"
            if c_in != depth:
                state[f"{p}.shortcut_layer.0.weight"] = rand(depth, c_in, 1, 1)
                state.update(batch_norm(f"{p}.shortcut_layer.1", depth))
            state.update(batch_norm(f"{p}.res_layer.0", c_in))
            state[f"{p}.res_layer.1.weight"] = rand(depth, c_in, 3, 3)
            state[f"{p}.res_layer.2.weight"] = rand(depth, shift=0.25)
            state[f"{p}.res_layer.3.weight"] = rand(depth, depth, 3, 3)
            state.update(batch_norm(f"{p}.res_layer.4", depth))
            state[f"{p}.res_layer.5.fc1.weight"] = rand(max(1, depth // 16), depth, 1, 1)
            state[f"{p}.res_layer.5.fc2.weight"] = rand(depth, max(1, depth // 16), 1, 1)
            unit += 1
    for j in range(n_styles):
        for k in range(int(math.log2(SPATIAL))):
            state[f"styles.{j}.convs.{2 * k}.weight"] = rand(STYLE_DIM, STAGES[-1][1] if k == 0 else STYLE_DIM, 3, 3)
            state[f"styles.{j}.convs.{2 * k}.bias"] = rand(STYLE_DIM, scale=0.1)
        state[f"styles.{j}.linear.weight"] = rand(STYLE_DIM, STYLE_DIM, scale=1.0)
        state[f"styles.{j}.linear.bias"] = rand(STYLE_DIM, scale=0.1)
    return state


def reference_encoder(state: dict[str, Tensor], x: Tensor, n_styles: int, progressive: bool) -> Tensor:
    """ReStyle's BackboneEncoder / ProgressiveBackboneEncoder forward, written from the published layers."""
    def bn(p: str, y: Tensor) -> Tensor:
        return F.batch_norm(y, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], eps=1e-5)

    x = F.prelu(bn("input_layer.1", F.conv2d(x, state["input_layer.0.weight"], padding=1)), state["input_layer.2.weight"])
    unit = 0
    for in_channels, depth, units in STAGES:
        for index in range(units):
            p, stride = f"body.{unit}", 2 if index == 0 else 1  # get_block: the first unit of a block has stride 2
            if f"{p}.shortcut_layer.0.weight" in state:
                shortcut = bn(f"{p}.shortcut_layer.1", F.conv2d(x, state[f"{p}.shortcut_layer.0.weight"], stride=stride))
            else:
                shortcut = F.max_pool2d(x, 1, stride)
            r = F.conv2d(bn(f"{p}.res_layer.0", x), state[f"{p}.res_layer.1.weight"], padding=1)
            r = F.conv2d(F.prelu(r, state[f"{p}.res_layer.2.weight"]), state[f"{p}.res_layer.3.weight"], stride=stride,
                         padding=1)
            r = bn(f"{p}.res_layer.4", r)
            gate = F.conv2d(F.relu(F.conv2d(r.mean(dim=(2, 3), keepdim=True), state[f"{p}.res_layer.5.fc1.weight"])),
                            state[f"{p}.res_layer.5.fc2.weight"])
            x = shortcut + r * torch.sigmoid(gate)
            unit += 1
    rows = []
    for j in range(n_styles):
        y = x
        for k in range(int(math.log2(SPATIAL))):
            y = F.leaky_relu(F.conv2d(y, state[f"styles.{j}.convs.{2 * k}.weight"], state[f"styles.{j}.convs.{2 * k}.bias"],
                                      stride=2, padding=1), 0.01)
        weight = state[f"styles.{j}.linear.weight"] / math.sqrt(STYLE_DIM)  # EqualLinear, lr_mul 1
        rows.append(F.linear(y.flatten(1), weight, state[f"styles.{j}.linear.bias"]))
    if progressive:  # w0 repeated, plus delta_i on row i >= 1
        return torch.stack([rows[0]] + [rows[0] + delta for delta in rows[1:]], dim=1)
    return torch.stack(rows, dim=1)


def save_restyle(path: Path, decoder: torch.nn.Module, encoder_type: str, seed: int = 0, prefix: str = "",
                 **opts) -> dict[str, Tensor]:
    """torch.save({'state_dict', 'opts', 'latent_avg'}) as ReStyle's coach does; returns the encoder tensors."""
    encoder = restyle_encoder_state(decoder.n_latent, seed)
    state = {f"{prefix}encoder.{k}": v for k, v in encoder.items()}
    state.update({f"{prefix}decoder.{k}": v for k, v in decoder.state_dict().items()})
    latent_avg = torch.randn(STYLE_DIM, generator=torch.Generator().manual_seed(seed + 1))
    torch.save({"state_dict": state, "latent_avg": latent_avg,
                "opts": {"encoder_type": encoder_type, "input_nc": 6, "n_iters_per_batch": 4, **opts}}, path)
    return encoder


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
        torch.testing.assert_close(restyle.decoder.synthesis(ws), decoder.synthesis(ws), atol=0, rtol=0)
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
        torch.testing.assert_close(restyle.decoder.synthesis(ws), decoder.synthesis(ws), atol=0, rtol=0)


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
    save_restyle(tmp_path / "psp.pt", decoder, "GradualStyleEncoder")
    with pytest.raises(ReStyleCheckpointError, match="GradualStyleEncoder encoder .* restyle_pSp_ffhq.pt"):
        load_restyle_checkpoint(tmp_path / "psp.pt")
    assert isinstance(load_generator(tmp_path / "psp.pt")[0], stylegan2.Generator)  # its decoder still loads

    save_restyle(tmp_path / "restyle.pt", decoder, "BackboneEncoder")
    other = seeded_stylegan2(SG2_CONFIG, seed=9)
    with pytest.raises(ReStyleCheckpointError, match="not the pipeline's .* use that file as the generator"):
        load_restyle_encoder(tmp_path / "restyle.pt", other)

    checkpoint = torch.load(tmp_path / "restyle.pt", weights_only=True)
    del checkpoint["latent_avg"]
    torch.save(checkpoint, tmp_path / "no_avg.pt")
    with pytest.raises(ReStyleCheckpointError, match="no 'latent_avg'"):
        load_restyle_checkpoint(tmp_path / "no_avg.pt")
    torch.save({"g_ema": decoder.state_dict()}, tmp_path / "rosinality.pt")
    with pytest.raises(ReStyleCheckpointError, match="not a pSp / e4e / ReStyle checkpoint .*'g_ema'"):
        load_restyle_checkpoint(tmp_path / "rosinality.pt")
    with pytest.raises(InputError, match="not found"):
        load_restyle_checkpoint(tmp_path / "missing.pt")
