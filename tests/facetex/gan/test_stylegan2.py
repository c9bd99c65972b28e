"""StyleGAN2 generator (rosinality layout) and rosinality checkpoint loading."""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pytest
import torch

from facetex.gan.checkpoints import (
    CheckpointFormatError,
    infer_generator_config,
    load_rosinality,
)
from facetex.gan.stylegan2 import Generator

TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_max": 16}


def tiny_generator(seed: int = 0, **overrides: int) -> Generator:
    """A small random generator whose noise strengths and biases are non-zero (so they matter)."""
    torch.manual_seed(seed)
    generator = Generator(**{**TINY, **overrides})
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith(("noise.weight", "bias")):
                parameter.normal_(0.0, 0.3)
    return generator.eval()


@pytest.fixture(scope="module")
def ffhq_layout() -> dict[str, torch.Tensor]:
    """State dict of a 1024 px config-f generator (random weights), the layout of the FFHQ release."""
    torch.manual_seed(0)
    return Generator(1024).state_dict()


def test_config_f_1024_has_the_official_layout(ffhq_layout: dict[str, torch.Tensor]) -> None:
    shapes = {key: tuple(value.shape) for key, value in ffhq_layout.items()}
    assert shapes["input.input"] == (1, 512, 4, 4)
    assert shapes["style.8.weight"] == (512, 512) and "style.0.weight" not in shapes  # index 0 is PixelNorm
    assert shapes["conv1.conv.weight"] == (1, 512, 512, 3, 3)
    assert shapes["convs.0.conv.blur.kernel"] == (4, 4)
    assert shapes["convs.15.conv.weight"] == (1, 32, 32, 3, 3)  # 16 * channel_multiplier at 1024 px
    assert shapes["convs.15.activate.bias"] == (32,) and shapes["convs.15.noise.weight"] == (1,)
    assert shapes["to_rgbs.7.conv.modulation.weight"] == (32, 512)
    assert shapes["to_rgbs.7.upsample.kernel"] == (4, 4) and shapes["to_rgbs.7.bias"] == (1, 3, 1, 1)
    noise_keys = sorted((k for k in shapes if k.startswith("noises.")), key=lambda k: int(k.split("_")[-1]))
    assert len(noise_keys) == 17 and shapes[noise_keys[0]] == (1, 1, 4, 4) and shapes[noise_keys[-1]] == (1, 1, 1024, 1024)
    parameters = sum(v.numel() for k, v in ffhq_layout.items() if not (k.startswith("noises.") or k.endswith("kernel")))
    assert parameters == 30_370_060  # what rosinality's Generator(1024, 512, 8) holds (checked against its model.py)
    assert infer_generator_config(ffhq_layout) == {
        "size": 1024, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "channel_max": 512, "channel_base": 16384
    }


def test_channel_table_and_latent_count() -> None:
    assert Generator(256, channel_multiplier=1).channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}
    assert infer_generator_config(Generator(256, 64, 2, channel_multiplier=1).state_dict())["channel_multiplier"] == 1
    generator = tiny_generator()
    assert generator.n_latent == 8 and generator.num_layers == 7
    with pytest.raises(ValueError, match="power of two"):
        Generator(48)


def test_synthesis_shape_noise_modes_and_errors() -> None:
    generator = tiny_generator()
    ws = generator.mapping(torch.randn(2, 32)).unsqueeze(1).repeat(1, generator.n_latent, 1)
    with torch.no_grad():
        const = generator.synthesis(ws, noise_mode="const")
        assert const.shape == (2, 3, 32, 32) and torch.isfinite(const).all()
        torch.testing.assert_close(generator.synthesis(ws, noise_mode="const"), const)
        assert not torch.allclose(generator.synthesis(ws, noise_mode="random"), const)
        assert not torch.allclose(generator.synthesis(ws), const)  # new noise by default, as NVlabs' and rosinality's
        zeros = [torch.zeros(1, *shape) for shape in generator.noise_shapes()]
        torch.testing.assert_close(generator.synthesis(ws, noise_mode="none"), generator.synthesis(ws, noise=zeros))
        assert not torch.allclose(generator.synthesis(ws, noise_mode="none"), const)
    with pytest.raises(ValueError, match=r"ws must be \(B, 8, 32\)"):
        generator.synthesis(ws[:, :5], noise_mode="const")
    with pytest.raises(ValueError, match="noise_mode"):
        generator.synthesis(ws, noise_mode="fixed")  # type: ignore[arg-type]


def test_every_w_plus_row_drives_the_image() -> None:
    generator = tiny_generator()
    ws = generator.mean_latent(64).unsqueeze(1).repeat(1, generator.n_latent, 1).requires_grad_(True)
    generator.synthesis(ws, noise_mode="const").square().sum().backward()
    assert (ws.grad.abs().sum(dim=(0, 2)) > 0).all()


