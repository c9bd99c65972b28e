"""The one writer of a face folder, and what goes into it for the two ways a face is made.

Every face folder holds the textured mesh (``face.obj`` + ``face.mtl`` + ``face.png``), the
vertex-coloured ``face.ply``, a labelled ``grid.png`` and ``metrics.json``; a folder of the 3D-GANTex
multi-view pipeline also holds the K synthesised views, the crops and the gallery's texture maps.
:class:`FaceFolder` says what one folder holds, :func:`write_face_folder` writes it (staged in a
hidden sibling, moved in only when every file is written: ``foundation.files.staged_folder``), and

* :func:`photo_folder`: one photo through the geometry pipeline (``app.photo_to_mesh``). Grid row 1:
  the input crop, the re-render over it, the mesh at each yaw; row 2: the UV texture, where its
  texels came from (green view, blue mirror, red inpainted) and view 0's weight;
* :func:`multiview_folder`: one ``MultiViewResult`` (``callbacks.face_writer``). It adds
  ``views/view_KK_asked±A_measured±M.png`` (``measured_none`` where no face was detected),
  ``views.json`` (strength, asked and measured yaw of each view), ``photo.jpg``, ``aligned.png``,
  ``inversion.png`` and ``maps/`` (``facetex.gallery.maps``). Grid row 1: the aligned input, the
  inversion and the K views labelled with their measured yaw; row 2: the UV texture, its texel
  sources and the mesh alone at each used view's yaw (a grey cell for a view left out).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from facetex.face3d.export import image_to_uint8, save_image_grid, write_obj, write_ply
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.reconstruction import FaceReconstruction
from facetex.face3d.texture import texture_to_vertex_colors
from facetex.gallery import write_photo, write_texture_maps
from facetex.gallery.maps import texel_source_image
from facetex.gan.multiview import MultiViewResult
from foundation.files import staged_folder


@dataclass
class FaceFolder:
    """What one face folder holds.

    model, reconstruction: view 0's mesh with the fused texture -> ``face.obj/.mtl/.png`` and ``face.ply``.
    grid_rows, grid_labels: the cells ``(3, H, W)`` of ``grid.png`` and their captions, row by row.
    metrics: ``metrics.json``, written last.
    images: further PNGs ``(3, H, W)`` by path inside the folder (``views/...``, ``aligned.png``, ...).
    tables: further JSON files by path inside the folder (``views.json``).
    photo: the input photo, copied small and upright as ``photo.jpg`` for the gallery.
    map_views: the photo's view index of each view the texture was fused from -> ``maps/`` for the gallery.
    """

    model: MorphableModel
    reconstruction: FaceReconstruction
    grid_rows: list[list[Tensor]]
    grid_labels: list[list[str]]
    metrics: dict[str, Any]
    images: dict[str, Tensor] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    photo: str | Path | None = None
    map_views: list[int] | None = None


FOLDER_OVERHEAD_BYTES = 8 * 2**20  # meshes (OBJ, PLY, the gallery's mesh.js), grid, photo, metrics: 2.5 MB measured


def face_folder_bytes(texture_size: int) -> int:
    """An upper bound of the bytes a face folder with a ``texture_size``-texel map takes on disk (the map's PNG
    at worst uncompressed, plus :data:`FOLDER_OVERHEAD_BYTES`), for a free-space check before the work."""
    return 3 * texture_size**2 + FOLDER_OVERHEAD_BYTES


def write_face_folder(out_dir: Path, folder: FaceFolder,
                      stamp: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Write ``folder`` as ``out_dir``, replacing an older ``out_dir`` only once every file is written.

    ``stamp`` is called with the metrics just before ``metrics.json`` is written (e.g. to add the time spent).
    """
    model, fused = folder.model, folder.reconstruction.fused
    vertices, texture = folder.reconstruction.vertices[0], fused.texture
    with staged_folder(out_dir) as staging:
        write_obj(staging / "face.obj", vertices, model.triangles, model.uv, texture)
        write_ply(staging / "face.ply", vertices, model.triangles, texture_to_vertex_colors(texture, model.uv))
        for name, image in folder.images.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image_to_uint8(image)).save(staging / name)
        for name, table in folder.tables.items():
            (staging / name).write_text(json.dumps(table, indent=2))
        save_image_grid(staging / "grid.png", folder.grid_rows, folder.grid_labels)
        if folder.photo is not None:
            write_photo(folder.photo, staging)
        if folder.map_views is not None:
            write_texture_maps(staging / "maps", fused, folder.map_views)
        if stamp is not None:
            stamp(folder.metrics)
        (staging / "metrics.json").write_text(json.dumps(folder.metrics, indent=2))


