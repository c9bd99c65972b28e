"""Our fused BFM texture against 3DDFA_V2's own single-view ``uv_tex`` on the shared photos; Markdown tables.

    python -m benchmarks.texture_vs_official --official /path/to/official_maps [--pictures docs/img] [--out FILE.json]
    python -m benchmarks.texture_vs_official            # our side only (no official maps)

Per photo (the most confident face, as the photo job uses), two BFM maps in the same ``process_uv`` layout:

* **ours**: the photo job's chain with its defaults (FaceBoxes -> 3DDFA_V2 single crop -> the regressor's own mesh
  and pose, ``reconstruction.regressor_geometry`` -> ``reconstruction.texture_views``), as
  ``scripts/photo_to_mesh.py`` makes it;
* **official**: 3DDFA_V2's ``uv_tex`` map, read from ``--official`` (``<photo stem>.png``, the map as its code
  writes it, RGB on disk), made outside this repository (3DDFA_V2 is not a dependency).

Also per photo: the **skin mask** that fed our map against the hand-drawn skin of the photo
(``tests/facetex/data/skin/<stem>.json``, polygons drawn by eye: face skin with brows, eyes, lips and a beard, without
hair, ears, neck, background, clothes, glasses' arms or the mouth interior): precision and recall; the **seams** of our
map (:func:`seam_ratio`); with ``--default-model`` the Surrey-model map of the same chain (rotation anchored to the
regressor's) scored on its own mesh inside the hand-drawn skin, for the choice of the default model.

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
from facetex.face3d.export import image_to_uint8, save_image_grid
from facetex.face3d.face_mask import inner_face_vertices, polygon_mask
from facetex.face3d.image_io import load_image
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.pipeline import AssetPaths, load_face_model, regress_face
from facetex.face3d.rasterizer import interpolate
from facetex.face3d.reconstruction import fit_views, regressor_geometry, skin_masks, texture_views
from facetex.face3d.regressor import FaceRegression, FaceRegressor, apply_pose, crop_pose_to_image
from facetex.face3d.render import score_views
from facetex.face3d.synthetic import render_textured
from facetex.face3d.texture import FusedTexture, FusionConfig, TexelSource, build_uv_chart, layout_uv, sample_view

PHOTOS = ("ffhq_00012.png", "ffhq_00009.png", "emma.jpg", "jianzhu_guo.jpg", "two_faces.jpg")
MAPS = ("official", "ours")
SKIN_POLYGONS = Path(__file__).resolve().parents[1] / "tests" / "facetex" / "data" / "skin"
SEAM_CLEARANCE = 3  # texels: the interior of a map is its seen texels this far from any hand-over line
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


def save_image(path: Path, image: Tensor) -> None:
    """Write ``(3, H, W)`` in [0, 1] as an 8-bit PNG."""
    Image.fromarray(image_to_uint8(image)).save(path)


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


def hand_drawn_skin(stem: str, height: int, width: int, folder: Path = SKIN_POLYGONS) -> Tensor | None:
    """``(H, W)`` bool, the hand-drawn skin of photo ``stem`` (``<stem>.json``: ``skin`` and ``not_skin`` polygons in
    image pixels), or None when there is no such file."""
    path = folder / f"{stem}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    skin = torch.zeros(height, width, dtype=torch.bool)
    for polygon in data["skin"]:
        skin |= polygon_mask(torch.tensor(polygon, dtype=torch.float64), height, width)
    for polygon in data.get("not_skin", []):
        skin &= ~polygon_mask(torch.tensor(polygon, dtype=torch.float64), height, width)
    return skin


def precision_recall(mask: Tensor, truth: Tensor) -> tuple[float, float]:
    """Precision (share of ``mask`` inside ``truth``) and recall (share of ``truth`` inside ``mask``), both ``(H, W)``."""
    overlap = float((mask & truth).sum())
    return overlap / max(1.0, float(mask.sum())), overlap / max(1.0, float(truth.sum()))


def seam_ratio(texture: Tensor, source: Tensor, blend: Tensor, region: Tensor) -> dict[str, float]:
    """How much a map's hand-over lines stand out: ``(gradient on them) / (gradient in the map's interior)``.

    A hand-over is where a texel's origin changes between 4-neighbours inside ``region``: from one view to another
    (the view with the largest blend share) or between seen, mirrored and inpainted texels (``source``). The gradient
    is the largest channel's ``|I(x + 1) - I(x)| + |I(y + 1) - I(y)|``; the interior is the seen texels at least
    ``SEAM_CLEARANCE`` texels from every hand-over. 1 means a hand-over is no edgier than the face itself; a seam (a
    brightness step, a hard fill edge) raises it.
    """
    label = torch.where(source == TexelSource.VIEW, 16 + blend.argmax(dim=0), source.long())
    label = torch.where(region, label, -1)
    right = (label[:, 1:] != label[:, :-1]) & region[:, 1:] & region[:, :-1]
    down = (label[1:] != label[:-1]) & region[1:] & region[:-1]
    lines = torch.zeros_like(region)
    lines[:, 1:] |= right
    lines[:, :-1] |= right
    lines[1:] |= down
    lines[:-1] |= down
    dx = torch.zeros_like(texture)
    dy = torch.zeros_like(texture)
    dx[:, :, :-1] = (texture[:, :, 1:] - texture[:, :, :-1]).abs()
    dy[:, :-1] = (texture[:, 1:] - texture[:, :-1]).abs()
    gradient = (dx + dy).amax(dim=0)
    near = torch.nn.functional.max_pool2d(lines[None, None].float(), 2 * SEAM_CLEARANCE + 1, stride=1,
                                          padding=SEAM_CLEARANCE)[0, 0] > 0
    interior = region & (source == TexelSource.VIEW) & ~near
    line_mean, inner_mean = float(gradient[lines].mean()), float(gradient[interior].mean())
    return {"handover_gradient": line_mean, "interior_gradient": inner_mean,
            "seam_ratio": line_mean / max(inner_mean, 1e-12), "handover_texels": int(lines.sum())}


def surrey_row(model: MorphableModel, image: Tensor, regression: FaceRegression, size: int,
               truth: Tensor | None) -> dict[str, float]:
    """The Surrey-model map of the photo job's chain (rotation anchored to the regressor's), re-rendered on its own
    mesh and scored inside the hand-drawn skin it covers; its mask's precision/recall; the midline strip."""
    fit = fit_views(model, regression.landmarks[:, :, :2], rotations=regression.rotation)
    reconstruction = texture_views(model, image, fit, size, landmarks=regression.landmarks[:, :, :2])
    texture = reconstruction.fused.texture
    renders, covered = render_textured(reconstruction.screen_vertices, model.triangles, layout_uv(model.uv, size),
                                       texture[None], tuple(image.shape[-2:]))
    row: dict[str, float] = {"rotation_change_degrees": float(fit.rotation_change.max())}
    column, half_width = midline_column(model, size), round(MIDLINE_HALF_WIDTH * size)
    row["midline_strip"], row["midline_steps"] = midline_strip(texture, face_region(model, size), column, half_width)
    if truth is not None and reconstruction.masks is not None:
        scored = covered[0, 0].bool() & truth
        psnr, _ = score_views(renders, image, scored[None, None].float())
        row["psnr_in_hand_drawn_skin"] = float(psnr[0])
        row["hand_drawn_skin_covered"] = float(scored.sum()) / max(1.0, float(truth.sum()))
        row["mask_precision"], row["mask_recall"] = precision_recall(reconstruction.masks[0], truth)
    return row


