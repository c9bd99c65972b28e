"""Photo(s) -> textured 3D face: landmarks, morphable-model fit, multi-view texture fusion, export, scores.

The geometry and texture half of 3D-GANTex, in three layers:

* :func:`fit_views` and :func:`texture_views`, the core: K images of one face (one photo, or the K
  views a GAN synthesises) with their 68 landmarks -> one shared identity, a pose per view, and a UV
  texture fused from all views (``texture.fuse_texture``: visibility, view weights, symmetry, inpainting).
* :func:`regress_landmarks`: one photo -> FaceBoxes detection -> 3DDFA_V2 landmarks of the best face.
* :func:`photo_to_mesh`: the end-to-end run on a photo, writing the textured OBJ (+ MTL + PNG), a
  vertex-coloured PLY, a PNG grid (input beside re-renders at several yaws, the UV map and where its
  texels came from) and ``metrics.json`` (PSNR/SSIM of the re-render inside the face mask). All files
  are staged in a temporary folder and moved into place only when every one of them is written.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d.detector import FaceDetector
from facetex.face3d.export import save_image_grid, write_obj, write_ply
from facetex.face3d.fitting import LandmarkFit, fit_landmarks_multiview
from facetex.face3d.image_io import load_image
from facetex.face3d.metrics import masked_psnr, masked_ssim
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.rasterizer import active_backend
from facetex.face3d.regressor import FaceRegression, FaceRegressor
from facetex.face3d.synthetic import render_textured
from facetex.face3d.texture import FusedTexture, FusionConfig, TexelSource, fuse_texture, texture_to_vertex_colors

DEFAULT_YAWS = (-45.0, -20.0, 0.0, 20.0, 45.0)
FaceModelName = Literal["sfm", "bfm"]
# display colours of TexelSource values (outside, view, symmetry, inpainted)
SOURCE_COLOURS = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.7, 0.2], [0.2, 0.4, 0.9], [0.9, 0.3, 0.2]])


@dataclass
class AssetPaths:
    """The files the photo pipeline reads (see ``../shared/assets/README.md`` for their public sources)."""

    detector: Path  # FaceBoxesProd.pth
    regressor: Path  # 3DDFA_V2 mb05_120x120.pth
    param_stats: Path  # param_mean_std_62d_120x120.pkl
    landmark_bases: Path  # bfm_noneck_mean.npz (u_base, w_shp_base, w_exp_base; also the BFM mean mesh)
    sfm: Path  # sfm_3448.npz
    bfm_uv: Path  # BFM_UV.mat
    bfm_indices: Path  # indices.npy

    @classmethod
    def from_folder(cls, root: str | Path) -> AssetPaths:
        """The layout of the shared assets folder: ``3ddfa_v2/``, ``bfm/``, ``sfm/``."""
        root = Path(root)
        paths = cls(
            detector=root / "3ddfa_v2" / "FaceBoxesProd.pth",
            regressor=root / "3ddfa_v2" / "mb05_120x120.pth",
            param_stats=root / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl",
            landmark_bases=root / "bfm" / "bfm_noneck_mean.npz",
            sfm=root / "sfm" / "sfm_3448.npz",
            bfm_uv=root / "bfm" / "BFM_UV.mat",
            bfm_indices=root / "bfm" / "indices.npy",
        )
        missing = [str(path) for path in vars(paths).values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"asset files missing under {root}: {missing}; point --assets at a folder laid out like "
                "shared/assets (3ddfa_v2/, bfm/, sfm/), see its README.md for where each file comes from"
            )
        return paths


def load_face_model(assets: AssetPaths, name: FaceModelName = "sfm") -> MorphableModel:
    """The Surrey Face Model (``"sfm"``, 63 shape + 6 expression modes) or the BFM mean face (``"bfm"``, pose only)."""
    if name == "sfm":
        return MorphableModel.from_sfm(assets.sfm)
    if name == "bfm":
        return MorphableModel.from_bfm_mean(assets.landmark_bases, assets.bfm_uv, assets.bfm_indices)
    raise ValueError(f"face model must be 'sfm' or 'bfm', got {name!r}")


@dataclass
class FaceReconstruction:
    """One face seen in K views.

    fit: the multi-view :class:`LandmarkFit` (batch 1: shape ``(1, S)``, per-view poses ``(1, K, ...)``).
    vertices: ``(K, V, 3)`` model-space mesh of each view (shared identity, the view's expression).
    screen_vertices: ``(K, V, 3)`` the mesh projected into each image.
    fused: the fused UV texture and its per-view maps.
    """

    fit: LandmarkFit
    vertices: Tensor
    screen_vertices: Tensor
    fused: FusedTexture


def fit_views(model: MorphableModel, landmarks: Tensor, weights: Tensor | None = None) -> LandmarkFit:
    """One identity and K poses from K views' iBUG-68 landmarks ``(K, 68, 2)`` (pixels), weights ``(K, 68)``."""
    if landmarks.dim() != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (K, 68, 2) iBUG-68 pixel positions, got {tuple(landmarks.shape)}")
    return fit_landmarks_multiview(model, landmarks[None], None if weights is None else weights[None])


def texture_views(
    model: MorphableModel, images: Tensor, fit: LandmarkFit, texture_size: int, config: FusionConfig = FusionConfig()
) -> FaceReconstruction:
    """Fuse K images ``(K, 3, H, W)`` (uint8 or [0, 1]) into the UV texture of the fitted face.

    ``fit`` is the multi-view fit of one face (batch 1) over the same K images.
    """
    if model.uv is None:
        raise ValueError("the face model has no texture coordinates; load it with its UV file to build a texture")
    if fit.rotation.shape[:2] != (1, images.shape[0]):
        raise ValueError(
            f"fit has {tuple(fit.rotation.shape[:2])} (people, views) but there are {images.shape[0]} images; "
            "pass the multi-view fit of one face over the same images"
        )
    num_views = images.shape[0]
    vertices = model(fit.shape.expand(num_views, -1), fit.expression[0])  # (K, V, 3)
    screen = project(vertices, fit.rotation[0], fit.scale[0], fit.translation[0])
    fused = fuse_texture(images, screen, model.triangles, model.uv, texture_size, model.symmetry, config)
    return FaceReconstruction(fit=fit, vertices=vertices, screen_vertices=screen, fused=fused)


def regress_landmarks(image: Tensor, detector: FaceDetector, regressor: FaceRegressor) -> FaceRegression:
    """68 landmarks and pose of the most confident face in ``image`` ``(3, H, W)`` (raises ``NoFaceError`` if none)."""
    boxes = detector.detect_faces(image)
    return regressor.from_boxes(image, boxes[:1], refine=True)


def render_turntable(
    vertices: Tensor, model: MorphableModel, texture: Tensor, yaws: Sequence[float], size: int
) -> Tensor:
    """The textured mesh ``vertices`` ``(V, 3)`` turned to each yaw (pitch = roll = 0), centred.

    Returns ``(Y, 3, size, size)`` renders on a grey background.
    """
    count, like = len(yaws), {"dtype": vertices.dtype, "device": vertices.device}
    yaw = torch.tensor(yaws, **like)
    rotation = euler_to_rotation(yaw, torch.zeros_like(yaw), torch.zeros_like(yaw))
    centre = (vertices.amax(dim=0) + vertices.amin(dim=0)) / 2
    extent = float((vertices.amax(dim=0) - vertices.amin(dim=0))[:2].max())
    scale = torch.full((count,), 0.85 * size / extent, **like)
    translation = torch.full((count, 2), size / 2, **like)
    screen = project((vertices - centre)[None].expand(count, -1, -1), rotation, scale, translation)
    background = torch.full((count, 3, size, size), 0.5, **like)
    images, _ = render_textured(screen, model.triangles, model.uv, texture[None], size, background=background)
    return images


def rerender_scores(
    images: Tensor, reconstruction: FaceReconstruction, model: MorphableModel
) -> tuple[dict[str, float], Tensor, Tensor]:
    """Render the textured mesh back into each view and score it against the image inside the face mask.

    images: ``(K, 3, H, W)`` in [0, 1]. Returns ``{"psnr", "ssim", "mask_fraction"}`` (means over views),
    the renders ``(K, 3, H, W)`` and masks ``(K, 1, H, W)``.
    """
    height, width = images.shape[-2:]
    renders, masks = render_textured(
        reconstruction.screen_vertices, model.triangles, model.uv, reconstruction.fused.texture[None], (height, width)
    )
    scores = {
        "psnr": float(masked_psnr(renders, images, masks).mean()),
        "ssim": float(masked_ssim(renders, images, masks).mean()),
        "mask_fraction": float(masks.mean()),
    }
    return scores, renders, masks


def _face_crop(image: Tensor, screen_vertices: Tensor, margin: float = 1.2) -> Tensor:
    """Square crop ``(3, s, s)`` of ``image`` around the projected mesh ``(V, 3)``, zero-padded past the border."""
    low, high = screen_vertices[:, :2].amin(dim=0), screen_vertices[:, :2].amax(dim=0)
    centre, half = (low + high) / 2, float((high - low).max()) * margin / 2
    x0, y0 = int(centre[0] - half), int(centre[1] - half)
    side = max(1, int(2 * half))
    height, width = image.shape[-2:]
    padded = F.pad(image, (max(0, -x0), max(0, x0 + side - width), max(0, -y0), max(0, y0 + side - height)))
    return padded[:, max(0, y0) : max(0, y0) + side, max(0, x0) : max(0, x0) + side]


def _summary_grid(
    path: Path, image: Tensor, reconstruction: FaceReconstruction, render: Tensor, mask: Tensor,
    turntable: Tensor, yaws: Sequence[float],
) -> None:
    """Row 1: input crop, re-render over the input, the mesh at each yaw.

    Row 2: the UV texture, where its texels came from (green view, blue mirror, red inpainted), view 0's weight.
    """
    screen = reconstruction.screen_vertices[0]
    overlay = render * mask + image * (1 - mask)
    fused = reconstruction.fused
    sources = SOURCE_COLOURS.to(fused.texture.device)[fused.source.long()].permute(2, 0, 1)
    weight = fused.view_weight[0][None].expand(3, -1, -1)
    rows = [
        [_face_crop(image, screen), _face_crop(overlay, screen), *turntable],
        [fused.texture, sources, weight],
    ]
    labels = [
        ["input", "re-render on input", *(f"yaw {yaw:+.0f}" for yaw in yaws)],
        ["UV texture", "view/mirror/inpaint", "view 0 weight"],
    ]
    save_image_grid(path, rows, labels)


def photo_to_mesh(
    image_path: str | Path,
    out_dir: str | Path,
    assets: AssetPaths,
    face_model: FaceModelName = "sfm",
    texture_size: int = 1024,
    yaws: Sequence[float] = DEFAULT_YAWS,
    progress: bool = True,
    device: str | torch.device = "cpu",
    tensorboard_dir: str | Path | None = None,
) -> dict:
    """Run photo -> textured mesh and write ``face.obj/.mtl/.png``, ``face.ply``, ``grid.png`` and ``metrics.json``.

    Everything runs on ``device``. Returns the metrics dictionary written to ``metrics.json`` (scores, pose,
    fit error, texel sources, rasteriser backend, seconds per stage). Raises ``ImageDecodeError`` or
    ``FileNotFoundError`` for an unreadable image and ``NoFaceError`` when the detector finds no face.
    """
    out_dir = Path(out_dir)
    stages = ["load image", "detect + 3DDFA landmarks", "fit face model", "fuse texture", "re-render + score",
              "write files"]
    timings: dict[str, float] = {}
    bar = tqdm(stages, desc="photo_to_mesh", disable=not progress)

    def stage(name: str) -> None:
        timings[name] = time.perf_counter()
        bar.set_postfix_str(name)

    stage("load image")
    photo = load_image(image_path).to(device)
    image = photo.float()[None] / 255.0
    detector = FaceDetector.from_checkpoint(assets.detector).to(device)
    regressor = FaceRegressor.from_files(assets.regressor, assets.param_stats, assets.landmark_bases).to(device)
    model = load_face_model(assets, face_model).to(device)
    bar.update()
    stage("detect + 3DDFA landmarks")
    regression = regress_landmarks(photo, detector, regressor)
    bar.update()
    stage("fit face model")
    fit = fit_views(model, regression.landmarks[:, :, :2])
    bar.update()
    stage("fuse texture")
    reconstruction = texture_views(model, image, fit, texture_size)
    bar.update()
    stage("re-render + score")
    scores, renders, masks = rerender_scores(image, reconstruction, model)
    turntable = render_turntable(reconstruction.vertices[0], model, reconstruction.fused.texture, yaws, 256)
    bar.update()
    stage("write files")
    fused = reconstruction.fused
    metrics = {
        "image": str(image_path),
        "face_model": face_model,
        "rasterizer_backend": active_backend(),
        "texture_size": texture_size,
        "rerender": scores,
        "pose_degrees": {"yaw": float(fit.yaw[0, 0]), "pitch": float(fit.pitch[0, 0]), "roll": float(fit.roll[0, 0])},
        "regressor_pose_degrees": {"yaw": float(regression.yaw[0]), "pitch": float(regression.pitch[0]),
                                   "roll": float(regression.roll[0])},
        "landmark_rmse_px": float(fit.rmse[0, 0]),
        "texel_sources": {
            source.name.lower(): fused.fraction(source) for source in TexelSource if source != TexelSource.OUTSIDE
        },
        "num_vertices": model.num_vertices,
        "num_triangles": int(model.triangles.shape[0]),
    }
    _write_outputs(out_dir, model, reconstruction, image[0], renders[0], masks[0], turntable, yaws, metrics, timings)
    if tensorboard_dir is not None:
        log_to_tensorboard(tensorboard_dir, Path(image_path).stem, out_dir, model, reconstruction, metrics)
    bar.update()
    bar.close()
    return metrics


def log_to_tensorboard(
    log_dir: str | Path, tag: str, out_dir: Path, model: MorphableModel, reconstruction: FaceReconstruction,
    metrics: dict,
) -> None:
    """Send the grid, the UV texture, the vertex-coloured mesh and the re-render scores to TensorBoard."""
    from torch.utils.tensorboard import SummaryWriter  # optional dependency of torch: imported only when asked

    with SummaryWriter(str(log_dir)) as writer:
        add_textured_mesh(writer, tag, out_dir / "grid.png", model, reconstruction)
        for name, value in metrics["rerender"].items():
            writer.add_scalar(f"{tag}/rerender_{name}", value)


def add_textured_mesh(writer: Any, tag: str, grid_path: Path, model: MorphableModel,
                      reconstruction: FaceReconstruction) -> None:
    """``tag/grid`` (the written grid PNG), ``tag/uv_texture`` and ``tag/mesh`` (vertex-coloured) on a SummaryWriter."""
    texture = reconstruction.fused.texture.detach().cpu().clamp(0, 1)
    colours = (texture_to_vertex_colors(texture, model.uv.cpu()).clamp(0, 1) * 255).to(torch.uint8)  # type: ignore[union-attr]
    writer.add_image(f"{tag}/grid", load_image(grid_path), dataformats="CHW")
    writer.add_image(f"{tag}/uv_texture", texture, dataformats="CHW")
    writer.add_mesh(f"{tag}/mesh", vertices=reconstruction.vertices[:1].detach().cpu(), colors=colours[None],
                    faces=model.triangles.cpu()[None].int())


def _write_outputs(
    out_dir: Path, model: MorphableModel, reconstruction: FaceReconstruction, image: Tensor, render: Tensor,
    mask: Tensor, turntable: Tensor, yaws: Sequence[float], metrics: dict, timings: dict[str, float],
) -> None:
    """Write every output into a temporary sibling folder, then move the files into ``out_dir`` together."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        vertices, texture = reconstruction.vertices[0], reconstruction.fused.texture
        write_obj(staging / "face.obj", vertices, model.triangles, model.uv, texture)
        write_ply(staging / "face.ply", vertices, model.triangles, texture_to_vertex_colors(texture, model.uv))
        _summary_grid(staging / "grid.png", image, reconstruction, render, mask, turntable, yaws)
        now = time.perf_counter()
        starts = list(timings.values()) + [now]
        metrics["seconds"] = {name: round(end - start, 3) for name, start, end in zip(timings, starts, starts[1:])}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        out_dir.mkdir(parents=True, exist_ok=True)
        for written in staging.iterdir():
            written.replace(out_dir / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
