"""Our fused BFM texture against 3DDFA_V2's own single-view ``uv_tex`` on the shared photos; Markdown tables.

    python -m benchmarks.texture_vs_official --official /path/to/official_maps [--pictures docs/img] [--out FILE.json]
    python -m benchmarks.texture_vs_official            # our side only (no official maps)

Per photo (the most confident face, as the photo job uses), three BFM maps in the same ``process_uv`` layout:

* **ours**: the photo job's chain with its defaults and ``--model bfm`` (FaceBoxes -> 3DDFA_V2 single crop ->
  landmark fit of the BFM mean face -> ``reconstruction.texture_views``), as ``scripts/photo_to_mesh.py`` makes it;
* **ours on the official mesh**: the same fusion (``skin_masks`` + ``fuse_texture``) fed the official mesh below
  instead of our fit, so only the texture method differs from 3DDFA_V2's;
* **official**: 3DDFA_V2's ``uv_tex`` map, read from ``--official`` (``<photo stem>.png``, the map as its code
  writes it, RGB on disk), made outside this repository (3DDFA_V2 is not a dependency).

The **official mesh** is the BFM mean face (the dense bases are not among the shared assets) posed by the official
62 parameters and roi box of ``official_outputs.json`` through ``recon_vers`` + ``similar_transform``
(``regressor.crop_pose_to_image``, equal to the official code to 0.002 px). Every map is re-rendered on it, in the
photo, and scored (PSNR/SSIM) inside the photo's face-skin mask on that mesh (``reconstruction.skin_masks``), so
only the texture differs. Coverage is over the *face region*: chart texels inside the landmark outline (jaw and
raised brows, ``face_mask.inner_face_vertices``). A texel *holds photo colour* when it was read from the photo
(official: every chart texel, visible or not; ours: ``TexelSource.VIEW``); *seen* counts those of them whose surface
point the photo shows (visible on the official mesh and facing the camera). The midline strip score is
:func:`midline_strip` on each map (``--default-model``: also on the photo job's default Surrey-model map). ``--pictures`` writes ``texture_official_<stem>.png`` (maps and re-renders).
Photos and weights come from ``../shared/assets`` (or ``$SHARED_ASSETS``, or ``--assets``).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from benchmarks.machine import ASSETS, benchmark_parser, machine, machine_line, publish, use_threads
from facetex.face3d.detector import FaceDetector
from facetex.face3d.export import save_image_grid
from facetex.face3d.face_mask import inner_face_vertices
from facetex.face3d.image_io import load_image
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.pipeline import AssetPaths, load_face_model, regress_face
from facetex.face3d.rasterizer import interpolate
from facetex.face3d.reconstruction import fit_views, skin_masks, texture_views
from facetex.face3d.regressor import FaceRegressor, apply_pose, crop_pose_to_image
from facetex.face3d.render import score_views
from facetex.face3d.synthetic import render_textured
from facetex.face3d.texture import FusionConfig, TexelSource, build_uv_chart, fuse_texture, layout_uv, sample_view

PHOTOS = ("ffhq_00012.png", "ffhq_00009.png", "emma.jpg", "jianzhu_guo.jpg", "two_faces.jpg")
MAPS = ("official", "ours", "ours on the official mesh")
PICTURE_CELL = 192  # pixels per cell of the pictures
MIDLINE_HALF_WIDTH = 1 / 128  # of the map side: the midline band of midline_strip (8 texels at 1024)


def official_mesh(model: MorphableModel, face: dict[str, Any]) -> Tensor:
    """``(1, V, 3)`` the BFM mean face in the photo, posed by an ``official_outputs.json`` face's params + roi box."""
    params = torch.tensor(face["param_62"], dtype=torch.float64)[None]
    image_pose = crop_pose_to_image(params[:, :12].reshape(1, 3, 4), torch.tensor([face["roi_box"]], dtype=torch.float64))
    return apply_pose(image_pose, model.mean.double()[None]).float()


