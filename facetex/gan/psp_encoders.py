"""pSp's and e4e's own encoders: one pass from a photo to W+ through a feature pyramid.

pixel2style2pixel's ``GradualStyleEncoder`` (Richardson et al., CVPR 2021) runs the IR-SE body of
:mod:`facetex.gan.encoder` on the 3-channel image and taps the ends of its last three stages (for the
official 256 px input: ``c1`` 128 channels at 64x64, ``c2`` 256 at 32x32, ``c3`` 512 at 16x16). A
top-down pyramid merges them: ``p2 = up(c3) + latlayer1(c2)``, ``p1 = up(p2) + latlayer2(c1)`` (bilinear
upsampling with aligned corners, 1x1 lateral convolutions to the top width). W+ rows 0-2 (coarse) are
read from ``c3``, rows 3-6 (middle) from ``p2`` and the others (fine) from ``p1``, each by its own
``GradualStyleBlock``. encoder4editing's ``Encoder4Editing`` (Tov et al., SIGGRAPH 2021) is the same
network read differently: row 0's head gives ``w0`` on every row and each other head adds its row's
offset. Both predict codes relative to the average latent: ``W+ = E(x) + latent_avg`` (pSp's
``start_from_latent_avg``). Module names follow the official ones (``input_layer``, ``body.{i}``,
``styles.{j}``, ``latlayer1``, ``latlayer2``), so the ``encoder.*`` tensors of ``psp_ffhq_encode.pt`` /
``e4e_ffhq_encode.pt`` load strictly (``facetex.gan.restyle_checkpoint``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facetex.gan.encoder import (
    IR_SE50_STAGES,
    GradualStyleBlock,
    ReStyleEncoder,
    Stage,
    as_w_plus,
    input_layer,
    ir_se_body,
)
from facetex.gan.latent_generator import LatentGenerator

COARSE_ROWS, MIDDLE_ROWS = 3, 7
"""Rows ``[0, 3)`` read the top map ``c3``, ``[3, 7)`` the middle map ``p2``, the rest the finest map ``p1``."""


def upsample_add(top: Tensor, lateral: Tensor) -> Tensor:
    """``top`` resized (bilinear, aligned corners) to ``lateral``'s (B, C, H, W) size, plus ``lateral``."""
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class FeaturePyramidEncoder(nn.Module):
    """pSp's ``GradualStyleEncoder`` (``progressive=False``) or e4e's ``Encoder4Editing`` (``progressive=True``).

    (B, 3, input_size, input_size) -> W+ offset from the average latent (B, n_latent, style_dim).

    Args:
        n_latent: W+ rows of the generator (18 for 1024 px).
        style_dim: width of w (512 for the released models).
        stages: body stages ``(in, out, units)``, at least three (IR-SE50's by default).
        input_size: side the photo is resized to (256 for the releases); the top map is
            ``input_size / 2^len(stages)``.
        progressive: e4e's reading (``w_j = head_0(c3) + head_j(features_j)`` for j > 0).
    """

    def __init__(self, n_latent: int, style_dim: int, stages: Sequence[Stage] = IR_SE50_STAGES,
                 input_size: int = 256, progressive: bool = False) -> None:
        super().__init__()
        stages = tuple(tuple(stage) for stage in stages)  # type: ignore[misc]
        if len(stages) < 3:
            raise ValueError(f"the feature pyramid taps the last three body stages; got {len(stages)} stage(s)")
        spatial = input_size // 2 ** len(stages)
        if spatial < 2 or spatial * 2 ** len(stages) != input_size:
            raise ValueError(f"input_size {input_size} must be a multiple of 2^{len(stages)} (one halving per stage) "
                             "leaving a top map of side >= 2")
        self.n_latent, self.style_dim, self.input_size, self.progressive = n_latent, style_dim, input_size, progressive
        self.iterations = 1  # one pass, no refinement
        ends = [sum(units for _, _, units in stages[: k + 1]) - 1 for k in range(len(stages))]
        self.taps = tuple(ends[-3:])  # body indices after which c1, c2, c3 are read
        top = stages[-1][1]
        self.input_layer = input_layer(3, stages[0][0])
        self.body = ir_se_body(stages)
        self.styles = nn.ModuleList(
            GradualStyleBlock(top, style_dim, spatial * (1 if j < COARSE_ROWS else 2 if j < MIDDLE_ROWS else 4))
            for j in range(n_latent))
        self.latlayer1 = nn.Conv2d(stages[-2][1], top, 1)
        self.latlayer2 = nn.Conv2d(stages[-3][1], top, 1)

    def encoder_input(self, images: Tensor) -> Tensor:
        """Photos (B, 3, H, W) in [-1, 1] -> (B, 3, input_size, input_size) (antialiased bilinear resize)."""
        size = (self.input_size, self.input_size)
        if images.shape[-2:] == size:
            return images
        return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, input_size, input_size) -> W+ offset (B, n_latent, style_dim)."""
        x = self.input_layer(x)
        tapped = []
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self.taps:
                tapped.append(x)
        c1, c2, c3 = tapped
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        rows = torch.stack([head(c3 if j < COARSE_ROWS else p2 if j < MIDDLE_ROWS else p1)
                            for j, head in enumerate(self.styles)], dim=1)
        if self.progressive:  # e4e: w0 on every row, plus the other heads' offsets
            return rows[:, :1] + torch.cat([torch.zeros_like(rows[:, :1]), rows[:, 1:]], dim=1)
        return rows

    @torch.no_grad()
    def invert(self, generator: LatentGenerator, images: Tensor, steps: int = 1, *, latent_avg: Tensor) -> list[Tensor]:
        """``[E(images) + latent_avg]``, one W+ code (B, n_latent, style_dim), as :meth:`ReStyleEncoder.invert` lists them.

        ``images`` (B, 3, H, W) in [-1, 1]; ``latent_avg`` one w or one W+ (see :func:`as_w_plus`). pSp and e4e
        encode in one pass, so ``steps`` must be 1.
        """
        if steps != 1:
            raise ValueError(f"pSp / e4e encoders invert in one pass, not {steps} refinement steps; set the encoder "
                             "steps (multiview.encoder_steps) to 1")
        if (generator.n_latent, generator.style_dim) != (self.n_latent, self.style_dim):
            raise ValueError(f"the encoder predicts W+ of ({self.n_latent}, {self.style_dim}) but the generator takes "
                             f"({generator.n_latent}, {generator.style_dim}); use the generator it was trained with")
        start = as_w_plus(latent_avg, self.n_latent, self.style_dim).to(images)
        return [self(self.encoder_input(images)) + start]


WPlusEncoder = ReStyleEncoder | FeaturePyramidEncoder
"""An encoder the pipeline inverts photos with: ReStyle's iterative one or pSp's / e4e's one-pass one."""