def _face_crop(image: Tensor, screen_vertices: Tensor, margin: float = 1.2) -> Tensor:
    """Square crop ``(3, s, s)`` of ``image`` around the projected mesh ``(V, 3)``, zero-padded past the border."""
    low, high = screen_vertices[:, :2].amin(dim=0), screen_vertices[:, :2].amax(dim=0)
    centre, half = (low + high) / 2, float((high - low).max()) * margin / 2
    x0, y0 = int(centre[0] - half), int(centre[1] - half)
    side = max(1, int(2 * half))
    height, width = image.shape[-2:]
    padded = F.pad(image, (max(0, -x0), max(0, x0 + side - width), max(0, -y0), max(0, y0 + side - height)))
    return padded[:, max(0, y0) : max(0, y0) + side, max(0, x0) : max(0, x0) + side]


def photo_folder(model: MorphableModel, reconstruction: FaceReconstruction, image: Tensor, render: Tensor,
                 mask: Tensor, turntable: Tensor, yaws: Sequence[float], metrics: dict[str, Any]) -> FaceFolder:
    """The folder of one photo: ``image`` ``(3, H, W)``, its re-render ``(3, H, W)`` and mask ``(1, H, W)``,
    the mesh at each yaw ``(Y, 3, t, t)``."""
    screen = reconstruction.screen_vertices[0]
    overlay = render * mask + image * (1 - mask)
    fused = reconstruction.fused
    weight = fused.view_weight[0][None].expand(3, -1, -1)
    rows = [
        [_face_crop(image, screen), _face_crop(overlay, screen), *turntable],
        [fused.texture, texel_source_image(fused), weight],
    ]
    labels = [
        ["input", "re-render on input", *(f"yaw {yaw:+.0f}" for yaw in yaws)],
        ["UV texture", "view/mirror/inpaint", "view 0 weight"],
    ]
    return FaceFolder(model, reconstruction, rows, labels, metrics)


def _yaw_tag(value: float | None) -> str:
    return "none" if value is None else f"{value:+.1f}"


def view_file_name(index: int, asked: float, measured: float | None) -> str:
    """``view_03_asked+10.0_measured+9.4.png`` (``measured_none`` when the view's yaw could not be measured)."""
    measured_tag = "_none" if measured is None else _yaw_tag(measured)
    return f"view_{index:02d}_asked{_yaw_tag(asked)}_measured{measured_tag}.png"


def multiview_folder(name: str, photo_path: str, result: MultiViewResult,
                     extra_metrics: dict[str, Any] | None = None) -> FaceFolder:
    """The folder of one photo through the 3D-GANTex pipeline; its metrics name each view's file.

    ``extra_metrics`` (e.g. which face was used, a note on the views) are added to ``metrics.json``.
    """
    metrics = {"name": name, "image": photo_path, **result.metrics(), **(extra_metrics or {})}
    images: dict[str, Tensor] = {}
    for view, entry in zip(result.views, metrics["views"]):
        entry["file"] = f"views/{view_file_name(entry['view'], entry['asked_yaw'], entry['measured_yaw'])}"
        images[entry["file"]] = view
    images["aligned.png"], images["inversion.png"] = result.aligned.image, result.inverted
    views = [{key: entry[key] for key in ("view", "file", "strength", "asked_yaw", "measured_yaw")}
             for entry in metrics["views"]]

    view_labels = [f"yaw {_yaw_tag(m['measured_yaw'])} (asked {m['asked_yaw']:+.0f})" if m["measured_yaw"] is not None
                   else f"no face (asked {m['asked_yaw']:+.0f})" for m in metrics["views"]]
    fused = result.reconstruction.fused
    used = result.used_views.tolist()
    blank = torch.full_like(result.turntable[0], 0.5)
    turned = [result.turntable[used.index(k)] if k in used else blank for k in range(result.views.shape[0])]
    turned_labels = [f"mesh at {float(result.view_yaw[used.index(k)]):+.0f}" if k in used else "left out"
                     for k in range(result.views.shape[0])]
    rows = [[result.aligned.image, result.inverted, *result.views], [fused.texture, texel_source_image(fused), *turned]]
    labels = [["input (aligned)", f"inversion {result.inversion_psnr:.1f} dB", *view_labels],
              ["UV texture", "view/mirror/inpaint", *turned_labels]]
    return FaceFolder(result.model, result.reconstruction, rows, labels, metrics, images=images,
                      tables={"views.json": views}, photo=photo_path, map_views=used)