def face_region(model: MorphableModel, size: int) -> Tensor:
    """``(T, T)`` bool, chart texels inside the face's landmark outline (jaw line and raised brows)."""
    landmarks = torch.full((68, 3), float("nan"))
    landmarks[model.landmark_ids] = model.mean[model.landmark_vertices]
    inner = inner_face_vertices(model.mean, landmarks).float()
    chart = build_uv_chart(layout_uv(model.uv, size), model.triangles, size)
    return chart.mask & (interpolate(inner[None, :, None], model.triangles, chart.fragments)[0, ..., 0] > 0.5)


def midline_column(model: MorphableModel, size: int) -> int:
    """The map column the face's midline runs down: the median ``u`` of the vertices on the mirror plane."""
    if model.uv is None:
        raise ValueError("the face model has no texture coordinates")
    on_plane = model.mean[:, 0].abs() <= 1e-3 * float(model.mean[:, 0].abs().max())
    return round(float(layout_uv(model.uv[on_plane], size)[:, 0].median()) * size - 0.5)


def midline_strip(texture: Tensor, region: Tensor, column: int, half_width: int) -> tuple[float, float]:
    """How much a map's midline band stands out: ``(strip, steps)``.

    ``strip``: the mean over the rows of ``region`` of the largest-channel absolute difference between the mean
    colour of the band ``|j - c| <= w`` around the midline column ``c`` and that of its flanks ``w < |j - c| <= 3 w``
    (``w = half_width``): a strip down the midline (background or an inpainted seam along the nose ridge, a
    mirror-fill border) of another colour than the face beside it raises it, a smooth face keeps it near the level
    of the photo's own (3DDFA_V2's map of the same photo). ``steps``: the largest mean absolute horizontal colour
    step ``|I[:, j + 1] - I[:, j]|`` of any column of the band, over the mean step of the flank columns (> 1: an
    edge runs along the band).

    texture: ``(3, T, T)`` in [0, 1]; region: ``(T, T)`` bool (rows count where the whole band and flanks are in it).
    """
    band = slice(column - half_width, column + half_width + 1)
    flanks = [slice(column - 3 * half_width, column - half_width), slice(column + half_width + 1, column + 3 * half_width + 1)]
    rows = region[:, column - 3 * half_width: column + 3 * half_width + 1].all(dim=1)
    if not rows.any():
        raise ValueError(f"no row of the face region spans columns {column} +- {3 * half_width}")
    inner = texture[:, rows, band].mean(dim=2)
    outer = torch.cat([texture[:, rows, flank] for flank in flanks], dim=2).mean(dim=2)
    strip = float((inner - outer).abs().amax(dim=0).mean())
    step = (texture[:, rows, 1:] - texture[:, rows, :-1]).abs().mean(dim=(0, 1))  # (T - 1,): column j to j + 1
    band_steps = step[column - half_width - 1: column + half_width + 1]
    flank_steps = torch.cat([step[column - 3 * half_width: column - half_width - 1],
                             step[column + half_width + 1: column + 3 * half_width]])
    return strip, float(band_steps.max() / flank_steps.mean().clamp_min(1e-12))


def read_official_map(folder: Path, stem: str, size: int) -> Tensor:
    """``(3, T, T)`` in [0, 1]: 3DDFA_V2's ``uv_tex`` map ``<stem>.png`` of ``folder``."""
    path = folder / f"{stem}.png"
    if not path.is_file():
        raise SystemExit(f"--official {folder}: no {path.name}; write 3DDFA_V2's uv_tex map of {stem} there "
                         f"(uv_h = uv_w = {size}, as its demo writes it with cv2.imwrite)")
    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0
    if image.shape[-2:] != (size, size):
        raise SystemExit(f"{path} is {tuple(image.shape[-2:])}, not {size} x {size}: pass --size {image.shape[-1]}")
    return image


def crop_box(screen: Tensor, height: int, width: int, margin: float = 1.15) -> tuple[int, int, int, int]:
    """A square ``(top, left, bottom, right)`` around the projected mesh ``(V, 3)``, clipped to the image."""
    low, high = screen[:, :2].amin(dim=0), screen[:, :2].amax(dim=0)
    centre, half = (low + high) / 2, float((high - low).max()) * margin / 2
    left, top = max(0, int(centre[0] - half)), max(0, int(centre[1] - half))
    return top, left, min(height, int(centre[1] + half)), min(width, int(centre[0] + half))


