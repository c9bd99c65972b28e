"""Write meshes and images to disk: textured OBJ (+ MTL + PNG), coloured PLY, labelled image grids.

Every writer is atomic: all files of one call are first written to hidden temporary
siblings and renamed into place only when every one of them is complete, so a failure
never leaves a half-written mesh, or an OBJ whose material or texture is missing.

UV convention: the texture is in 3DDFA_V2's ``process_uv`` layout (``texture.layout_uv``): a
vertex with texture coordinates ``(u, v)`` (in [0, 1], v up, e.g. the BFM's ``BFM_UV.mat``) sits
on texel column ``u (W - 1)``, row ``(1 - v)(H - 1)`` (texel centres on integers, row 0 at
v = 1), so a BFM map is interchangeable with 3DDFA_V2's ``uv_tex``. The texture tensor is
written to the PNG as is, and the ``vt`` lines are those positions in OBJ terms,
``(u (W - 1) + 0.5) / W`` and ``(v (H - 1) + 0.5) / H``, so any OBJ viewer samples the map
where it was made; the MTL says so in a comment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from foundation.files import atomic_paths
from facetex.face3d.texture import layout_uv

ArrayLike = torch.Tensor | np.ndarray


def _as_numpy(array: ArrayLike) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def image_to_uint8(image: ArrayLike) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] or uint8 (tensor or array) -> ``(H, W, 3)`` uint8 array."""
    array = _as_numpy(image)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W) or (1, H, W), got {tuple(array.shape)}")
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def _colors_to_uint8(colors: ArrayLike, num_vertices: int) -> np.ndarray:
    array = _as_numpy(colors)
    if array.shape != (num_vertices, 3):
        raise ValueError(f"vertex_colors must have shape ({num_vertices}, 3), got {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return array
    return np.round(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_mesh(vertices: ArrayLike, faces: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    v = _as_numpy(vertices).astype(np.float64)
    f = _as_numpy(faces).astype(np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {tuple(v.shape)}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(f.shape)}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices outside [0, {len(v)}): min {f.min()}, max {f.max()}")
    return v, f


def write_obj(
    path: str | Path,
    vertices: ArrayLike,
    faces: ArrayLike,
    uv: ArrayLike,
    texture: ArrayLike,
    material_name: str = "face_texture",
) -> tuple[Path, Path, Path]:
    """Write a textured mesh as ``path`` (.obj) + ``<stem>.mtl`` + ``<stem>.png``, all linked.

    vertices: ``(V, 3)``; faces: ``(F, 3)`` 0-based, counter-clockwise seen from outside;
    uv: ``(V, 2)`` per-vertex texture coordinates in [0, 1], v up (written as ``vt`` at their
    ``process_uv`` texel positions, see the module docstring);
    texture: ``(3, H, W)`` float in [0, 1] or uint8 in ``process_uv`` layout (written to the PNG as is).
    The OBJ names its material library (``mtllib``) and material (``usemtl``), the MTL names the
    PNG (``map_Kd``), and every face line is ``f a/a b/b c/c`` (vertex and UV share an index).
    Returns the three paths written.
    """
    obj_path = Path(path)
    if obj_path.suffix.lower() != ".obj":
        raise ValueError(f"write_obj needs a path ending in .obj, got {obj_path}")
    v, f = _check_mesh(vertices, faces)
    t = _as_numpy(uv).astype(np.float64)
    if t.shape != (len(v), 2):
        raise ValueError(f"uv must have shape ({len(v)}, 2) (one UV per vertex), got {tuple(t.shape)}")
    image = image_to_uint8(texture)
    height, width = image.shape[:2]
    t = layout_uv(torch.from_numpy(t), (height, width)).numpy()
    mtl_path = obj_path.with_suffix(".mtl")
    png_path = obj_path.with_suffix(".png")

    with atomic_paths(png_path, mtl_path, obj_path) as (png_tmp, mtl_tmp, obj_tmp):  # the OBJ appears last
        Image.fromarray(image).save(png_tmp, format="PNG")
        mtl_tmp.write_text(
            f"# {png_path.name}: 3DDFA_V2 process_uv layout, vertex (u, v) at texel column u*(W-1), "
            f"row (1-v)*(H-1) (centres on integers); vt = (u*(W-1)+0.5)/W, (v*(H-1)+0.5)/H\n"
            f"newmtl {material_name}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\n"
            f"Ks 0.000 0.000 0.000\nd 1.0\nillum 1\nmap_Kd {png_path.name}\n"
        )
        with open(obj_tmp, "w") as handle:
            handle.write(f"mtllib {mtl_path.name}\n")
            np.savetxt(handle, v, fmt="v %.6f %.6f %.6f")
            np.savetxt(handle, t, fmt="vt %.6f %.6f")
            handle.write(f"usemtl {material_name}\n")
            one_based = f + 1
            np.savetxt(handle, np.repeat(one_based, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    return obj_path, mtl_path, png_path


def write_ply(
    path: str | Path, vertices: ArrayLike, faces: ArrayLike, vertex_colors: ArrayLike, binary: bool = True
) -> Path:
    """Write a mesh with per-vertex colours as PLY (binary little-endian by default, or ASCII).

    vertices: ``(V, 3)`` (stored float32); faces: ``(F, 3)`` 0-based; vertex_colors: ``(V, 3)``
    float in [0, 1] or uint8 (stored as ``uchar red green blue``).
    """
    ply_path = Path(path)
    v, f = _check_mesh(vertices, faces)
    colors = _colors_to_uint8(vertex_colors, len(v))
    header = (
        f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with atomic_paths(ply_path) as (tmp,):
        with open(tmp, "wb") as handle:
            handle.write(header.encode("ascii"))
            if binary:
                vertex_record = np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)])
                vertex_rows = np.empty(len(v), dtype=vertex_record)
                vertex_rows["xyz"], vertex_rows["rgb"] = v, colors
                face_rows = np.empty(len(f), dtype=np.dtype([("n", "u1"), ("idx", "<i4", 3)]))
                face_rows["n"], face_rows["idx"] = 3, f
                handle.write(vertex_rows.tobytes())
                handle.write(face_rows.tobytes())
            else:
                for (x, y, z), (r, g, b) in zip(v.astype(np.float32), colors):
                    handle.write(f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}\n".encode("ascii"))
                for a, b, c in f:
                    handle.write(f"3 {a} {b} {c}\n".encode("ascii"))
    return ply_path


def save_image_grid(
    path: str | Path,
    rows: Sequence[Sequence[ArrayLike]],
    labels: Sequence[Sequence[str]] | None = None,
    cell_size: int = 256,
    label_height: int = 20,
) -> Path:
    """Save rows of images as one labelled PNG grid (e.g. the input photo beside re-renders at several yaws).

    rows: a list of rows, each a list of ``(3, H, W)`` images (float in [0, 1] or uint8); every image is
    resized to ``cell_size x cell_size``. labels: same nesting as ``rows``, one caption per image, drawn in
    a strip above it. Rows may have different lengths; missing cells stay white.
    """
    if not rows or not all(rows):
        raise ValueError("save_image_grid needs at least one non-empty row of images")
    if labels is not None and [len(r) for r in labels] != [len(r) for r in rows]:
        raise ValueError(
            f"labels must match rows one to one: rows have lengths {[len(r) for r in rows]}, "
            f"labels {[len(r) for r in labels]}"
        )
    strip = label_height if labels is not None else 0
    columns = max(len(r) for r in rows)
    canvas = Image.new("RGB", (columns * cell_size, len(rows) * (cell_size + strip)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            tile = Image.fromarray(image_to_uint8(image)).resize((cell_size, cell_size), Image.BILINEAR)
            top = i * (cell_size + strip)
            canvas.paste(tile, (j * cell_size, top + strip))
            if labels is not None:
                draw.text((j * cell_size + 4, top + 4), labels[i][j], fill="black", font=font)
    grid_path = Path(path)
    with atomic_paths(grid_path) as (tmp,):
        canvas.save(tmp, format="PNG")
    return grid_path
