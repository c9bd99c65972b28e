"""Reconstruction loss terms: known values, the ranges handed to the networks, and checkpoint loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from facetex.gan.losses import (
    ArcFaceIRSE,
    IdentityLoss,
    ReconstructionLoss,
    face_crop,
    load_identity_network,
)
from foundation.checkpoints import CheckpointError

TINY_ARCFACE = ((8, 8, 1), (8, 16, 1), (16, 16, 1), (16, 16, 1))


class RangeRecorder(nn.Module):
    """A stand-in perceptual network: records the value range it receives and returns ``value`` per image."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.seen: list[tuple[float, float]] = []

    def forward(self, image: Tensor, target: Tensor) -> Tensor:
        both = torch.cat([image, target])
        self.seen.append((both.min().item(), both.max().item()))
        return torch.full((image.shape[0],), self.value) + 0 * image.sum()


class ChannelMeans(nn.Module):
    """A stand-in identity embedding: the mean colour of the face crop; records the input shape and range."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach())
        return x.mean(dim=(2, 3))


def plain_colour(rgb: tuple[float, float, float], size: int = 64) -> Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(2, 3, size, size).clone()


def test_l2_alone_is_the_weighted_mse() -> None:
    loss = ReconstructionLoss(l2_weight=2.0)
    terms = loss(torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5))
    assert terms["l2"].item() == pytest.approx(0.25)
    assert terms["loss"].item() == pytest.approx(0.5)
    assert set(terms) == {"l2", "loss"}


@pytest.mark.parametrize(("perceptual_range", "expected_range"), [("zero_one", (0.0, 1.0)), ("minus_one_one", (-1.0, 1.0))])
def test_perceptual_network_gets_its_range_and_its_weight(perceptual_range, expected_range) -> None:
    recorder = RangeRecorder(value=0.3)
    loss = ReconstructionLoss(l2_weight=1.0, perceptual=recorder, perceptual_weight=0.5, perceptual_range=perceptual_range)
    image, target = -torch.ones(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    terms = loss(image, target)
    assert recorder.seen == [expected_range]
    assert terms["perceptual"].item() == pytest.approx(0.3)
    assert terms["loss"].item() == pytest.approx(4.0 + 0.5 * 0.3)


def test_identity_term_compares_embeddings_of_the_112px_face_crop() -> None:
    embedding = ChannelMeans()
    loss = ReconstructionLoss(l2_weight=0.0, identity=IdentityLoss(embedding), identity_weight=0.1)
    red, green = plain_colour((1.0, -1.0, -1.0)), plain_colour((-1.0, 1.0, -1.0))
    terms = loss(red.requires_grad_(True), green)
    assert all(x.shape == (2, 3, 112, 112) for x in embedding.inputs)
    assert embedding.inputs[0].max().item() == 1.0 and embedding.inputs[0].min().item() == -1.0  # [-1, 1] unchanged
    # cos((1, -1, -1), (-1, 1, -1)) = -1/3, so 1 - cos = 4/3
    assert terms["identity"].item() == pytest.approx(4 / 3)
    assert terms["loss"].item() == pytest.approx(0.1 * 4 / 3)
    terms["loss"].backward()
    assert red.grad is not None and red.grad.abs().sum() > 0
    assert loss(green, green)["identity"].item() == pytest.approx(0.0, abs=1e-6)


def test_face_crop_takes_psps_box_scaled_to_the_image() -> None:
    image = torch.zeros(1, 1, 256, 256)
    image[..., 35:223, 32:220] = 1.0
    torch.testing.assert_close(face_crop(image), torch.ones(1, 1, 112, 112))
    small = torch.zeros(1, 1, 128, 128)
    small[..., 18:112, 16:110] = 1.0  # the same box at half the size (rounded)
    torch.testing.assert_close(face_crop(small), torch.ones(1, 1, 112, 112))


def test_active_terms_follow_weights_and_networks() -> None:
    recorder, identity = RangeRecorder(0.0), IdentityLoss(ChannelMeans())
    assert ReconstructionLoss().active_terms() == {"l2": 1.0}
    assert ReconstructionLoss(perceptual=recorder).active_terms() == {"l2": 1.0, "perceptual": 0.8}
    assert ReconstructionLoss(perceptual=recorder, perceptual_weight=0.0, identity=identity).active_terms() == {
        "l2": 1.0, "identity": 0.1}
    nothing = ReconstructionLoss(l2_weight=0.0)
    assert nothing.active_terms() == {}
    with pytest.raises(ValueError, match="nothing to optimise"):
        nothing(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=">= 0"):
        ReconstructionLoss(identity_weight=-1.0)


def test_loss_networks_stay_in_eval_mode_when_the_loss_trains() -> None:
    identity = IdentityLoss(ArcFaceIRSE(TINY_ARCFACE))
    loss = ReconstructionLoss(identity=identity).train()
    assert loss.training and not identity.embedding.training
    assert not any(p.requires_grad for p in identity.parameters())


def test_identity_network_loads_an_ir_se_state_dict_and_torchscript(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = ArcFaceIRSE(TINY_ARCFACE).eval()
    faces = torch.rand(2, 3, 112, 112) * 2 - 1
    expected = network(faces)
    torch.testing.assert_close(expected.norm(dim=1), torch.ones(2))
    torch.save(network.state_dict(), tmp_path / "arcface.pth")
    torch.testing.assert_close(load_identity_network(tmp_path / "arcface.pth", TINY_ARCFACE)(faces), expected)
    torch.jit.save(torch.jit.trace(network, faces), str(tmp_path / "arcface.pt"))
    torch.testing.assert_close(load_identity_network(tmp_path / "arcface.pt")(faces), expected)


def test_bad_identity_checkpoints_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model_ir_se50.pth"):
        load_identity_network(tmp_path / "absent.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "iresnet.pth")
    with pytest.raises(CheckpointError, match="not an IR-SE ArcFace state dict"):
        load_identity_network(tmp_path / "iresnet.pth", TINY_ARCFACE)
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="it is a text file"):
        load_identity_network(tmp_path / "broken.pth")