def default_midline(model: MorphableModel, image: Tensor, landmarks: Tensor, size: int) -> dict[str, float]:
    """:func:`midline_strip` of the photo job's map with another face model (its default, the Surrey model)."""
    texture = texture_views(model, image, fit_views(model, landmarks), size).fused.texture
    column, half_width = midline_column(model, size), round(MIDLINE_HALF_WIDTH * size)
    strip, steps = midline_strip(texture, face_region(model, size), column, half_width)
    return {"midline_strip": strip, "midline_steps": steps}


def compare_photo(photo: Path, face: dict[str, Any], model: MorphableModel, detector: FaceDetector,
                  regressor: FaceRegressor, size: int, official: Tensor | None,
                  default_model: MorphableModel | None = None) -> tuple[dict[str, Any], list[Tensor]]:
    """The numbers of one photo (see the module docstring) and its picture's cells; with ``default_model``, also
    the midline strip of the photo job's default map (``default_model`` in ``row``)."""
    pixels = load_image(photo)
    image = pixels.float()[None] / 255.0
    regression, _ = regress_face(pixels, detector, regressor)
    ours = texture_views(model, image, fit_views(model, regression.landmarks[:, :, :2]), size).fused
    default = None if default_model is None else default_midline(default_model, image, regression.landmarks[:, :, :2],
                                                                   size)
    mesh = official_mesh(model, face)
    top, left, bottom, right = crop_box(mesh[0], *image.shape[-2:])  # the rest is scored on the face's crop
    image = image[..., top:bottom, left:right].contiguous()
    mesh = mesh - mesh.new_tensor([left, top, 0.0])
    config = FusionConfig()
    masks = skin_masks(model, image, mesh, config)
    on_official = fuse_texture(image, mesh, model.triangles, model.uv, size, model.symmetry, config, masks)
    maps = {"ours": ours.texture, "ours on the official mesh": on_official.texture}
    if official is not None:
        maps = {"official": official, **maps}

    region = face_region(model, size)
    chart = build_uv_chart(layout_uv(model.uv, size), model.triangles, size)
    _, visible, weight = sample_view(image[0], mesh[0], model.triangles, chart,
                                     FusionConfig(grazing_cutoff=89.9, silhouette_margin=0.0))
    seen = visible & (weight > 0)
    uv = layout_uv(model.uv, size)
    renders, covered = render_textured(mesh.expand(len(maps), -1, -1), model.triangles, uv, torch.stack(list(maps.values())),
                                       tuple(image.shape[-2:]))
    score_mask = covered * masks[:, None].float() if masks is not None else covered
    psnr, ssim = score_views(renders, image.expand(len(maps), -1, -1, -1), score_mask.expand(len(maps), -1, -1, -1))
    column = midline_column(model, size)
    row: dict[str, Any] = {"photo": photo.name, "face_region_texels": int(region.sum()),
                           "seen_in_photo": float(seen[region].float().mean()),
                           "score_mask_pixels": int(score_mask[0].sum()), "midline_column": column, "maps": {}}
    for index, (name, texture) in enumerate(maps.items()):
        if name == "official":
            holds = texture.sum(dim=0) > 0  # uv_tex leaves black only outside the chart
        else:
            holds = (ours if name == "ours" else on_official).source == TexelSource.VIEW
        sources = {} if name == "official" else {
            source.name.lower(): float(((ours if name == "ours" else on_official).source == source)[region].float().mean())
            for source in (TexelSource.SYMMETRY, TexelSource.INPAINTED)}
        strip, steps = midline_strip(texture, region, column, round(MIDLINE_HALF_WIDTH * size))
        row["maps"][name] = {"holds_photo_colour": float(holds[region].float().mean()),
                             "holds_seen_colour": float((holds & seen)[region].float().mean()), **sources,
                             "psnr": float(psnr[index]), "ssim": float(ssim[index]),
                             "midline_strip": strip, "midline_steps": steps}
    overlays = [renders[k] * covered[k] + image[0] * (1 - covered[k]) for k in range(len(maps))]
    cells = [image[0], *maps.values(), *overlays]
    if default is not None:
        row["default_model"] = default
    return row, cells


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown tables: coverage and re-render scores per photo and map, then the midline strip."""
    lines = ["| photo | map | face texels holding photo colour | of them seen in the photo | mirror / inpainted "
             "| re-render PSNR in the face mask | SSIM |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        for name, m in row["maps"].items():
            filled = "-" if "symmetry" not in m else f"{m['symmetry']:.1%} / {m['inpainted']:.1%}"
            lines.append(f"| `{row['photo']}` | {name} | {m['holds_photo_colour']:.1%} | {m['holds_seen_colour']:.1%} "
                         f"| {filled} | {m['psnr']:.2f} dB | {m['ssim']:.3f} |")
    lines += ["", "| photo | map | midline strip (band vs flanks) | largest step in the band / flank steps |",
              "| --- | --- | --- | --- |"]
    for row in rows:
        for name, m in row["maps"].items():
            lines.append(f"| `{row['photo']}` | {name} | {m['midline_strip']:.4f} | {m['midline_steps']:.2f} |")
        if "default_model" in row:
            m = row["default_model"]
            lines.append(f"| `{row['photo']}` | ours, Surrey model (the default) | {m['midline_strip']:.4f} "
                         f"| {m['midline_steps']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = benchmark_parser(__doc__.split("\n")[0])
    parser.add_argument("--official", type=Path, default=None,
                        help="folder of 3DDFA_V2's uv_tex maps, <photo stem>.png (without it: our side only)")
    parser.add_argument("--assets", type=Path, default=ASSETS, help="folder laid out like shared/assets")
    parser.add_argument("--size", type=int, default=1024, help="map side in texels (the official maps' too)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), help="file names under ASSETS/faces")
    parser.add_argument("--pictures", type=Path, default=None,
                        help="folder to write texture_official_<stem>.png into (photo | maps | re-renders)")
    parser.add_argument("--default-model", action="store_true",
                        help="also the midline strip of the photo job's default map (Surrey model, its own layout)")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    use_threads(args.threads)
    if not (args.assets / "3ddfa_v2" / "official_outputs.json").is_file():
        print(f"no shared assets under {args.assets} (official_outputs.json, photos, weights): nothing measured")
        return {}
    assets = AssetPaths.from_folder(args.assets)
    outputs = json.loads((args.assets / "3ddfa_v2" / "official_outputs.json").read_text())
    faces = {Path(entry["image"]).name: entry["faces"][0] for entry in outputs["images"] if not entry["flipped"]}
    model = load_face_model(assets, "bfm")
    default_model = load_face_model(assets, "sfm") if args.default_model else None
    detector = FaceDetector.from_checkpoint(assets.detector)
    regressor = FaceRegressor.from_files(assets.regressor, assets.param_stats, assets.landmark_bases)
    rows = []
    with torch.no_grad():
        for name in tqdm(args.photos, desc="photos"):
            official = None if args.official is None else read_official_map(args.official, Path(name).stem, args.size)
            row, cells = compare_photo(args.assets / "faces" / name, faces[name], model, detector, regressor,
                                       args.size, official, default_model)
            rows.append(row)
            if args.pictures is not None:
                labels = ["photo", *(f"{k} map" for k in row["maps"]),
                          *(f"{k} {m['psnr']:.1f} dB" for k, m in row["maps"].items())]
                half = 1 + len(row["maps"])
                save_image_grid(args.pictures / f"texture_official_{Path(name).stem}.png",
                                [cells[:half], [cells[0], *cells[half:]]], [labels[:half], ["photo", *labels[half:]]],
                                cell_size=PICTURE_CELL)
    facts = machine()
    report = {"machine": facts, "size": args.size, "official": str(args.official), "photos": rows}
    return publish(report, f"{machine_line(facts)}\n\n{table(rows)}", args.out)


if __name__ == "__main__":
    main()
