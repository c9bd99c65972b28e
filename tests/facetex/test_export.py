"""Round trips of the mesh and image writers through trimesh and Pillow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from foundation.files import replace_folder

from facetex.face3d.export import save_image_grid, write_obj, write_ply


def _grid_mesh(n: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bumpy n x n grid: vertices (n*n, 3), faces (2*(n-1)^2, 3), uv (n*n, 2) in [0, 1]."""
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="xy")
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    vertices = np.stack([uv[:, 0] * 2 - 1, uv[:, 1] * 2 - 1, 0.1 * np.sin(5 * uv[:, 0]) * uv[:, 1]], axis=1)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [[a, b, e], [a, e, d]]
    return vertices, np.array(faces), uv


def test_obj_round_trip_with_linked_texture(tmp_path: Path) -> None:
    vertices, faces, uv = _grid_mesh()
    texture = torch.zeros(3, 16, 16)
    texture[0, :8] = 1.0  # red top half = v in (0.5, 1]
    obj, mtl, png = write_obj(tmp_path / "mesh.obj", torch.from_numpy(vertices), torch.from_numpy(faces), uv, texture)

    text = obj.read_text()
    assert text.startswith("mtllib mesh.mtl") and "usemtl face_texture" in text
    assert f"f {faces[0, 0] + 1}/{faces[0, 0] + 1} " in text
    assert "map_Kd mesh.png" in mtl.read_text()

    loaded = trimesh.load(obj, process=False, force="mesh")
    np.testing.assert_allclose(loaded.vertices, vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, faces)
    # vt: the process_uv texel positions of the UVs in a 16 x 16 map, (uv * 15 + 0.5) / 16
    np.testing.assert_allclose(loaded.visual.uv, (uv * 15 + 0.5) / 16, atol=1e-6)
    assert "process_uv layout" in mtl.read_text()
    image = np.asarray(loaded.visual.material.image.convert("RGB"))
    assert image.shape == (16, 16, 3)
    # row 0 of the tensor is the top of the PNG (v = 1): red there, black at the bottom
    assert tuple(image[0, 0]) == (255, 0, 0) and tuple(image[-1, 0]) == (0, 0, 0)
    # trimesh samples the texture at v = 0.9 -> the red top half, consistent with our UV convention
    sampled = trimesh.visual.color.uv_to_color(np.array([[0.5, 0.9], [0.5, 0.1]]), loaded.visual.material.image)
    assert sampled[0, 0] == 255 and sampled[1, 0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.mtl", "mesh.obj", "mesh.png"]


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip_with_colours(tmp_path: Path, binary: bool) -> None:
    vertices, faces, _ = _grid_mesh()
    colors = np.random.default_rng(0).integers(0, 256, size=(len(vertices), 3)).astype(np.uint8)
    path = write_ply(tmp_path / "mesh.ply", vertices, faces, colors, binary=binary)
    loaded = trimesh.load(path, process=False)
    np.testing.assert_allclose(loaded.vertices, vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, faces)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], colors)


def test_float_colours_are_quantised(tmp_path: Path) -> None:
    vertices, faces, _ = _grid_mesh(3)
    colors = torch.full((len(vertices), 3), 0.5)
    loaded = trimesh.load(write_ply(tmp_path / "m.ply", vertices, faces, colors), process=False)
    assert (loaded.visual.vertex_colors[:, :3] == 128).all()


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vertices, faces, uv = _grid_mesh()
    with pytest.raises(ValueError, match="shape"):
        write_obj(tmp_path / "mesh.obj", vertices, faces, uv, torch.zeros(4, 8, 8))  # not an RGB image
    with pytest.raises(ValueError, match="outside"):
        write_ply(tmp_path / "mesh.ply", vertices, faces + len(vertices), np.zeros((len(vertices), 3)))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    # the PNG and MTL are complete when the OBJ body fails: none of the three may be left behind
    monkeypatch.setattr(np, "savetxt", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_obj(tmp_path / "mesh.obj", vertices, faces, uv, torch.zeros(3, 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_image_grid_layout(tmp_path: Path) -> None:
    red, blue = torch.zeros(3, 10, 20), torch.zeros(3, 30, 30, dtype=torch.uint8)
    red[0] = 1.0
    blue[2] = 255
    path = save_image_grid(tmp_path / "grid.png", [[red, blue], [blue]], [["input", "yaw 0"], ["x"]], cell_size=32)
    grid = np.asarray(Image.open(path).convert("RGB"))
    assert grid.shape == (2 * (32 + 20), 64, 3)
    assert tuple(grid[20 + 16, 16]) == (255, 0, 0)  # first cell, below its label strip
    assert tuple(grid[20 + 16, 48]) == (0, 0, 255)
    assert tuple(grid[52 + 20 + 16, 48]) == (255, 255, 255)  # missing cell stays white
    assert grid[:20, :32].min() < 128  # a label was drawn
    with pytest.raises(ValueError, match="labels"):
        save_image_grid(tmp_path / "bad.png", [[red]], [["a", "b"]])


def test_replace_folder_swaps_in_the_new_result(tmp_path: Path) -> None:
    target, new = tmp_path / "photo", tmp_path / ".staging"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "face.obj").write_text("new")
    replace_folder(new, target)
    assert sorted(p.name for p in target.iterdir()) == ["face.obj"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo"]  # neither staging nor the old copy is left
