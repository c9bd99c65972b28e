"""Official ReStyle checkpoints (yuval-alaluf/restyle-encoder, yuval-alaluf/stylegan3-editing) as our encoder and generator.

Such a file is ``torch.save({'state_dict': net.state_dict(), 'latent_avg', 'opts'})`` of ReStyle's pSp or e4e
network: ``encoder.*`` is a ``BackboneEncoder`` (pSp heads) or ``ProgressiveBackboneEncoder`` (e4e heads) on
an IR-SE body, ``decoder.*`` the generator it inverts into (rosinality's StyleGAN2 layout for the StyleGAN2
releases, NVlabs' StyleGAN3 layout for stylegan3-editing's), ``latent_avg`` the start code ``w_0`` and
``opts`` the training options (a dict; stylegan3-editing's holds ``pathlib`` paths), whose
``n_iters_per_batch`` is the number of refinement steps the release was trained for.

Everything is read with ``weights_only`` (only tensors, plain containers, ``argparse.Namespace`` and
``pathlib`` paths). Encoder and decoder load strictly; the encoder's body stages, input size and heads
are read off the tensors' names and shapes. pSp's and e4e's own checkpoints (``psp_ffhq_encode.pt``,
``e4e_ffhq_encode.pt``) are saved the same way but hold a one-pass feature-pyramid encoder
(``GradualStyleEncoder`` / ``Encoder4Editing``, :mod:`facetex.gan.psp_encoders`), loaded strictly too, with one
iteration; their coaches save ``latent_avg`` only when trained with ``--start_from_latent_avg``, and their
inference adds it only then (a file without it inverts to ``E(x)`` alone, as theirs). pSp's other heads (``BackboneEncoderUsingLastLayerIntoW(Plus)``) are refused with a message naming
them; their decoder still loads through :func:`facetex.gan.generator_file.load_generator`.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from facetex.gan import stylegan2, stylegan3
from facetex.gan.checkpoints import infer_generator_config
from facetex.gan.encoder import ReStyleEncoder, Stage, as_w_plus
from facetex.gan.nvlabs_api import NVlabsStyleGAN2
from facetex.gan.psp_encoders import FeaturePyramidEncoder, WPlusEncoder
from foundation.checkpoints import OPTION_CLASSES, CheckpointError, MissingFileError, load_checkpoint

RESTYLE_ENCODERS = {"BackboneEncoder": False, "ProgressiveBackboneEncoder": True}  # name -> progressive heads
PYRAMID_ENCODERS = {"GradualStyleEncoder": False, "Encoder4Editing": True}  # pSp's / e4e's own, one pass
RESTYLE_INFERENCE_ITERATIONS = 5  # restyle-encoder's test_options default, for an ``opts`` without the count
Decoder = stylegan2.Generator | stylegan3.Generator


class ReStyleCheckpointError(CheckpointError):
    """A pSp / e4e / ReStyle checkpoint this project cannot use, or one that does not fit the pipeline."""


@dataclass(frozen=True)
class ReStyleCheckpoint:
    """An official ReStyle / pSp / e4e release: the eval-mode encoder and decoder, ``latent_avg`` (1, n_latent, D)
    and the number of refinement steps (ReStyle's ``opts.n_iters_per_batch``; 1 for pSp's and e4e's own).

    ``latent_avg`` is the code the encoder's output is added to, as the official inference adds it: zeros for a
    pSp / e4e trained without ``--start_from_latent_avg`` (see :func:`_start_code`)."""

    encoder: WPlusEncoder
    decoder: Decoder
    latent_avg: Tensor
    iterations: int
    encoder_type: str


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only``, admitting the option objects of pSp/e4e/ReStyle files."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {str(path)!r} not found; download e.g. restyle_e4e_ffhq.pt from "
                               "yuval-alaluf/stylegan3-editing or restyle-encoder and pass its path")
    return load_checkpoint(path, ReStyleCheckpointError, "PyTorch checkpoint", allow=OPTION_CLASSES)


def is_encoder_checkpoint(checkpoint: Any) -> bool:
    """True for a pSp / e4e / ReStyle file: ``state_dict`` with ``encoder.*`` and ``decoder.*`` entries."""
    state = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        return False
    keys = [str(key).removeprefix("module.") for key in state]
    return any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys)


def _entries(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Entries under ``prefix`` (after any DataParallel ``module.``), prefix removed."""
    stripped = {str(key).removeprefix("module."): value for key, value in state.items()}
    return {key[len(prefix):]: value for key, value in stripped.items() if key.startswith(prefix)}


def _options(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    opts = checkpoint.get("opts") or {}
    return dict(vars(opts) if isinstance(opts, argparse.Namespace) else opts)


# --------------------------------------------------------------------------- decoder


def _stylegan3_layer_channels(channel_base: int, channel_max: int, num_layers: int, img_resolution: int) -> list[int]:
    """NVlabs' channel schedule ``rint(min(channel_base / 2 / cutoff, channel_max))`` of every layer but ToRGB."""
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - 2), 1)  # num_critical = 2
    cutoffs = 2 * (img_resolution / 2 / 2) ** exponents  # first_cutoff = 2, last = img_resolution / 2
    return [int(c) for c in np.rint(np.minimum(channel_base / 2 / cutoffs, channel_max))[:-1]]


