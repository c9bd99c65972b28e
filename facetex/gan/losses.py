"""Reconstruction losses of encoder-based GAN inversion (pSp / e4e / ReStyle).

``ReconstructionLoss = l2_weight * MSE + perceptual_weight * perceptual + identity_weight * identity``
on images in [-1, 1]; ReStyle's face defaults are 1.0, 0.8 and 0.1. A term is active only when its
weight is positive and its network is given, and ``active_terms()`` says which are, so a run can
announce what it optimises.

* Perceptual: any callable ``(image, target) -> distance``, scalar or per image (averaged), e.g.
  ``facetex.face3d.metrics.LPIPS`` built from user checkpoints. It receives images in [0, 1]
  (``perceptual_range="zero_one"``, what our ``LPIPS`` takes) or unchanged in [-1, 1]
  (``"minus_one_one"``, the convention of richzhang's ``lpips`` package).
* Identity (pSp's ``IDLoss``): the face is cropped out of the aligned image (rows 35..223, columns
  32..220 of a 256 px FFHQ crop, scaled to the image size), area-pooled to 112x112 and embedded by
  an ArcFace network that takes [-1, 1] (ArcFace's ``(x - 0.5) / 0.5``), so images pass unchanged;
  the loss is ``1 - cos(embedding(image), embedding(target))`` averaged over the batch, the target
  embedding without gradient. :func:`load_identity_network` reads either the IR-SE50 ArcFace state
  dict that pSp/ReStyle use (``model_ir_se50.pth``, TreB1eN's InsightFace_Pytorch layout, rebuilt
  here as :class:`ArcFaceIRSE`) or any TorchScript embedding network.
"""
from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facetex.gan.encoder import IR_SE50_STAGES, Stage, input_layer, ir_se_body
from foundation.checkpoints import CheckpointError, read_state_dict

PerceptualRange = Literal["zero_one", "minus_one_one"]
PSP_FACE_CROP = (35 / 256, 223 / 256, 32 / 256, 220 / 256)
"""(top, bottom, left, right) of the face inside an FFHQ-aligned image, as fractions of its side (pSp)."""
ARCFACE_SIZE = 112


class ArcFaceIRSE(nn.Module):
    """ArcFace IR-SE embedding network (TreB1eN layout): (B, 3, 112, 112) in [-1, 1] -> unit vectors (B, 512).

    ``stages`` defaults to IR-SE50 (``model_ir_se50.pth``); the body ends at 7x7 (four halvings of 112).
    """

    def __init__(self, stages: Sequence[Stage] = IR_SE50_STAGES, embedding_size: int = 512) -> None:
        super().__init__()
        self.input_layer = input_layer(3, stages[0][0])
        self.body = ir_se_body(stages)
        side = ARCFACE_SIZE // 2 ** len(stages)
        channels = stages[-1][1]
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(channels), nn.Dropout(0.6), nn.Flatten(),
            nn.Linear(channels * side * side, embedding_size), nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding ``<name>/code/`` and ``<name>/constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def load_identity_network(path: str | Path, stages: Sequence[Stage] = IR_SE50_STAGES) -> nn.Module:
    """The frozen, eval-mode identity embedding stored at ``path``: TorchScript, or an IR-SE ArcFace state dict.

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` for one that is neither.
    """
    path = Path(path)
    source = ("download pSp's model_ir_se50.pth (TreB1eN InsightFace_Pytorch IR-SE50) or export an ArcFace "
              "network with torch.jit.save")
    if not path.is_file():
        raise FileNotFoundError(f"identity network {str(path)!r} not found; {source} and pass its path")
    if _is_torchscript(path):
        try:
            network: nn.Module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as error:
            raise CheckpointError(f"cannot load the TorchScript identity network {str(path)!r}: {error}") from error
    else:
        state = read_state_dict(path, "ArcFace IR-SE checkpoint", source)
        network = ArcFaceIRSE(stages)
        expected = network.state_dict()
        wrong = sorted(set(expected) ^ set(state)) or [k for k in expected if expected[k].shape != state[k].shape]
        if wrong:
            raise CheckpointError(
                f"{str(path)!r} is not an IR-SE ArcFace state dict of stages {tuple(stages)}: mismatched keys or "
                f"shapes {wrong[:5]} (expected input_layer.*, body.*, output_layer.*, as model_ir_se50.pth); "
                "pass that file or a TorchScript embedding network"
            )
        network.load_state_dict(state)
    return freeze(network)


