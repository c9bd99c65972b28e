"""Load rosinality/stylegan2-pytorch ``.pt`` checkpoints into :class:`facetex.gan.stylegan2.Generator`.

Such a file is a ``torch.save``d dict: ``{"g_ema", "latent_avg"}`` from ``convert_weight.py`` (the
converted official FFHQ models), or ``{"g", "d", "g_ema", "g_optim", "d_optim", "args",
"ada_aug_p"}`` from ``train.py`` (no ``latent_avg``). The generator's size, style width, mapping
depth and channel layout are read off the state dict's keys and shapes, so no config file is needed;
the weights are then loaded strictly; keys saved through ``DataParallel`` (``module.`` prefix) load too.
(NVlabs pickles are read by ``facetex.gan.nvlabs_pickle``, pSp/e4e/ReStyle files by
``facetex.gan.restyle_checkpoint``; :func:`facetex.gan.generator_file.load_generator` picks by content.)
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from facetex.gan.nvlabs_api import NVlabsStyleGAN2
from facetex.gan.stylegan2 import Generator
from foundation.checkpoints import OPTION_CLASSES, MissingFileError, load_checkpoint
from foundation.errors import InputError

ROSINALITY_CHANNEL_BASE = 16384  # channels(res) = min(channel_max, 16384 * channel_multiplier / res)


class CheckpointFormatError(InputError, ValueError):
    """A file is not a readable rosinality StyleGAN2 checkpoint (truncated, other layout, other net)."""


def read_rosinality(path: Path) -> dict[str, Any]:
    """The checkpoint dict of a rosinality file, read by the project's one reader (train.py's ``args`` admitted)."""
    if not path.is_file():
        raise MissingFileError(f"no StyleGAN2 checkpoint at {path}: pass the path of a rosinality .pt file")
    checkpoint = load_checkpoint(path, CheckpointFormatError, "StyleGAN2 checkpoint", allow=OPTION_CLASSES)
    if not isinstance(checkpoint, dict):
        raise CheckpointFormatError(f"{path} holds a {type(checkpoint).__name__}, not rosinality's checkpoint dict")
    return checkpoint


def _count_indexed(state_dict: Mapping[str, Tensor], pattern: str) -> int:
    """Number of consecutive indices 0.. (or 1..) for which ``pattern.format(i)`` is a key."""
    indices = {int(m.group(1)) for key in state_dict if (m := re.fullmatch(pattern, key))}
    start = min(indices, default=0)
    if indices != set(range(start, start + len(indices))):
        raise CheckpointFormatError(f"keys matching {pattern!r} have gaps in their indices: {sorted(indices)}")
    return len(indices)


def infer_generator_config(state_dict: Mapping[str, Tensor]) -> dict[str, int]:
    """Generator kwargs (size, style_dim, n_mlp, channel_multiplier, channel_max, channel_base).

    size = 2^(2 + number of ``to_rgbs``); style_dim and n_mlp from ``style.{i}.weight``; the channel
    of each resolution from ``input.input`` and the ``to_rgbs`` input widths, then the multiplier from
    the first resolution below the cap (rosinality: 256 * m channels at 64 px).
    """
    required = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        sample = sorted(state_dict)[:6]
        raise CheckpointFormatError(
            f"not a rosinality StyleGAN2 generator state dict: missing {missing} (first keys: {sample}); "
            "NVlabs pickles load with facetex.gan.nvlabs_pickle, pSp/e4e checkpoints hold an encoder"
        )
    style_dim = int(state_dict["style.1.weight"].shape[1])
    n_mlp = _count_indexed(state_dict, r"style\.(\d+)\.weight")
    n_blocks = _count_indexed(state_dict, r"to_rgbs\.(\d+)\.bias")
    size = 2 ** (2 + n_blocks)
    channels = {4: int(state_dict["input.input"].shape[1])}
    for block in range(n_blocks):
        channels[2 ** (block + 3)] = int(state_dict[f"to_rgbs.{block}.conv.weight"].shape[2])
    channel_max = channels[4]
    below_cap = [(res, ch) for res, ch in sorted(channels.items()) if ch < channel_max]
    if below_cap:
        product = below_cap[0][0] * below_cap[0][1]  # channel_base * channel_multiplier
        multiplier = product // ROSINALITY_CHANNEL_BASE if product % ROSINALITY_CHANNEL_BASE == 0 else 1
        base = product // multiplier
    else:  # every layer at the cap: any base large enough reproduces it
        multiplier, base = 2, max(ROSINALITY_CHANNEL_BASE, channel_max * size // 2)
    config = {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": multiplier,
              "channel_max": channel_max, "channel_base": base}
    expected = {res: min(channel_max, base * multiplier // res) for res in channels}
    if expected != channels:
        raise CheckpointFormatError(
            f"channel widths per resolution {channels} do not follow StyleGAN2's "
            "min(channel_max, base * multiplier / resolution) layout"
        )
    return config


def load_rosinality(
    path: str | Path,
    size: int | None = None,
    key: str = "g_ema",
    lr_mlp: float = 0.01,
    map_location: str | torch.device = "cpu",
) -> tuple[Generator, Tensor | None]:
    """Build and strictly load the generator stored under ``key`` ("g_ema", or "g" for the raw one).

    Args:
        path: a rosinality ``.pt`` checkpoint.
        size: expected resolution; checked against the one read off the weights when given.
        lr_mlp: mapping-network lr multiplier the model was trained with (not stored; 0.01 in
            every rosinality config). It scales the mapping weights at run time.

    Returns:
        ``(generator in eval mode, latent_avg (1, style_dim) or None)``. ``latent_avg`` is the
        truncation centre saved by ``convert_weight.py``; ``train.py`` checkpoints have none, in which
        case use ``generator.mean_latent(n)``.
    """
    path = Path(path)
    return rosinality_from_checkpoint(read_rosinality(path), path, size, key, lr_mlp, map_location)


def rosinality_from_checkpoint(
    checkpoint: dict[str, Any], path: Path, size: int | None = None, key: str = "g_ema", lr_mlp: float = 0.01,
    map_location: str | torch.device = "cpu",
) -> tuple[Generator, Tensor | None]:
    """:func:`load_rosinality` on an already loaded checkpoint dict (``path`` names it in messages)."""
    if key not in checkpoint:
        raise CheckpointFormatError(
            f"{path} has no {key!r} entry (found {sorted(map(str, checkpoint))}); expected a rosinality "
            "checkpoint with 'g_ema' (and 'g' when saved by train.py)"
        )
    state_dict = checkpoint[key]
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise CheckpointFormatError(f"{path}[{key!r}] is not a state dict of tensors")
    state_dict = {str(name).removeprefix("module."): value for name, value in state_dict.items()}
    config = infer_generator_config(state_dict)
    if size is not None and size != config["size"]:
        raise CheckpointFormatError(f"{path} holds a {config['size']} px generator, but size={size} was asked")
    generator = NVlabsStyleGAN2(**config, lr_mlp=lr_mlp)  # type: ignore[arg-type]
    try:
        generator.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointFormatError(f"{path}[{key!r}] does not match a StyleGAN2 of config {config}: {error}") from error
    latent_avg = _latent_avg(checkpoint.get("latent_avg"), config["style_dim"], path)
    if latent_avg is not None:
        generator.set_w_avg(latent_avg)
    generator.to(map_location).eval()
    return generator, latent_avg


def _latent_avg(latent_avg: Any, style_dim: int, path: Path) -> Tensor | None:
    """The stored truncation centre as (1, style_dim), or None when the checkpoint has none."""
    if latent_avg is None:
        return None
    if not isinstance(latent_avg, Tensor) or latent_avg.numel() != style_dim:
        shape = tuple(latent_avg.shape) if isinstance(latent_avg, Tensor) else type(latent_avg).__name__
        raise CheckpointFormatError(f"{path}['latent_avg'] should hold {style_dim} values, got {shape}")
    return latent_avg.detach().reshape(1, style_dim).float()


def seeded_stylegan2(config: Mapping[str, Any], seed: int) -> Generator:
    """A randomly initialised StyleGAN2 (demos, tests) whose weights depend only on ``seed``.

    The global random stream is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Generator(**config)

