"""A photo folder's textured mesh as ``mesh.js``: the one file the 3D viewer reads.

``face.obj`` (as ``facetex.face3d.export.write_obj`` writes it: one UV per vertex, faces ``a/a b/b c/c``)
and the ``face.png`` its MTL links are packed into a classic script that sets ``window.FACE_MESH``:

* ``positions`` ``(V, 3)``, ``uvs`` ``(V, 2)`` (v up) as base64 little-endian float32, ``indices`` ``(F, 3)``
  as base64 little-endian uint32, with ``vertexCount`` and ``triangleCount``;
* ``texture``: the PNG's bytes as a ``data:image/png;base64,`` URI.

Why a script and a data URI: a page opened from ``file://`` may load ``<script src>`` files but Chrome
blocks ``fetch``/XHR and module imports of other local files, and an image read from disk counts as
cross-origin, so WebGL refuses it as a texture. A data URI is same-origin. Normals are computed in
the viewer, which keeps the file about 40% smaller.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from foundation.errors import InputError
from foundation.files import atomic_paths

MESH_SCRIPT = "mesh.js"


class MeshFileError(InputError, ValueError):
    """``face.obj`` is not a mesh the gallery can show (no faces, several UVs per vertex, a missing texture)."""


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
    """Vertices ``(V, 3)`` float32, UVs ``(V, 2)`` float32, triangles ``(F, 3)`` int64 (0-based) and the texture path.

    The texture is the ``map_Kd`` of the material library named by ``mtllib``.
    """
    vertices, uvs, faces = [], [], []
    library = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "v":
            vertices.append(fields[1:4])
        elif fields[0] == "vt":
            uvs.append(fields[1:3])
        elif fields[0] == "f":
            corners = [corner.split("/") for corner in fields[1:]]
            if len(corners) != 3 or any(len(c) < 2 or c[0] != c[1] for c in corners):
                raise MeshFileError(f"{path}:{number}: the gallery needs triangles whose vertex and UV indices agree "
                                    f"('f a/a b/b c/c', as facetex.face3d.export.write_obj writes), got {line!r}")
            faces.append([c[0] for c in corners])
        elif fields[0] == "mtllib":
            library = path.parent / fields[1]
    if not faces or len(uvs) != len(vertices):
        raise MeshFileError(f"{path} has {len(vertices)} vertices, {len(uvs)} UVs and {len(faces)} faces; the gallery "
                            "needs a triangle mesh with one UV per vertex (write it with write_obj)")
    if library is None or not library.is_file():
        raise MeshFileError(f"{path} names no material library that exists ({library}); write it with write_obj")
    maps = [line.split(maxsplit=1)[1] for line in library.read_text().splitlines() if line.startswith("map_Kd ")]
    if not maps or not (path.parent / maps[0]).is_file():
        raise MeshFileError(f"{library} links no texture image that exists (map_Kd {maps[:1]}); write it with write_obj")
    triangles = np.asarray(faces, dtype=np.int64) - 1
    if triangles.min() < 0 or triangles.max() >= len(vertices):
        raise MeshFileError(f"{path}: faces index vertices outside 1..{len(vertices)}")
    return (np.asarray(vertices, dtype=np.float32), np.asarray(uvs, dtype=np.float32), triangles,
            path.parent / maps[0])


def _base64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def mesh_script(obj_path: Path) -> str:
    """The text of ``mesh.js`` for ``obj_path`` (see the module docstring)."""
    vertices, uvs, triangles, texture = read_obj(obj_path)
    if texture.suffix.lower() != ".png":
        raise MeshFileError(f"the viewer embeds PNG textures; {texture} is not one (write the mesh with write_obj)")
    mesh = {
        "vertexCount": len(vertices),
        "triangleCount": len(triangles),
        "positions": _base64(vertices, "<f4"),
        "uvs": _base64(uvs, "<f4"),
        "indices": _base64(triangles, "<u4"),
        "texture": "data:image/png;base64," + base64.b64encode(texture.read_bytes()).decode("ascii"),
    }
    return f"/* {obj_path.name} and its texture for the gallery viewer (facetex.gallery) */\n" \
           f"window.FACE_MESH = {json.dumps(mesh)};\n"


def write_mesh_script(folder: Path) -> Path:
    """Write ``folder/mesh.js`` from ``folder/face.obj`` unless it is newer than the OBJ and its texture."""
    target = folder / MESH_SCRIPT
    obj_path = folder / "face.obj"
    sources = [obj_path, obj_path.with_suffix(".mtl"), obj_path.with_suffix(".png")]
    newest = max(p.stat().st_mtime_ns for p in sources if p.exists())
    if target.exists() and target.stat().st_mtime_ns >= newest:
        return target
    text = mesh_script(obj_path)
    with atomic_paths(target) as (temporary,):
        temporary.write_text(text)
    return target