def freeze(network: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (works for TorchScript modules, which lack ``requires_grad_``)."""
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network.eval()


def face_crop(images: Tensor, crop: tuple[float, float, float, float] = PSP_FACE_CROP) -> Tensor:
    """Cut the face box (fractions top, bottom, left, right) out of (B, C, H, W) and area-pool it to 112x112."""
    height, width = images.shape[-2:]
    top, bottom, left, right = crop
    face = images[..., round(top * height):round(bottom * height), round(left * width):round(right * width)]
    return F.adaptive_avg_pool2d(face, ARCFACE_SIZE)


class IdentityLoss(nn.Module):
    """``1 - cos(e(face(image)), e(face(target)))`` batch mean, for an ArcFace-style embedding ``e`` taking [-1, 1]."""

    def __init__(self, embedding: nn.Module, crop: tuple[float, float, float, float] = PSP_FACE_CROP) -> None:
        super().__init__()
        self.embedding = freeze(embedding)
        self.crop = crop

    def forward(self, image: Tensor, target: Tensor) -> Tensor:
        """image, target: (B, 3, H, W) in [-1, 1] -> scalar."""
        predicted = self.embedding(face_crop(image.float(), self.crop))
        with torch.no_grad():
            reference = self.embedding(face_crop(target.float(), self.crop))
        return (1.0 - F.cosine_similarity(predicted.flatten(1), reference.flatten(1), dim=1)).mean()

    def train(self, mode: bool = True) -> IdentityLoss:
        """The embedding stays in eval mode (its BatchNorm statistics and dropout are fixed)."""
        super().train(mode)
        self.embedding.eval()
        return self


class ReconstructionLoss(nn.Module):
    """Weighted L2 + perceptual + identity distance between reconstructions and targets in [-1, 1].

    Args:
        l2_weight: weight of the pixel MSE.
        perceptual: distance network (see the module docstring), or None for no perceptual term.
        perceptual_weight: its weight.
        perceptual_range: the range it takes: ``"zero_one"`` ([0, 1], our LPIPS) or ``"minus_one_one"``.
        identity: an :class:`IdentityLoss` (or any ``(image, target) -> scalar`` module), or None.
        identity_weight: its weight.
    """

    def __init__(self, l2_weight: float = 1.0, perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
                 perceptual_weight: float = 0.8, perceptual_range: PerceptualRange = "zero_one",
                 identity: nn.Module | None = None, identity_weight: float = 0.1) -> None:
        super().__init__()
        if min(l2_weight, perceptual_weight, identity_weight) < 0:
            raise ValueError(f"loss weights must be >= 0, got l2 {l2_weight}, perceptual {perceptual_weight}, "
                             f"identity {identity_weight}")
        if perceptual_range not in ("zero_one", "minus_one_one"):
            raise ValueError(f"perceptual_range must be 'zero_one' or 'minus_one_one', got {perceptual_range!r}")
        self.l2_weight = l2_weight
        self.perceptual = perceptual
        self.perceptual_weight = perceptual_weight
        self.perceptual_range = perceptual_range
        self.identity = identity
        self.identity_weight = identity_weight

    def active_terms(self) -> dict[str, float]:
        """The terms that contribute, by name, with their weights."""
        candidates = {
            "l2": (self.l2_weight, True),
            "perceptual": (self.perceptual_weight, self.perceptual is not None),
            "identity": (self.identity_weight, self.identity is not None),
        }
        return {name: weight for name, (weight, present) in candidates.items() if present and weight > 0}

    def forward(self, image: Tensor, target: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) pair in [-1, 1] -> each active term (unweighted, scalar) and their weighted sum ``loss``."""
        if image.shape != target.shape:
            raise ValueError(f"reconstruction {tuple(image.shape)} and target {tuple(target.shape)} must match")
        active = self.active_terms()
        terms: dict[str, Tensor] = {}
        if "l2" in active:
            terms["l2"] = F.mse_loss(image.float(), target.float())
        if "perceptual" in active:
            pair = (image, target) if self.perceptual_range == "minus_one_one" else ((image + 1) / 2, (target + 1) / 2)
            terms["perceptual"] = self.perceptual(*pair).float().mean()  # type: ignore[misc]
        if "identity" in active:
            terms["identity"] = self.identity(image, target).float()  # type: ignore[misc]
        if not terms:
            raise ValueError("every loss weight is 0 or its network is missing: nothing to optimise")
        terms["loss"] = sum(active[name] * value for name, value in terms.items())  # type: ignore[assignment]
        return terms

    def train(self, mode: bool = True) -> ReconstructionLoss:
        """The loss networks stay frozen in eval mode while the model around them trains."""
        super().train(mode)
        for network in (self.perceptual, self.identity):
            if isinstance(network, nn.Module):
                network.eval()
        return self
