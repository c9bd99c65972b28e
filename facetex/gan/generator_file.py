"""One entry point for a pretrained generator file of any official kind, picked by suffix and content.

The format readers (:mod:`facetex.gan.checkpoints` for rosinality, :mod:`facetex.gan.nvlabs_pickle`,
:mod:`facetex.gan.restyle_checkpoint`) know nothing of each other; this module alone chooses between them.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from facetex.gan.checkpoints import read_rosinality, rosinality_from_checkpoint
from facetex.gan.nvlabs_pickle import load_nvlabs_pickle_with_w_avg
from facetex.gan.restyle_checkpoint import decoder_from_checkpoint, is_encoder_checkpoint
from foundation.checkpoints import MissingFileError
from foundation.errors import InputError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")


class UnknownFormatError(InputError, ValueError):
    """A generator file whose suffix names no format this project reads."""


def load_generator(path: str | Path) -> tuple[nn.Module, Tensor | None]:
    """A pretrained generator in eval mode and its stored average latent ``(1, style_dim)`` (or None).

    By file type: an NVlabs StyleGAN2/StyleGAN3 ``.pkl`` (its mapping network's ``w_avg``; a TensorFlow-era
    StyleGAN2 pickle is converted on the way), a rosinality StyleGAN2 ``.pt``/``.pth``/``.ckpt`` (its
    ``latent_avg``, absent in ``train.py`` checkpoints), or a pSp / e4e / ReStyle checkpoint (its decoder and
    ``latent_avg``).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"generator checkpoint {str(path)!r} not found; download e.g. "
                               "stylegan3-r-ffhq-1024x1024.pkl from NVlabs or a rosinality .pt")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        return load_nvlabs_pickle_with_w_avg(path)
    if suffix in TORCH_SUFFIXES:
        checkpoint = read_rosinality(path)
        if is_encoder_checkpoint(checkpoint):
            return decoder_from_checkpoint(checkpoint, path)
        return rosinality_from_checkpoint(checkpoint, path)
    raise UnknownFormatError(f"{str(path)!r}: unknown generator format {suffix!r}; use an NVlabs .pkl, a rosinality "
                             ".pt/.pth/.ckpt or a pSp/e4e/ReStyle .pt")