def test_forward_mapping_and_truncation() -> None:
    generator = tiny_generator()
    z = torch.randn(3, 32)
    with torch.no_grad():
        w = generator.mapping(z)
        torch.testing.assert_close(generator.mapping(4.0 * z), w)  # PixelNorm makes mapping scale-invariant
        ws = w.unsqueeze(1).repeat(1, generator.n_latent, 1)
        torch.testing.assert_close(generator(z, noise_mode="const"), generator.synthesis(ws, noise_mode="const"))
        torch.testing.assert_close(generator(ws, input_is_latent=True, noise_mode="const"), generator.synthesis(ws, noise_mode="const"))
        w_avg = generator.mean_latent(256, rng=torch.Generator().manual_seed(3))
        assert w_avg.shape == (1, 32)
        torch.testing.assert_close(w_avg, generator.mean_latent(256, rng=torch.Generator().manual_seed(3)))
        centre = generator.synthesis(w_avg.unsqueeze(1).expand(3, generator.n_latent, -1), noise_mode="const")
        torch.testing.assert_close(
            generator(z, truncation=0.0, truncation_latent=w_avg, noise_mode="const"), centre
        )
    with pytest.raises(ValueError, match="truncation_latent"):
        generator(z, truncation=0.5)


def test_double_precision_matches_single() -> None:
    generator = tiny_generator()
    ws = torch.randn(1, generator.n_latent, 32)
    with torch.no_grad():
        single = generator.synthesis(ws, noise_mode="const")
        double = generator.double().synthesis(ws.double(), noise_mode="const")
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, atol=1e-4, rtol=1e-4)


def _save_like_train_py(path: Path, g: Generator, g_ema: Generator) -> None:
    """The dict rosinality's train.py writes, including the optimiser states and argparse args."""
    g_optim = torch.optim.Adam(g.parameters(), lr=0.002, betas=(0.0, 0.99))
    g(torch.randn(1, 32)).mean().backward()
    g_optim.step()
    torch.save(
        {
            "g": g.state_dict(),
            "d": {"convs.0.0.weight": torch.randn(16, 3, 1, 1)},
            "g_ema": g_ema.state_dict(),
            "g_optim": g_optim.state_dict(),
            "d_optim": {"state": {}, "param_groups": []},
            "args": argparse.Namespace(size=32, latent=32, n_mlp=2, channel_multiplier=2),
            "ada_aug_p": 0.0,
        },
        path,
    )


def test_train_py_checkpoint_round_trip(tmp_path: Path) -> None:
    g, g_ema = tiny_generator(seed=1), tiny_generator(seed=2)
    path = tmp_path / "000100.pt"
    _save_like_train_py(path, g, g_ema)
    loaded, latent_avg = load_rosinality(path, size=32)
    assert latent_avg is None and not loaded.training
    ws = torch.randn(2, g_ema.n_latent, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.synthesis(ws, noise_mode="const"), g_ema.synthesis(ws, noise_mode="const"), rtol=0, atol=0)
        loaded_g, _ = load_rosinality(path, key="g")
        torch.testing.assert_close(loaded_g.synthesis(ws, noise_mode="const"), g.synthesis(ws, noise_mode="const"), rtol=0, atol=0)


def test_converted_checkpoint_returns_latent_avg(tmp_path: Path) -> None:
    g_ema = tiny_generator(seed=4, size=64, channel_max=16, channel_base=256)  # 64 px: 8 channels
    latent_avg = g_ema.mean_latent(128)[0]
    torch.save({"g_ema": g_ema.state_dict(), "latent_avg": latent_avg}, tmp_path / "converted.pt")
    loaded, loaded_avg = load_rosinality(tmp_path / "converted.pt")
    assert loaded.size == 64 and loaded.channels == g_ema.channels
    torch.testing.assert_close(loaded_avg, latent_avg[None])
    z = torch.randn(1, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, noise_mode="const"), g_ema(z, noise_mode="const"))


def test_bad_checkpoints_raise_one_clear_error(tmp_path: Path) -> None:
    g_ema = tiny_generator()
    good = tmp_path / "good.pt"
    torch.save({"g_ema": g_ema.state_dict()}, good)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        load_rosinality(truncated)

    torch.save({"state_dict": g_ema.state_dict()}, tmp_path / "other_keys.pt")
    with pytest.raises(CheckpointFormatError, match="no 'g_ema' entry"):
        load_rosinality(tmp_path / "other_keys.pt")

    torch.save({"g_ema": torch.nn.Linear(3, 4).state_dict()}, tmp_path / "linear.pt")
    with pytest.raises(CheckpointFormatError, match="not a rosinality StyleGAN2 generator"):
        load_rosinality(tmp_path / "linear.pt")

    broken = g_ema.state_dict()
    broken["convs.2.conv.modulation.weight"] = torch.zeros(5, 32)
    torch.save({"g_ema": broken}, tmp_path / "wrong_shape.pt")
    with pytest.raises(CheckpointFormatError, match="does not match a StyleGAN2"):
        load_rosinality(tmp_path / "wrong_shape.pt")

    with pytest.raises(CheckpointFormatError, match="32 px generator, but size=1024"):
        load_rosinality(good, size=1024)

    torch.save({"g_ema": g_ema.state_dict(), "latent_avg": torch.zeros(7)}, tmp_path / "bad_avg.pt")
    with pytest.raises(CheckpointFormatError, match="latent_avg"):
        load_rosinality(tmp_path / "bad_avg.pt")

    torch.save({"g_ema": g_ema.state_dict(), "extra": datetime.date(2020, 1, 1)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointFormatError, match="pickles a datetime.date object") as refused:
        load_rosinality(tmp_path / "objects.pt")
    assert "weights_only" not in str(refused.value)  # never the advice to read a file unsafely

    with pytest.raises(FileNotFoundError, match="no StyleGAN2 checkpoint"):
        load_rosinality(tmp_path / "missing.pt")
