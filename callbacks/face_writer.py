"""Write what ``GANTex.predict_step`` returns: per photo, the textured mesh, the views, a grid and the scores.

For a photo named ``NAME`` it writes ``<output_dir>/NAME/``:

* ``face.obj`` + ``face.mtl`` + ``face.png`` (the fused UV texture, linked) and ``face.ply`` (vertex colours);
* ``views/view_KK_asked±A_measured±M.png`` (``measured_none`` where no face was detected) and
  ``views.json`` (strength, asked and measured yaw of each view);
* ``grid.png``: row 1 the aligned input, the inversion and the K views labelled with their measured
  yaw; row 2 the UV texture, where its texels came from, and the textured mesh rendered alone at each
  view's yaw (a grey cell for a view left out of the mesh);
* ``metrics.json``: ``MultiViewResult.metrics()`` (per-view re-render PSNR/SSIM inside the face mask,
  yaws, texel sources) with the photo's name and path;
* for the gallery: ``photo.jpg`` (the input, at most 512 px), ``aligned.png`` (the crop the generator is
  inverted to), ``inversion.png`` and ``maps/`` (texel source and, per used view, visibility, view weight
  and blend share; ``facetex.gallery.maps``).

After each photo the run's gallery is rebuilt (``facetex.gallery.build_gallery`` on ``<output_dir>``):
``<output_dir>/index.html`` lists every photo written so far, each with its page and 3D viewer at
``<output_dir>/NAME/index.html``; open it straight from disk.

Files are staged in a hidden sibling folder and moved in only when all are written. With a
``TensorBoardLogger`` the grid, the UV texture, the vertex-coloured mesh and the per-view scalars
(index = view) go to TensorBoard too.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from foundation.files import replace_folder

from facetex.face3d.export import image_to_uint8, save_image_grid, write_obj, write_ply
from facetex.face3d.pipeline import SOURCE_COLOURS, add_textured_mesh
from facetex.face3d.texture import texture_to_vertex_colors
from facetex.gallery import build_gallery, write_photo, write_texture_maps
from facetex.gallery.pages import photo_folders
from facetex.gan.multiview import MultiViewResult


def _yaw_tag(value: float | None) -> str:
    return "none" if value is None else f"{value:+.1f}"


def view_file_name(index: int, asked: float, measured: float | None) -> str:
    """``view_03_asked+10.0_measured+9.4.png`` (``measured_none`` when the view's yaw could not be measured)."""
    measured_tag = "_none" if measured is None else _yaw_tag(measured)
    return f"view_{index:02d}_asked{_yaw_tag(asked)}_measured{measured_tag}.png"


def _grid(path: Path, result: MultiViewResult) -> None:
    """The summary grid described in the module docstring."""
    metrics = result.metrics()["views"]
    view_labels = [f"yaw {_yaw_tag(m['measured_yaw'])} (asked {m['asked_yaw']:+.0f})" if m["measured_yaw"] is not None
                   else f"no face (asked {m['asked_yaw']:+.0f})" for m in metrics]
    fused = result.reconstruction.fused
    sources = SOURCE_COLOURS.to(fused.texture.device)[fused.source.long()].permute(2, 0, 1)
    used = result.used_views.tolist()
    blank = torch.full_like(result.turntable[0], 0.5)
    turned = [result.turntable[used.index(k)] if k in used else blank for k in range(result.views.shape[0])]
    turned_labels = [f"mesh at {float(result.view_yaw[used.index(k)]):+.0f}" if k in used else "left out"
                     for k in range(result.views.shape[0])]
    rows = [[result.aligned.image, result.inverted, *result.views], [fused.texture, sources, *turned]]
    labels = [["input (aligned)", f"inversion {result.inversion_psnr:.1f} dB", *view_labels],
              ["UV texture", "view/mirror/inpaint", *turned_labels]]
    save_image_grid(path, rows, labels)


def write_result(out_dir: Path, name: str, photo_path: str, result: MultiViewResult) -> dict:
    """Write every file of one photo into ``out_dir`` (staged, then moved in together); returns the metrics."""
    model, reconstruction = result.model, result.reconstruction
    vertices, texture = reconstruction.vertices[0], reconstruction.fused.texture
    metrics = {"name": name, "image": photo_path, **result.metrics()}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write_obj(staging / "face.obj", vertices, model.triangles, model.uv, texture)
        write_ply(staging / "face.ply", vertices, model.triangles, texture_to_vertex_colors(texture, model.uv))
        (staging / "views").mkdir()
        for view, entry in zip(result.views, metrics["views"]):
            file_name = view_file_name(entry["view"], entry["asked_yaw"], entry["measured_yaw"])
            Image.fromarray(image_to_uint8(view)).save(staging / "views" / file_name)
            entry["file"] = f"views/{file_name}"
        views = [{key: entry[key] for key in ("view", "file", "strength", "asked_yaw", "measured_yaw")}
                 for entry in metrics["views"]]
        (staging / "views.json").write_text(json.dumps(views, indent=2))
        _grid(staging / "grid.png", result)
        write_photo(photo_path, staging)
        Image.fromarray(image_to_uint8(result.aligned.image)).save(staging / "aligned.png")
        Image.fromarray(image_to_uint8(result.inverted)).save(staging / "inversion.png")
        write_texture_maps(staging / "maps", reconstruction.fused, result.used_views.tolist())
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


def log_result(logger: TensorBoardLogger, name: str, out_dir: Path, result: MultiViewResult, metrics: dict) -> None:
    """Grid, UV texture, vertex-coloured mesh and per-view scalars of one photo to TensorBoard."""
    writer = logger.experiment
    add_textured_mesh(writer, name, out_dir / "grid.png", result.model, result.reconstruction)
    for entry in metrics["views"]:
        for key in ("measured_yaw", "psnr", "ssim"):
            if entry.get(key) is not None:
                writer.add_scalar(f"{name}/{key}", entry[key], entry["view"])
    writer.flush()


class FaceWriter(BasePredictionWriter):
    """Write each photo's mesh, views, grid, metrics and gallery page as it is predicted (see the module docstring).

    Args:
        output_dir: where the per-photo folders go; a relative path is put inside the run's log dir.
    """

    def __init__(self, output_dir: str = "faces") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir

    def root(self, trainer: L.Trainer) -> Path:
        """The folder the photo folders go into: ``output_dir``, inside the run's log dir when relative."""
        root = Path(self.output_dir)
        return root if root.is_absolute() else Path(trainer.log_dir or trainer.default_root_dir) / root

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if prediction is None:  # the module skipped a photo without a face (and logged why)
            return
        root = self.root(trainer)
        out_dir = root / prediction["name"]
        metrics = write_result(out_dir, prediction["name"], prediction["path"], prediction["result"])
        if trainer.world_size == 1:  # under DDP other ranks are still moving folders in: see on_predict_epoch_end
            build_gallery(root)
        if isinstance(trainer.logger, TensorBoardLogger):
            log_result(trainer.logger, prediction["name"], out_dir, prediction["result"], metrics)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Under DDP: once every rank has written its photos, rank 0 builds the gallery of them all."""
        if trainer.world_size == 1:
            return
        trainer.strategy.barrier("face_writer_gallery")
        root = self.root(trainer)
        if trainer.is_global_zero and root.is_dir() and photo_folders(root):
            build_gallery(root)
