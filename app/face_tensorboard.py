"""What of a face goes to TensorBoard: its grid, UV texture and vertex-coloured mesh, and its scores.

``log_photo`` opens its own ``SummaryWriter`` (the photo -> mesh job); ``log_views`` writes to the one
a Lightning ``TensorBoardLogger`` holds (``callbacks.face_writer``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from facetex.face3d.image_io import load_image
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.reconstruction import FaceReconstruction
from facetex.face3d.texture import texture_to_vertex_colors


def add_textured_mesh(writer: SummaryWriter, tag: str, grid_path: Path, model: MorphableModel,
                      reconstruction: FaceReconstruction) -> None:
    """``tag/grid`` (the written grid PNG), ``tag/uv_texture`` and ``tag/mesh`` (vertex-coloured) on ``writer``."""
    texture = reconstruction.fused.texture.detach().cpu().clamp(0, 1)
    colours = (texture_to_vertex_colors(texture, model.uv.cpu()).clamp(0, 1) * 255).to(torch.uint8)
    writer.add_image(f"{tag}/grid", load_image(grid_path), dataformats="CHW")
    writer.add_image(f"{tag}/uv_texture", texture, dataformats="CHW")
    writer.add_mesh(f"{tag}/mesh", vertices=reconstruction.vertices[:1].detach().cpu(), colors=colours[None],
                    faces=model.triangles.cpu()[None].int())


def log_photo(log_dir: str | Path, tag: str, out_dir: Path, model: MorphableModel,
              reconstruction: FaceReconstruction, metrics: dict[str, Any]) -> None:
    """The face written to ``out_dir`` and its re-render scores (``tag/rerender_psnr``, ...) into ``log_dir``."""
    with SummaryWriter(str(log_dir)) as writer:
        add_textured_mesh(writer, tag, out_dir / "grid.png", model, reconstruction)
        for name, value in metrics["rerender"].items():
            writer.add_scalar(f"{tag}/rerender_{name}", value)


def log_views(writer: SummaryWriter, tag: str, out_dir: Path, model: MorphableModel,
              reconstruction: FaceReconstruction, metrics: dict[str, Any]) -> None:
    """The face written to ``out_dir`` and per-view scalars ``tag/measured_yaw|psnr|ssim`` (index = view)."""
    add_textured_mesh(writer, tag, out_dir / "grid.png", model, reconstruction)
    for entry in metrics["views"]:
        for key in ("measured_yaw", "psnr", "ssim"):
            if entry.get(key) is not None:
                writer.add_scalar(f"{tag}/{key}", entry[key], entry["view"])
    writer.flush()