def stylegan3_kwargs_from_state(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """NVlabs StyleGAN3 ``Generator`` kwargs of a state dict (layer names ``synthesis.L{i}_{size}_{channels}``).

    Config R has 1x1 convs (``conv_kernel=1``, radial filters), T 3x3; ``channel_max`` is the widest layer and
    ``channel_base`` the power of two whose schedule gives every layer's width.
    """
    layers = sorted({(int(m[1]), int(m[2]), int(m[3])) for key in state
                     if (m := re.match(r"synthesis\.L(\d+)_(\d+)_(\d+)\.", key))})
    mapping = [key for key in state if re.fullmatch(r"mapping\.fc\d+\.weight", key)]
    if len(layers) < 4 or not mapping or "mapping.fc0.weight" not in state:
        raise ReStyleCheckpointError("the decoder has neither rosinality StyleGAN2 keys (style.*, convs.*) nor "
                                     "NVlabs StyleGAN3 ones (mapping.fc*, synthesis.L*_*_*): unknown generator")
    num_layers, img_resolution, img_channels = len(layers) - 1, layers[-1][1], layers[-1][2]
    w_dim = int(state["mapping.fc0.weight"].shape[0])
    kernel = int(state[f"synthesis.L0_{layers[0][1]}_{layers[0][2]}.weight"].shape[-1])
    widths = [channels for _, _, channels in layers[:-1]]
    kwargs: dict[str, Any] = {"z_dim": int(state["mapping.fc0.weight"].shape[1]), "c_dim": 0, "w_dim": w_dim,
                              "img_resolution": img_resolution, "img_channels": img_channels,
                              "mapping_kwargs": {"num_layers": len(mapping)}, "num_layers": num_layers,
                              "channel_max": max(widths), "conv_kernel": kernel, "use_radial_filters": kernel == 1}
    for base in (2 ** e for e in range(4, 21)):
        if _stylegan3_layer_channels(base, max(widths), num_layers, img_resolution) == widths:
            return {**kwargs, "channel_base": base}
    raise ReStyleCheckpointError(f"the StyleGAN3 decoder's layer widths {widths} follow no channel_base of NVlabs' "
                                 "schedule; is it a StyleGAN3 generator?")


def build_decoder(state: Mapping[str, Tensor], where: str) -> Decoder:
    """Our generator with ``state`` loaded strictly, in eval mode: rosinality StyleGAN2 or NVlabs StyleGAN3.

    stylegan3-editing saves the batched identity ``synthesis.input.transform`` it sets before each call and
    drops it when loading (``remove=[...]``); it is dropped here too (the aligned, identity frame).
    """
    if "style.1.weight" in state:
        generator: Decoder = NVlabsStyleGAN2(**infer_generator_config(state))
        state = dict(state)
    else:
        kwargs = stylegan3_kwargs_from_state(state)
        generator = stylegan3.Generator(**kwargs)
        state = {**state, "synthesis.input.transform": torch.eye(3)}
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ReStyleCheckpointError(f"the decoder in {where} does not load into the generator its tensors describe: "
                                     f"{error}") from error
    return generator.eval().requires_grad_(False)


# --------------------------------------------------------------------------- encoder


def encoder_stages(state: Mapping[str, Tensor], where: str) -> tuple[list[Stage], int]:
    """Body stages ``(in, out, units)`` and input size of a ReStyle encoder state.

    A stage starts at unit 0 and wherever the width changes (IR-SE 50/100/152: 64-128-256-512); each stage
    halves the size and the heads' stride-2 convs take the final map to 1x1, so the input side is
    ``2^(stages + head convs)`` (256 for the official 16x16 map).
    """
    units = sorted({int(m[1]) for key in state if (m := re.match(r"body\.(\d+)\.res_layer\.1\.weight", key))})
    if not units or units != list(range(len(units))) or "input_layer.0.weight" not in state:
        raise ReStyleCheckpointError(f"the encoder in {where} has no IR-SE body (input_layer.*, body.{{i}}.res_layer.*)")
    stages: list[list[int]] = []
    for unit in units:
        depth, in_channels = (int(n) for n in state[f"body.{unit}.res_layer.1.weight"].shape[:2])
        if not stages or depth != in_channels:
            stages.append([in_channels, depth, 0])
        stages[-1][2] += 1
    head_convs = sum(1 for key in state if re.fullmatch(r"styles\.0\.convs\.\d+\.weight", key))
    return [tuple(stage) for stage in stages], 2 ** (len(stages) + head_convs)  # type: ignore[misc]


def build_encoder(state: Mapping[str, Tensor], encoder_type: str, where: str) -> WPlusEncoder:
    """Our encoder with the official ``encoder.*`` tensors loaded strictly, in eval mode.

    ReStyle's ``BackboneEncoder`` / ``ProgressiveBackboneEncoder`` give a :class:`ReStyleEncoder` (6 input channels),
    pSp's ``GradualStyleEncoder`` and e4e's ``Encoder4Editing`` a :class:`FeaturePyramidEncoder` (3 channels).
    """
    if encoder_type not in RESTYLE_ENCODERS and encoder_type not in PYRAMID_ENCODERS:
        raise ReStyleCheckpointError(
            f"{where} holds a {encoder_type or 'nameless'} encoder (opts['encoder_type']); supported are ReStyle's "
            f"{' / '.join(RESTYLE_ENCODERS)} and pSp's / e4e's {' / '.join(PYRAMID_ENCODERS)} on an IR-SE body: use "
            "e.g. psp_ffhq_encode.pt, e4e_ffhq_encode.pt or restyle_e4e_ffhq.pt (its decoder alone loads as a generator)")
    pyramid = encoder_type in PYRAMID_ENCODERS
    channels = 3 if pyramid else 6
    stages, input_size = encoder_stages(state, where)
    if int(state["input_layer.0.weight"].shape[1]) != channels:
        raise ReStyleCheckpointError(
            f"the {encoder_type} in {where} reads {state['input_layer.0.weight'].shape[1]} channels, not "
            f"{'a photo' if pyramid else 'ReStyle'}'s {channels}; only encoders of photos (psp_ffhq_encode.pt, not "
            "sketch or segmentation models) invert them")
    n_latent = sum(1 for key in state if re.fullmatch(r"styles\.\d+\.linear\.weight", key))
    style_dim = int(state["styles.0.linear.weight"].shape[0])
    encoder: WPlusEncoder
    if pyramid:
        encoder = FeaturePyramidEncoder(n_latent, style_dim, stages, input_size, PYRAMID_ENCODERS[encoder_type])
    else:
        encoder = ReStyleEncoder(n_latent, style_dim, input_size=input_size, stages=stages,
                                 progressive=RESTYLE_ENCODERS[encoder_type], reconstruction_resize="area")
    try:
        encoder.load_state_dict(dict(state), strict=True)
    except RuntimeError as error:
        raise ReStyleCheckpointError(f"the encoder in {where} does not load into {encoder_type}: {error}") from error
    return encoder.eval().requires_grad_(False)


# --------------------------------------------------------------------------- whole files


def _latent_avg(checkpoint: Mapping[str, Any], decoder: Decoder, where: str) -> Tensor | None:
    """The file's ``latent_avg`` as W+ (1, n_latent, D), or None when it saved none."""
    latent_avg = checkpoint.get("latent_avg")
    if latent_avg is None:
        return None
    if not isinstance(latent_avg, Tensor):
        raise ReStyleCheckpointError(f"{where}: 'latent_avg' is a {type(latent_avg).__name__}, not a tensor")
    try:
        return as_w_plus(latent_avg.detach().float(), decoder.n_latent, decoder.style_dim).clone()
    except ValueError as error:
        raise ReStyleCheckpointError(f"{where}: {error}") from error


def _start_code(checkpoint: Mapping[str, Any], decoder: Decoder, encoder_type: str, where: str) -> Tensor:
    """The code the encoder's output is added to, W+ (1, n_latent, D), as the official inference code adds it.

    ReStyle starts every inversion from ``latent_avg`` (its coach always saves it). pSp and e4e add ``latent_avg``
    only when trained with ``--start_from_latent_avg`` (their coaches save it only then): without it the code is
    ``E(x)`` alone (zeros here). With the option but no saved ``latent_avg``, e4e's ``pSp.__load_latent_avg``
    averages 10,000 mapped z (``decoder.mean_latent(10000)``, seeded here so that the result repeats), while pSp's
    own code has nothing to add and fails, so such a pSp file is refused.
    """
    latent_avg = _latent_avg(checkpoint, decoder, where)
    if encoder_type in PYRAMID_ENCODERS:
        if not _options(checkpoint).get("start_from_latent_avg", latent_avg is not None):
            return torch.zeros(1, decoder.n_latent, decoder.style_dim)
        if latent_avg is None and encoder_type == "Encoder4Editing":
            mean = decoder.mean_latent(10000, torch.Generator().manual_seed(0))  # type: ignore[call-arg]
            return as_w_plus(mean.detach().float(), decoder.n_latent, decoder.style_dim).clone()
    if latent_avg is None:
        raise ReStyleCheckpointError(
            f"{where} has no 'latent_avg' tensor, the code its {encoder_type} adds its output to"
            + (" (its opts say start_from_latent_avg, and pSp's coach then saves it)" if encoder_type in PYRAMID_ENCODERS
               else " (ReStyle starts from latent_avg's image, and its coach always saves it)")
            + "; the file is incomplete: use the released checkpoint as downloaded")
    return latent_avg


def _require_encoder_checkpoint(checkpoint: Any, where: str) -> None:
    if not is_encoder_checkpoint(checkpoint):
        found = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ReStyleCheckpointError(f"{where} is not a pSp / e4e / ReStyle checkpoint (expected 'state_dict' with "
                                     f"encoder.* and decoder.* entries, found {found})")


def decoder_from_checkpoint(checkpoint: Any, path: str | Path) -> tuple[Decoder, Tensor | None]:
    """The decoder of a loaded pSp / e4e / ReStyle checkpoint and its ``latent_avg`` (1, style_dim) (row 0), or None
    for a file that saved none (a pSp / e4e trained without ``--start_from_latent_avg``)."""
    where = repr(str(path))
    _require_encoder_checkpoint(checkpoint, where)
    decoder = build_decoder(_entries(checkpoint["state_dict"], "decoder."), where)
    latent_avg = _latent_avg(checkpoint, decoder, where)
    if latent_avg is None:
        return decoder, None
    if isinstance(decoder, NVlabsStyleGAN2):
        decoder.set_w_avg(latent_avg[:, 0])
    return decoder, latent_avg[:, 0]


def load_restyle_checkpoint(path: str | Path) -> ReStyleCheckpoint:
    """Encoder, decoder, ``latent_avg`` and iteration count of an official ReStyle (pSp or e4e) checkpoint."""
    return restyle_from_checkpoint(read_checkpoint(path), path)


def restyle_from_checkpoint(checkpoint: Any, path: str | Path) -> ReStyleCheckpoint:
    """:func:`load_restyle_checkpoint` on an already loaded checkpoint (``path`` names it in messages)."""
    where = repr(str(path))
    _require_encoder_checkpoint(checkpoint, where)
    state, opts = checkpoint["state_dict"], _options(checkpoint)
    decoder = build_decoder(_entries(state, "decoder."), where)
    encoder = build_encoder(_entries(state, "encoder."), str(opts.get("encoder_type", "")), where)
    if (encoder.n_latent, encoder.style_dim) != (decoder.n_latent, decoder.style_dim):
        raise ReStyleCheckpointError(f"{where}: the encoder predicts ({encoder.n_latent}, {encoder.style_dim}) W+ codes "
                                     f"but its decoder takes ({decoder.n_latent}, {decoder.style_dim})")
    start = _start_code(checkpoint, decoder, str(opts.get("encoder_type", "")), where)
    iterations = (int(opts.get("n_iters_per_batch") or RESTYLE_INFERENCE_ITERATIONS)
                  if isinstance(encoder, ReStyleEncoder) else 1)
    encoder.iterations = iterations
    return ReStyleCheckpoint(encoder, decoder, start, iterations, str(opts["encoder_type"]))


def load_restyle_encoder(path: str | Path, generator: nn.Module) -> tuple[WPlusEncoder, Tensor]:
    """The encoder and ``latent_avg`` of an official ReStyle / pSp / e4e file, checked against the pipeline's ``generator``.

    The file's decoder must be ``generator`` (same tensors), since the encoder only inverts into the generator
    it was trained with; pass the same file as the generator (``load_generator`` reads its decoder).
    """
    return restyle_encoder_from_checkpoint(read_checkpoint(path), path, generator)


def restyle_encoder_from_checkpoint(checkpoint: Any, path: str | Path,
                                    generator: nn.Module) -> tuple[WPlusEncoder, Tensor]:
    """:func:`load_restyle_encoder` on an already loaded checkpoint (``path`` names it in messages)."""
    restyle = restyle_from_checkpoint(checkpoint, path)
    mine, theirs = generator.state_dict(), restyle.decoder.state_dict()
    differs = sorted(key for key in theirs if key != "synthesis.input.transform" and (
        key not in mine or mine[key].shape != theirs[key].shape
        or not torch.equal(mine[key].detach().cpu().float(), theirs[key].float())))
    if differs or mine.keys() != theirs.keys():
        raise ReStyleCheckpointError(
            f"the encoder in {str(path)!r} was trained against the generator stored in the same file, which "
            f"is not the pipeline's (differing tensors, e.g. {differs[:3]}); use that file as the generator too")
    return restyle.encoder, restyle.latent_avg
