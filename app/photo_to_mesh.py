"""The photo -> face folder job: one photo in, a textured mesh, a grid and its scores out, with a progress bar.

The stages, each a core function: ``image_io.load_image`` (at the working size, ``image_io.WORKING_SIDE``) ->
``pipeline.regress_landmarks`` (FaceBoxes + 3DDFA_V2) -> the geometry (``reconstruction.regressor_geometry`` for
3DDFA_V2's own BFM mesh: its pose and mesh exactly; ``reconstruction.fit_views`` with the rotation anchored to the
regressor's for another model) -> ``reconstruction.texture_views`` -> ``render.rerender`` and
``render.render_turntable`` ->
``app.face_outputs.write_face_folder`` (``face.obj/.mtl/.png``, ``face.ply``, ``grid.png``, ``metrics.json``),
optionally ``app.face_tensorboard.log_photo``. :func:`add_to_gallery` then copies the photo beside them and
rebuilds the gallery of the folder above.

Before any of it the output folder is checked (:func:`check_out_dir`: writable, and room for the files on its
file system), so a full disk is said at once. The computing stages run through ``app.cancellable``: Ctrl-C
stops the job within a fraction of a second wherever it is, and nothing is written.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from app.cancellable import check_cancelled, run_cancellable
from app.face_outputs import face_folder_bytes, photo_folder, write_face_folder
from app.face_tensorboard import log_photo
from facetex.face3d.detector import FaceDetector, check_score_threshold
from facetex.face3d.fitting import LandmarkFit
from facetex.face3d.image_io import WORKING_SIDE, check_max_side, load_image
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.pipeline import AssetPaths, CropPolicy, FaceChoice, FaceModelName, load_face_model, regress_face
from facetex.face3d.rasterizer import active_backend
from facetex.face3d.reconstruction import (
    FaceReconstruction,
    fit_views,
    is_regressor_model,
    regressor_geometry,
    texture_views,
)
from facetex.face3d.regressor import FaceRegression, FaceRegressor
from facetex.face3d.render import Rerender, render_turntable, rerender, score_masks, score_views
from facetex.face3d.texture import TexelSource
from facetex.gallery import build_gallery, write_photo
from foundation.errors import InputError
from foundation.files import creation_blocker

DEFAULT_YAWS = (-45.0, -20.0, 0.0, 20.0, 45.0)
POSE_CHANGE_LIMIT = 3.0  # degrees a landmark fit may turn the regressor's pose before the run says so
log = logging.getLogger(__name__)
# what metrics.json's rerender psnr/ssim are scored over (its covered_psnr/covered_ssim: every pixel the mesh covers)
SCORED_IN = {
    True: "face skin mask: the pixels the mesh covers minus the mouth interior and non-skin colours outside the "
          "landmark outline (face_mask.face_skin_mask), the pixels that fed the texture",
    False: "every pixel the mesh covers (the face model marks too few landmarks for a face-skin mask)",
}
STAGES = ("load image", "detect + 3DDFA landmarks", "fit face model", "fuse texture", "re-render + score",
          "write files")


class Computed(NamedTuple):
    """What the computing stages hand to the writing one."""

    image: Tensor
    model: MorphableModel
    regression: FaceRegression
    face: FaceChoice
    fit: LandmarkFit
    geometry: str
    reconstruction: FaceReconstruction
    scored: Rerender
    covered_psnr: Tensor
    covered_ssim: Tensor
    turntable: Tensor


class OutputFolderError(InputError, FileExistsError):
    """The output folder is a file, or a folder holding files that are not an earlier face folder."""


def check_out_dir(out_dir: Path, needed_bytes: int = 0) -> None:
    """Refuse an ``out_dir`` the job could not write or would destroy, before any computation.

    It is replaced whole (staged beside it, then moved in), so it must be new, empty or a face folder, and the
    folder that will hold it must be a writable folder with ``needed_bytes`` free on its file system (the new
    folder is written in full before an earlier one is removed). Writability is ``os.access``: as root it is
    always granted, so a read-only folder is only caught when the run is not root.
    """
    if out_dir.exists() and (not out_dir.is_dir()
                             or (any(out_dir.iterdir()) and not (out_dir / "metrics.json").is_file())):
        raise OutputFolderError(
            f"{str(out_dir)!r} exists and is not the folder of an earlier photo -> mesh run (it has no metrics.json); "
            "it would be replaced whole: pass a new or empty folder for the outputs"
        )
    blocker = creation_blocker(out_dir.absolute().parent)
    if blocker is None:
        check_free_space(out_dir, needed_bytes)
        return
    holder, kind = blocker
    if kind == "file":
        raise OutputFolderError(f"cannot create the output folder {str(out_dir)!r}: {str(holder)!r} is a file, not a "
                                "folder; pass an --out inside a folder")
    raise OutputFolderError(f"cannot write the output folder {str(out_dir)!r}: {str(holder)!r} is not writable; "
                            "pass an --out inside a folder you can write")


def check_free_space(out_dir: Path, needed_bytes: int) -> None:
    """Raise :class:`OutputFolderError` when the file system that will hold ``out_dir`` has under ``needed_bytes`` free."""
    existing = next(p for p in (out_dir.absolute(), *out_dir.absolute().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise OutputFolderError(
            f"not enough free space for the output folder {str(out_dir.absolute())!r}: its files need about "
            f"{needed_bytes / 2**20:.1f} MiB and {str(existing)!r} has {free / 2**20:.1f} MiB free; free some space "
            "or pass an --out on another disk")


def photo_to_mesh(
    image_path: str | Path,
    out_dir: str | Path,
    assets: AssetPaths,
    face_model: FaceModelName = "bfm",
    texture_size: int = 1024,
    yaws: Sequence[float] = DEFAULT_YAWS,
    progress: bool = True,
    device: str | torch.device = "cpu",
    tensorboard_dir: str | Path | None = None,
    crop_policy: CropPolicy = "box",
    score_threshold: float = 0.5,
    max_side: int | None = WORKING_SIDE,
) -> dict[str, Any]:
    """Run photo -> textured mesh and write ``face.obj/.mtl/.png``, ``face.ply``, ``grid.png`` and ``metrics.json``.

    Everything runs on ``device``. ``crop_policy`` is 3DDFA_V2's (``pipeline.regress_landmarks``): the
    official single crop from the detector box, or ``"landmark"`` for a second crop around its landmarks. ``out_dir`` appears with all its files or not at all (an earlier face
    folder there is replaced). ``score_threshold``: the face detector's, in [0, 1). ``max_side``: the photo's
    working size, its longest side in pixels after decoding (None: as stored; see ``image_io``). Returns the metrics
    written to ``metrics.json`` (re-render scores inside the face-skin mask, ``rerender_scored_in`` saying which
    mask, and over every pixel the mesh covers as ``covered_psnr``/``covered_ssim``; pose, fit error, texel sources, rasteriser backend, which face was
    used and how many were found (``faces``), the photo's working size (``photo_size``), seconds per stage).
    Raises ``ImageDecodeError`` or ``FileNotFoundError`` for an unreadable image, ``NoFaceError`` when the detector
    finds no face, :class:`OutputFolderError` for an ``out_dir`` that holds something else or whose disk is too full,
    and ``KeyboardInterrupt`` within a fraction of a second of Ctrl-C (nothing written).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, face_folder_bytes(texture_size))
    check_score_threshold(score_threshold)
    check_max_side(max_side)
    timings: dict[str, float] = {}
    bar = tqdm(STAGES, desc="photo_to_mesh", disable=not progress)

    def stage(name: str, cancel: threading.Event | None = None) -> None:
        check_cancelled(cancel)
        if timings:
            bar.update()
        timings[name] = time.perf_counter()
        bar.set_postfix_str(name)

    def seconds(metrics: dict[str, Any]) -> None:
        starts = [*timings.values(), time.perf_counter()]
        metrics["seconds"] = {name: round(end - start, 3) for name, start, end in zip(timings, starts, starts[1:])}

    def compute(cancel: threading.Event) -> Computed:
        stage("load image", cancel)
        photo = load_image(image_path, max_side).to(device)
        image = photo.float()[None] / 255.0
        detector = FaceDetector.from_checkpoint(assets.detector, score_threshold=score_threshold).to(device)
        regressor = FaceRegressor.from_files(assets.regressor, assets.param_stats, assets.landmark_bases).to(device)
        model = load_face_model(assets, face_model).to(device)
        stage("detect + 3DDFA landmarks", cancel)
        regression, face = regress_face(photo, detector, regressor, crop_policy)
        stage("fit face model", cancel)
        screen = None
        if is_regressor_model(model):  # 3DDFA_V2's own mesh: its pose (and coefficients) exactly, nothing to fit
            fit, screen = regressor_geometry(model, regression)
            geometry = "regressor: 3DDFA_V2's mesh and pose (recon_vers + similar_transform)"
        else:
            fit = fit_views(model, regression.landmarks[:, :, :2], rotations=regression.rotation)
            geometry = "landmark fit of shape and expression, rotation anchored to 3DDFA_V2's"
        stage("fuse texture", cancel)
        reconstruction = texture_views(model, image, fit, texture_size, screen_vertices=screen,
                                       landmarks=regression.landmarks[:, :, :2])
        stage("re-render + score", cancel)
        scored = rerender(image, reconstruction, model)
        covered_psnr, covered_ssim = score_views(scored.renders, image, scored.masks)
        turntable = render_turntable(reconstruction.vertices[0], model, reconstruction.fused.texture, yaws, 256)
        check_cancelled(cancel)
        return Computed(image, model, regression, face, fit, geometry, reconstruction, scored, covered_psnr,
                        covered_ssim, turntable)

    try:
        (image, model, regression, face, fit, geometry, reconstruction, scored, covered_psnr, covered_ssim,
         turntable) = run_cancellable(compute, "photo_to_mesh")
    except BaseException:
        bar.close()  # the bar's line ends before the caller prints why
        raise
    stage("write files")
    pose_change = float(fit.rotation_change.max())
    pose_note = None
    if pose_change > POSE_CHANGE_LIMIT:
        pose_note = (f"the landmark fit turned the regressor's head pose by {pose_change:.1f} deg (more than "
                     f"{POSE_CHANGE_LIMIT:g}): the landmarks disagree with 3DDFA_V2's pose; check the renders")
        log.warning(pose_note)
    fused = reconstruction.fused
    metrics = {
        "image": str(image_path),
        "photo_size": {"working": list(image.shape[-2:][::-1]), "max_side": max_side},
        "face_model": face_model,
        "rasterizer_backend": active_backend(),
        "texture_size": texture_size,
        "crop_policy": crop_policy,
        "faces": {**face.metrics(), "score_threshold": score_threshold},
        "rerender": {"psnr": float(scored.psnr.mean()), "ssim": float(scored.ssim.mean()),
                     "score_mask_fraction": float(score_masks(reconstruction, scored.masks).mean()),
                     "covered_psnr": float(covered_psnr.mean()), "covered_ssim": float(covered_ssim.mean()),
                     "mask_fraction": float(scored.masks.mean())},
        "rerender_scored_in": SCORED_IN[reconstruction.masks is not None],
        "pose_degrees": {"yaw": float(fit.yaw[0, 0]), "pitch": float(fit.pitch[0, 0]), "roll": float(fit.roll[0, 0])},
        "regressor_pose_degrees": {"yaw": float(regression.yaw[0]), "pitch": float(regression.pitch[0]),
                                   "roll": float(regression.roll[0])},
        "geometry": geometry,
        "pose_change_degrees": pose_change,
        "pose_note": pose_note,
        "landmark_rmse_px": float(fit.rmse[0, 0]),
        "texel_sources": {
            source.name.lower(): fused.fraction(source) for source in TexelSource if source != TexelSource.OUTSIDE
        },
        "num_vertices": model.num_vertices,
        "num_triangles": int(model.triangles.shape[0]),
    }
    folder = photo_folder(model, reconstruction, image[0], scored.renders[0], scored.masks[0], turntable, yaws,
                          metrics)
    write_face_folder(out_dir, folder, stamp=seconds)
    if tensorboard_dir is not None:
        log_photo(tensorboard_dir, Path(image_path).stem, out_dir, model, reconstruction, metrics)
    bar.update()
    bar.close()
    return metrics


def add_to_gallery(photo: str | Path, out_dir: Path) -> Path:
    """Copy ``photo`` into the face folder ``out_dir`` as ``photo.jpg`` and rebuild the gallery of its parent folder.

    Returns the gallery's ``index.html``; raises ``GalleryError`` or ``OSError`` when it cannot be built.
    """
    write_photo(photo, out_dir)
    return build_gallery(out_dir.resolve().parent)