def compare_photo(photo: Path, face: dict[str, Any], model: MorphableModel, detector: FaceDetector,
                  regressor: FaceRegressor, size: int, official: Tensor | None,
                  default_model: MorphableModel | None = None) -> tuple[dict[str, Any], list[Tensor], FusedTexture]:
    """The numbers of one photo (see the module docstring), its picture's cells and our fused map; with
    ``default_model`` (the Surrey model), also that model's row (``surrey`` in the numbers)."""
    pixels = load_image(photo)
    image = pixels.float()[None] / 255.0
    regression, _ = regress_face(pixels, detector, regressor)
    fit, screen = regressor_geometry(model, regression)
    reconstruction = texture_views(model, image, fit, size, screen_vertices=screen,
                                   landmarks=regression.landmarks[:, :, :2])
    ours = reconstruction.fused
    truth = hand_drawn_skin(photo.stem, *image.shape[-2:])
    row: dict[str, Any] = {"photo": photo.name}
    if truth is not None and reconstruction.masks is not None:
        row["mask_precision"], row["mask_recall"] = precision_recall(reconstruction.masks[0], truth)
        own, own_covered = render_textured(screen, model.triangles, layout_uv(model.uv, size), ours.texture[None],
                                           tuple(image.shape[-2:]))
        scored = own_covered[0, 0].bool() & truth
        row["bfm_in_hand_drawn_skin"] = {"psnr": float(score_views(own, image, scored[None, None].float())[0][0]),
                                         "covered": float(scored.sum()) / max(1.0, float(truth.sum()))}
    if default_model is not None:
        row["surrey"] = surrey_row(default_model, image, regression, size, truth)
    mesh = official_mesh(model, face)
    top, left, bottom, right = crop_box(mesh[0], *image.shape[-2:])  # the rest is scored on the face's crop
    image = image[..., top:bottom, left:right].contiguous()
    mesh = mesh - mesh.new_tensor([left, top, 0.0])
    masks = skin_masks(model, image, mesh, FusionConfig(),
                       regression.landmarks[:, :, :2] - regression.landmarks.new_tensor([left, top]))
    maps = {"ours": ours.texture} if official is None else {"official": official, "ours": ours.texture}

    region = face_region(model, size)
    chart = build_uv_chart(layout_uv(model.uv, size), model.triangles, size)
    _, visible, weight = sample_view(image[0], mesh[0], model.triangles, chart, FusionConfig(silhouette_margin=0.0))
    seen = visible & (weight > 0)
    uv = layout_uv(model.uv, size)
    renders, covered = render_textured(mesh.expand(len(maps), -1, -1), model.triangles, uv, torch.stack(list(maps.values())),
                                       tuple(image.shape[-2:]))
    score_mask = covered * masks[:, None].float() if masks is not None else covered
    psnr, ssim = score_views(renders, image.expand(len(maps), -1, -1, -1), score_mask.expand(len(maps), -1, -1, -1))
    column = midline_column(model, size)
    row.update({"face_region_texels": int(region.sum()), "seen_in_photo": float(seen[region].float().mean()),
                "score_mask_pixels": int(score_mask[0].sum()), "midline_column": column, "maps": {}})
    for index, (name, texture) in enumerate(maps.items()):
        holds = texture.sum(dim=0) > 0 if name == "official" else ours.source == TexelSource.VIEW
        sources = {} if name == "official" else {
            source.name.lower(): float((ours.source == source)[region].float().mean())
            for source in (TexelSource.SYMMETRY, TexelSource.INPAINTED)}
        strip, steps = midline_strip(texture, region, column, round(MIDLINE_HALF_WIDTH * size))
        row["maps"][name] = {"holds_photo_colour": float(holds[region].float().mean()),
                             "holds_seen_colour": float((holds & seen)[region].float().mean()), **sources,
                             "psnr": float(psnr[index]), "ssim": float(ssim[index]),
                             "midline_strip": strip, "midline_steps": steps}
    row["maps"]["ours"].update(seam_ratio(ours.texture, ours.source, ours.blend_weight, ours.chart))
    overlays = [renders[k] * covered[k] + image[0] * (1 - covered[k]) for k in range(len(maps))]
    return row, [image[0], *maps.values(), *overlays], ours


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
        if "surrey" in row:
            m = row["surrey"]
            lines.append(f"| `{row['photo']}` | ours, Surrey model | {m['midline_strip']:.4f} | {m['midline_steps']:.2f} |")
    lines += ["", "| photo | skin mask precision | recall | seam ratio (hand-overs / interior) | hand-over texels |",
              "| --- | --- | --- | --- | --- |"]
    for row in rows:
        m = row["maps"]["ours"]
        mask = f"{row['mask_precision']:.3f} | {row['mask_recall']:.3f}" if "mask_precision" in row else "- | -"
        lines.append(f"| `{row['photo']}` | {mask} | {m['seam_ratio']:.2f} | {m['handover_texels']} |")
    if any("surrey" in row for row in rows):
        lines += ["", "| photo | model | re-render PSNR in the hand-drawn skin (own mesh) | hand-drawn skin covered "
                  "| mask precision / recall | rotation moved |", "| --- | --- | --- | --- | --- | --- |"]
        for row in rows:
            m = row.get("surrey", {})
            if "psnr_in_hand_drawn_skin" in m:
                lines.append(f"| `{row['photo']}` | Surrey | {m['psnr_in_hand_drawn_skin']:.2f} dB "
                             f"| {m['hand_drawn_skin_covered']:.1%} | {m['mask_precision']:.3f} / "
                             f"{m['mask_recall']:.3f} | {m['rotation_change_degrees']:.2f} deg |")
            if "bfm_in_hand_drawn_skin" in row:
                b = row["bfm_in_hand_drawn_skin"]
                lines.append(f"| `{row['photo']}` | BFM (3DDFA_V2's mesh) | {b['psnr']:.2f} dB | {b['covered']:.1%} "
                             f"| {row['mask_precision']:.3f} / {row['mask_recall']:.3f} | 0 (the regressor's) |")
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
                        help="also the Surrey-model map (anchored fit): scored on its own mesh in the hand-drawn skin, "
                             "its mask and midline, to compare with the BFM default")
    parser.add_argument("--maps-out", type=Path, default=None,
                        help="folder to write our maps into (<stem>.png, <stem>_source.png: the texel sources x 60)")
    parser.add_argument("--before", type=Path, default=None,
                        help="folder of an earlier version's maps (--maps-out): writes texture_before_after_<stem>.png")
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
            row, cells, ours = compare_photo(args.assets / "faces" / name, faces[name], model, detector, regressor,
                                             args.size, official, default_model)
            rows.append(row)
            stem = Path(name).stem
            if args.maps_out is not None:
                args.maps_out.mkdir(parents=True, exist_ok=True)
                save_image(args.maps_out / f"{stem}.png", ours.texture)
                save_image(args.maps_out / f"{stem}_source.png", (ours.source.float() * 60 / 255).expand(3, -1, -1))
            if args.pictures is not None and args.before is not None and (args.before / f"{stem}.png").is_file():
                before = read_official_map(args.before, stem, args.size)
                before_source = read_official_map(args.before, f"{stem}_source", args.size)
                after_source = (ours.source.float() * 60 / 255).expand(3, -1, -1)
                window = (slice(None), slice(args.size // 8, 7 * args.size // 8), slice(args.size // 8, 7 * args.size // 8))
                save_image_grid(args.pictures / f"texture_before_after_{stem}.png",
                                [[before[window], ours.texture[window]], [before_source[window], after_source[window]]],
                                [["before", "after"], ["before: sources (view / mirror / inpainted)", "after: sources"]],
                                cell_size=2 * PICTURE_CELL)
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
