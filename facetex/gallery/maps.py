"""Per-view texture maps as PNGs, for the gallery's UV-texture toggles.

From a :class:`~facetex.face3d.texture.FusedTexture` of K' used views it writes into ``folder``:

* ``source.png``: where each texel's colour came from, in ``SOURCE_COLOURS`` (black outside the chart,
  green a view, blue the mirror texel, red inpainted);
* per used view ``k`` (its index among ALL the photo's views): ``view_KK_visibility.png`` (white where
  the texel is in the view's image and not occluded), ``view_KK_weight.png`` (the view weight
  ``cos(theta)^p`` with the silhouette falloff, 0 where hidden) and ``view_KK_share.png`` (the view's
  share of the blended colour after seam smoothing; the shares sum to 1 where any view sees the texel);
* ``maps.json``: ``[{"file", "label"}]`` in display order, which the gallery reads.

All maps have the texture's size and orientation (row 0 is v = 1), so they overlay it texel for texel.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
import torch
from torch import Tensor

from foundation.files import atomic_paths

from facetex.face3d.export import image_to_uint8
from facetex.face3d.texture import FusedTexture

MAPS_INDEX = "maps.json"
# display colours of TexelSource values (outside, view, symmetry, inpainted)
SOURCE_COLOURS = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.7, 0.2], [0.2, 0.4, 0.9], [0.9, 0.3, 0.2]])


def _grey(values: Tensor) -> np.ndarray:
    """``(T, T)`` tensor in [0, 1] (bool or float) -> ``(T, T)`` uint8."""
    array = values.detach().float().cpu().numpy()
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def texel_source_image(fused: FusedTexture) -> Tensor:
    """``(3, T, T)`` image of where each texel came from, in ``SOURCE_COLOURS``."""
    return SOURCE_COLOURS.to(fused.source.device)[fused.source.long()].permute(2, 0, 1)


def texture_maps(fused: FusedTexture, view_indices: Sequence[int]) -> list[tuple[str, str, np.ndarray]]:
    """``(file name, label, uint8 image)`` of every map, source first then view by view.

    ``view_indices``: the photo's view index of each of the K' views ``fused`` was made from.
    """
    if len(view_indices) != fused.view_weight.shape[0]:
        raise ValueError(f"view_indices names {len(view_indices)} views but the texture was fused from "
                         f"{fused.view_weight.shape[0]}; pass the index of every used view")
    maps = [("source.png", "texel source (green view, blue mirror, red inpainted)",
             image_to_uint8(texel_source_image(fused)))]
    for row, view in enumerate(view_indices):
        maps += [
            (f"view_{view:02d}_visibility.png", f"view {view}: visibility", _grey(fused.visibility[row])),
            (f"view_{view:02d}_weight.png", f"view {view}: view weight", _grey(fused.view_weight[row])),
            (f"view_{view:02d}_share.png", f"view {view}: blend share", _grey(fused.blend_weight[row])),
        ]
    return maps


def write_texture_maps(folder: Path, fused: FusedTexture, view_indices: Sequence[int]) -> Path:
    """Write the maps and ``maps.json`` into ``folder`` (all renamed into place together); returns the index path."""
    maps = texture_maps(fused, view_indices)
    index = [{"file": name, "label": label} for name, label, _ in maps]
    with atomic_paths(*(folder / name for name, _, _ in maps), folder / MAPS_INDEX) as temporaries:
        for temporary, (_, _, image) in zip(temporaries, maps):
            Image.fromarray(image).save(temporary, format="PNG")
        temporaries[-1].write_text(json.dumps(index, indent=2))
    return folder / MAPS_INDEX
