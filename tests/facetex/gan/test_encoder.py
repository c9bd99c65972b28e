"""The ReStyle encoder: shapes, the official IR-SE50 layout, and the refinement recursion on StyleGAN2/3."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from facetex.gan.encoder import ReStyleEncoder, as_w_plus
from facetex.gan.stylegan2 import Generator as StyleGAN2
from facetex.gan.stylegan3 import Generator as StyleGAN3
from facetex.gan.stylegan3 import stylegan3_config

TINY_STAGES = ((8, 8, 1), (8, 16, 1), (16, 16, 1))


def tiny_stylegan2() -> StyleGAN2:
    torch.manual_seed(0)
    return StyleGAN2(16, style_dim=16, n_mlp=2, channel_max=8).eval().requires_grad_(False)


def tiny_stylegan3() -> StyleGAN3:
    torch.manual_seed(0)
    kwargs = {**stylegan3_config("t"), "channel_base": 128, "channel_max": 64, "num_layers": 4}
    return StyleGAN3(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, **kwargs).eval().requires_grad_(False)


def constant_residual_encoder(n_latent: int, style_dim: int, residual: Tensor) -> ReStyleEncoder:
    """An encoder whose heads ignore their input and output ``residual`` (n_latent, style_dim)."""
    encoder = ReStyleEncoder(n_latent, style_dim, input_size=16, stages=TINY_STAGES).eval()
    with torch.no_grad():
        for head, row in zip(encoder.styles, residual):
            head.linear.weight.zero_()
            head.linear.bias.copy_(row)
    return encoder


def test_forward_maps_six_channels_to_a_w_plus_residual() -> None:
    encoder = ReStyleEncoder(n_latent=6, style_dim=16, input_size=32, stages=TINY_STAGES)
    residual = encoder(torch.randn(3, 6, 32, 32))
    assert residual.shape == (3, 6, 16)
    assert len(encoder.styles[0].convs) == 2 * 2  # 32 px / 2^3 stages = 4x4 map: two stride-2 convs per head
    images, reconstruction = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 16, 16)
    assert encoder.encoder_input(images, reconstruction).shape == (2, 6, 32, 32)


def test_ir_se50_backbone_has_restyles_module_names_and_shapes() -> None:
    encoder = ReStyleEncoder(n_latent=2, style_dim=512, backbone="ir_se50")
    state = encoder.state_dict()
    assert encoder.input_size == 256 and len(encoder.body) == 3 + 4 + 14 + 3
    assert state["input_layer.0.weight"].shape == (64, 6, 3, 3)
    assert state["input_layer.2.weight"].shape == (64,)  # PReLU
    assert state["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)  # first unit of stage 2 projects
    assert state["body.23.res_layer.5.fc1.weight"].shape == (32, 512, 1, 1)  # SE with reduction 16
    assert state["styles.1.convs.6.weight"].shape == (512, 512, 3, 3)  # 16x16 map: four stride-2 convs
    assert state["styles.1.linear.weight"].shape == (512, 512)
    assert sum(p.numel() for p in encoder.body.parameters()) > 20_000_000


def test_as_w_plus_accepts_one_w_or_one_per_layer_and_rejects_other_widths() -> None:
    w = torch.arange(4.0)
    assert torch.equal(as_w_plus(w, 3, 4), w.expand(1, 3, 4))
    rows = torch.randn(3, 4)
    assert torch.equal(as_w_plus(rows[None], 3, 4), rows[None])
    with pytest.raises(ValueError, match="width 4"):
        as_w_plus(torch.randn(5), 3, 4)
    with pytest.raises(ValueError, match="width 4"):
        as_w_plus(torch.randn(2, 4), 3, 4)


@pytest.mark.parametrize("make_generator", [tiny_stylegan2, tiny_stylegan3], ids=["stylegan2", "stylegan3"])
def test_invert_adds_the_residual_at_every_step_from_the_average_latent(make_generator) -> None:
    generator = make_generator()
    residual = 0.1 * torch.randn(generator.n_latent, generator.style_dim, generator=torch.Generator().manual_seed(1))
    encoder = constant_residual_encoder(generator.n_latent, generator.style_dim, residual)
    latent_avg = generator.mean_latent(500, rng=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    ws = encoder.invert(generator, images, steps=3, latent_avg=latent_avg)
    assert len(ws) == 3
    for step, w in enumerate(ws, start=1):
        torch.testing.assert_close(w, (latent_avg + step * residual).expand(2, -1, -1))


def test_each_step_reads_the_target_beside_the_previous_reconstruction() -> None:
    generator = tiny_stylegan2()
    encoder = ReStyleEncoder(generator.n_latent, generator.style_dim, input_size=16, stages=TINY_STAGES).eval()
    inputs: list[Tensor] = []
    encoder.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    latent_avg = generator.mean_latent(500, rng=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    steps = list(encoder.refinement_steps(generator, images, 3, latent_avg))
    with torch.no_grad():
        average_image = generator.synthesis(as_w_plus(latent_avg, generator.n_latent, generator.style_dim), noise_mode="const")
    torch.testing.assert_close(inputs[0], torch.cat([images, average_image.expand(2, -1, -1, -1)], dim=1))
    for previous, given in zip(steps, inputs[1:]):
        torch.testing.assert_close(given, torch.cat([images, previous[1].detach()], dim=1))
    for w, image in steps:
        torch.testing.assert_close(image, generator.synthesis(w, noise_mode="const"))


def test_gradients_reach_the_encoder_only_through_the_current_step() -> None:
    generator = tiny_stylegan2()
    encoder = ReStyleEncoder(generator.n_latent, generator.style_dim, input_size=16, stages=TINY_STAGES)
    latent_avg = generator.mean_latent(500, rng=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    steps = list(encoder.refinement_steps(generator, images, 2, latent_avg))
    first_w = steps[0][0]
    gradient = torch.autograd.grad(F.mse_loss(steps[1][1], images), first_w, allow_unused=True)[0]
    assert gradient is None  # w_1 enters step 2 detached (ReStyle trains each iteration on its own)
    assert all(p.grad is None for p in generator.parameters())


def test_mismatched_generator_and_bad_settings_are_refused() -> None:
    generator = tiny_stylegan2()
    encoder = ReStyleEncoder(generator.n_latent + 1, generator.style_dim, input_size=16, stages=TINY_STAGES)
    with pytest.raises(ValueError, match="generator's sizes"):
        encoder.invert(generator, torch.zeros(1, 3, 16, 16), latent_avg=torch.zeros(1, generator.style_dim))
    with pytest.raises(ValueError, match="at least one refinement"):
        next(encoder.refinement_steps(generator, torch.zeros(1, 3, 16, 16), 0, torch.zeros(1, 16)))
    with pytest.raises(ValueError, match="divisible"):
        ReStyleEncoder(4, 16, input_size=20, stages=TINY_STAGES)
    with pytest.raises(ValueError, match="power-of-two side >= 2"):
        ReStyleEncoder(4, 16, input_size=8, stages=TINY_STAGES)
    with pytest.raises(ValueError, match="backbone"):
        ReStyleEncoder(4, 16, backbone="resnet34")  # type: ignore[arg-type]
