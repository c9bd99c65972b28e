"""Write what ``GANTex.predict_step`` returns: per photo, the textured mesh, the views, a grid and the scores.

For a photo named ``NAME`` it writes the folder ``<output_dir>/NAME/`` that
``app.face_outputs.multiview_folder`` describes (mesh, PLY, views, grid, metrics, crops, texture maps,
photo), through the one face-folder writer ``app.face_outputs.write_face_folder`` (staged, then moved in
whole). After each photo the run's gallery is rebuilt (``facetex.gallery.build_gallery`` on
``<output_dir>``): ``<output_dir>/index.html`` lists every photo written so far, each with its page and
3D viewer at ``<output_dir>/NAME/index.html``; open it straight from disk. With a ``TensorBoardLogger``
the grid, the UV texture, the vertex-coloured mesh and the per-view scalars (index = view) go to
TensorBoard too (``app.face_tensorboard.log_views``). At the end it says where the outputs went: how many
photo folders were written to ``<output_dir>``, how many photos were skipped (no face, unreadable; the
module logged why) and the gallery's address.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from app.face_outputs import multiview_folder, write_face_folder
from app.face_tensorboard import log_views
from facetex.gallery import build_gallery
from facetex.gallery.pages import photo_folders


class FaceWriter(BasePredictionWriter):
    """Write each photo's mesh, views, grid, metrics and gallery page as it is predicted (see the module docstring).

    Args:
        output_dir: where the per-photo folders go; a relative path is put inside the run's log dir.
    """

    def __init__(self, output_dir: str = "faces") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.written = self.skipped = 0  # photos of this rank's current predict run

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = self.skipped = 0

    def root(self, trainer: L.Trainer) -> Path:
        """The folder the photo folders go into: ``output_dir``, inside the run's log dir when relative."""
        root = Path(self.output_dir)
        return root if root.is_absolute() else Path(trainer.log_dir or trainer.default_root_dir) / root

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if prediction is None:  # the module skipped a photo without a face or unreadable (and logged why)
            self.skipped += 1
            return
        root = self.root(trainer)
        out_dir = root / prediction["name"]
        result = prediction["result"]
        folder = multiview_folder(prediction["name"], prediction["path"], result, prediction.get("metrics"))
        write_face_folder(out_dir, folder)
        self.written += 1
        if trainer.world_size == 1:  # under DDP other ranks are still moving folders in: see on_predict_epoch_end
            build_gallery(root)
        if isinstance(trainer.logger, TensorBoardLogger):
            log_views(trainer.logger.experiment, prediction["name"], out_dir, result.model, result.reconstruction,
                      folder.metrics)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Say where the outputs went; under DDP, once every rank has written its photos, rank 0 builds the gallery."""
        if trainer.world_size == 1:
            rank_zero_info(self.summary(self.root(trainer)))
            return
        trainer.strategy.barrier("face_writer_gallery")
        root = self.root(trainer)
        if trainer.is_global_zero and root.is_dir() and photo_folders(root):
            build_gallery(root)

    def summary(self, root: Path) -> str:
        """One line: the photo folders written to ``root`` (and its gallery), the photos skipped."""
        skipped = f"; skipped {self.skipped} photo(s), see the warnings above" if self.skipped else ""
        if not self.written:
            return f"no photo folder written{skipped}"
        return (f"wrote {self.written} photo folder(s) to {root.resolve()}{skipped}; gallery: "
                f"{(root / 'index.html').resolve().as_uri()}")
