"""pSp's and e4e's own checkpoints built from the published module and key names (pixel2style2pixel's
``GradualStyleEncoder``, encoder4editing's ``Encoder4Editing``), with the published forward written out for reference."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tests.facetex.gan.official_restyle import (
    SPATIAL,
    STAGES,
    STYLE_DIM,
    reference_body,
    reference_head,
    restyle_encoder_state,
)

COARSE, MIDDLE = 3, 7  # rows [0, 3) read c3, [3, 7) p2, the rest p1 (coarse_ind, middle_ind)


def psp_encoder_state(n_styles: int, seed: int, style_dim: int = STYLE_DIM) -> dict[str, Tensor]:
    """Random tensors under GradualStyleEncoder's names: the IR-SE body on 3 channels, styles.{j} whose convs halve
    16 / 32 / 64 (here 4 / 8 / 16) to 1x1, latlayer1 (c2 -> top width) and latlayer2 (c1 -> top width)."""
    state = {k: v for k, v in restyle_encoder_state(n_styles, seed, style_dim, input_nc=3).items()
             if not k.startswith("styles.")}
    rng = torch.Generator().manual_seed(seed + 100)

    def rand(*shape: int, scale: float = 0.3) -> Tensor:
        return torch.randn(shape, generator=rng) * scale

    top = STAGES[-1][1]
    for j in range(n_styles):
        spatial = SPATIAL * (1 if j < COARSE else 2 if j < MIDDLE else 4)
        for k in range(int(math.log2(spatial))):
            state[f"styles.{j}.convs.{2 * k}.weight"] = rand(style_dim, top if k == 0 else style_dim, 3, 3)
            state[f"styles.{j}.convs.{2 * k}.bias"] = rand(style_dim, scale=0.1)
        state[f"styles.{j}.linear.weight"] = rand(style_dim, style_dim, scale=1.0)
        state[f"styles.{j}.linear.bias"] = rand(style_dim, scale=0.1)
    state["latlayer1.weight"], state["latlayer1.bias"] = rand(top, STAGES[-2][1], 1, 1), rand(top, scale=0.1)
    state["latlayer2.weight"], state["latlayer2.bias"] = rand(top, STAGES[-3][1], 1, 1), rand(top, scale=0.1)
    return state


def reference_pyramid_encoder(state: dict[str, Tensor], x: Tensor, n_styles: int, progressive: bool) -> Tensor:
    """GradualStyleEncoder.forward (``progressive=False``) / Encoder4Editing.forward at the Inference stage."""
    c1, c2, c3 = reference_body(state, x)[-3:]  # after body units 6, 20 and 23 in IR-SE50

    def upsample_add(top: Tensor, lateral: Tensor) -> Tensor:
        return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral

    p2 = upsample_add(c3, F.conv2d(c2, state["latlayer1.weight"], state["latlayer1.bias"]))
    p1 = upsample_add(p2, F.conv2d(c1, state["latlayer2.weight"], state["latlayer2.bias"]))
    rows = [reference_head(state, j, c3 if j < COARSE else p2 if j < MIDDLE else p1) for j in range(n_styles)]
    if progressive:  # w = w0 repeated; w[:, i] += delta_i
        return torch.stack([rows[0]] + [rows[0] + delta for delta in rows[1:]], dim=1)
    return torch.stack(rows, dim=1)


def save_psp(path: Path, decoder: torch.nn.Module, encoder_type: str, seed: int = 0,
             start_from_latent_avg: bool = True, save_latent_avg: bool | None = None,
             **opts) -> tuple[dict[str, Tensor], Tensor]:
    """torch.save({'state_dict', 'opts', 'latent_avg'}) as pSp's / e4e's coach does (latent_avg repeated per style,
    saved only with ``start_from_latent_avg`` unless ``save_latent_avg`` says otherwise); returns the encoder tensors
    and latent_avg (n_latent, style_dim)."""
    encoder = psp_encoder_state(decoder.n_latent, seed, decoder.style_dim)
    state = {f"encoder.{k}": v for k, v in encoder.items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    latent_avg = torch.randn(decoder.style_dim, generator=torch.Generator().manual_seed(seed + 1))
    latent_avg = latent_avg.repeat(decoder.n_latent, 1)
    checkpoint = {"state_dict": state, "opts": {"encoder_type": encoder_type, "input_nc": 3,
                                                "start_from_latent_avg": start_from_latent_avg, **opts}}
    if start_from_latent_avg if save_latent_avg is None else save_latent_avg:
        checkpoint["latent_avg"] = latent_avg
    torch.save(checkpoint, path)
    return encoder, latent_avg
