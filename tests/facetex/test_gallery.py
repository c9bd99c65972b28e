"""The HTML gallery without a browser: only local links that resolve, every photo folder listed (both
output layouts), the viewer's mesh file round-trips, texture maps match the fused texture, and a failed
rebuild leaves the previous gallery whole."""
from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

from facetex.face3d.export import write_obj
from facetex.face3d.texture import TexelSource, fuse_texture, layout_uv
from facetex.gallery import GalleryError, build_gallery, pages, write_photo, write_texture_maps
from facetex.gallery.maps import texture_maps
from facetex.gallery.mesh_data import MeshFileError, read_obj

REPO_ROOT = Path(__file__).resolve().parents[2]


def sheet(n: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A flat n x n grid over [-1, 1]^2 facing +z: vertices (V, 3), triangles (F, 3), uv (V, 2)."""
    coords = torch.linspace(-1, 1, n)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    vertices = torch.stack([x.flatten(), y.flatten(), torch.zeros(n * n)], dim=1)
    grid = torch.arange(n * n).reshape(n, n)
    a, b, c, d = grid[:-1, :-1], grid[:-1, 1:], grid[1:, 1:], grid[1:, :-1]
    triangles = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    return vertices, triangles, (vertices[:, :2] + 1) / 2


def write_pipeline_folder(folder: Path, photo: Path) -> None:
    """What scripts/photo_to_mesh.py leaves: mesh, grid, metrics and the photo; no views, no maps."""
    vertices, triangles, uv = sheet()
    write_obj(folder / "face.obj", vertices, triangles, uv, torch.rand(3, 256, 256))
    Image.new("RGB", (64, 32), "white").save(folder / "grid.png")
    (folder / "metrics.json").write_text(json.dumps({"rerender": {"psnr": 31.25, "ssim": 0.875}, "texture_size": 256}))
    write_photo(photo, folder)


def write_gantex_folder(folder: Path, photo: Path) -> None:
    """What main.py predict's FaceWriter leaves: the pipeline's files plus views, crops and texture maps."""
    write_pipeline_folder(folder, photo)
    (folder / "views").mkdir()
    views = [{"view": 0, "file": "views/view_00_asked-20.0_measured-18.6.png", "asked_yaw": -20.0, "measured_yaw": -18.6},
             {"view": 1, "file": "views/view_01_asked+20.0_measured_none.png", "asked_yaw": 20.0, "measured_yaw": None}]
    for view in views:
        Image.new("RGB", (32, 32), "gray").save(folder / view["file"])
    (folder / "views.json").write_text(json.dumps(views))
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["views"] = [{**view, "used": True, "psnr": 20.5, "ssim": 0.5} for view in views]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    for name in ("aligned.png", "inversion.png"):
        Image.new("RGB", (32, 32), "gray").save(folder / name)
    vertices, triangles, uv = sheet()
    screen = torch.stack([vertices * torch.tensor([20.0, -20.0, -20.0]) + torch.tensor([32.0, 32.0, 0.0])] * 2)
    fused = fuse_texture(torch.rand(2, 3, 64, 64), screen, triangles, uv, 256)
    (folder / "maps").mkdir()
    write_texture_maps(folder / "maps", fused, [0, 1])


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "input.png"
    Image.new("RGB", (800, 600), (200, 120, 90)).save(path)
    return path


@pytest.fixture
def run(tmp_path: Path, photo: Path) -> Path:
    """A run folder: two photos written by main.py predict (one named with a space and a '+'), one by the script."""
    root = tmp_path / "faces"
    for name in ("ffhq_00009", "my photo+1"):
        write_gantex_folder(root / name, photo)
    write_pipeline_folder(root / "emma", photo)
    return root


class Links(HTMLParser):
    """Every src/href of a page, and whether any tag is a <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
            if name == "value" and value and value.startswith("maps/"):  # overlay picker entries become img src
                self.urls.append(value)
        if tag == "script":
            self.scripts.append(dict(attrs).get("src") or "")


def links_of(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text())
    return parser


def assert_only_local_links(page: Path) -> None:
    """No external URL in ``page``, and every src/href (and overlay choice) is a relative path to a file."""
    text = page.read_text()
    assert not re.search(r"https?:", text), f"{page} names an external URL"
    links = links_of(page)
    assert links.urls
    for url in links.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("//"), f"{page}: {url} is not local"
        assert (page.parent / unquote(parts.path)).is_file(), f"{page}: {url} does not resolve to a file"


def test_pages_link_only_local_files_that_exist(run: Path) -> None:
    index = build_gallery(run)
    pages_written = [index, *sorted(run.glob("*/index.html"))]
    assert len(pages_written) == 4
    for page in pages_written:
        assert_only_local_links(page)
    for name in pages.STATIC_FILES:  # the copied viewer, script and style sheet name nothing outside
        text = (run / pages.ASSETS_FOLDER / name).read_text()
        assert not re.search(r"https?:|@import|url\(", text), name
        assert text == (pages.STATIC_DIR / name).read_text()


def test_overview_lists_every_photo_folder_and_loads_nothing_heavy(run: Path, photo: Path) -> None:
    (run / ".emma.staging").mkdir()  # a writer's staging folder and a folder without a mesh are not photos
    write_pipeline_folder(run / ".emma.staging", photo)
    (run / "notes").mkdir()
    overview = links_of(build_gallery(run))
    assert [u for u in overview.urls if u.endswith("index.html")] == [
        "emma/index.html", "ffhq_00009/index.html", "my%20photo%2B1/index.html"]
    assert [u for u in overview.urls if u.endswith(".jpg")] == [
        "emma/photo.jpg", "ffhq_00009/photo.jpg", "my%20photo%2B1/photo.jpg"]
    assert overview.scripts == []  # no mesh is loaded by the overview
    assert (run / "index.html").read_text().count('loading="lazy"') == 3
    page = links_of(run / "ffhq_00009" / "index.html")
    assert page.scripts == ["mesh.js", "../gallery_assets/viewer.js", "../gallery_assets/page.js"]
    assert "../emma/index.html" in page.urls and "../my%20photo%2B1/index.html" in page.urls  # previous, next
    text = (run / "ffhq_00009" / "index.html").read_text()
    assert "view 0: measured yaw -18.6\u00b0 (asked -20.0\u00b0)" in text
    assert "view 1: no face detected, yaw not measured (asked +20.0\u00b0)" in text
    assert text.count("<option") == 1 + 7 and "view 1: blend share" in text  # none, source, 2 views x 3 maps
    assert 'id="uv-overlay" class="overlay" alt="texture map" hidden>' in text  # no map loaded until picked
    emma = (run / "emma" / "index.html").read_text()  # the script's layout: no views, no maps, a grid
    assert "Synthesised views" not in emma and "<select" not in emma and 'src="grid.png"' in emma
    assert "<td>31.25</td>" in emma and "rerender.psnr" in emma
    assert Image.open(run / "emma" / "photo.jpg").size == (512, 384)


def test_mesh_script_round_trips_the_obj_and_is_rebuilt_only_when_stale(run: Path) -> None:
    build_gallery(run)
    folder = run / "emma"
    text = (folder / "mesh.js").read_text()
    mesh = json.loads(text[text.index("=") + 1:].strip().rstrip(";"))
    vertices, uv, triangles, texture = read_obj(folder / "face.obj")
    expected_vertices, expected_triangles, expected_uv = sheet()
    expected_uv = layout_uv(expected_uv, 256)  # write_obj's vt: process_uv positions in the 256 map
    for key, dtype, truth in (("positions", "<f4", expected_vertices), ("uvs", "<f4", expected_uv),
                              ("indices", "<u4", expected_triangles)):
        decoded = np.frombuffer(base64.b64decode(mesh[key]), dtype=dtype).reshape(truth.shape)
        np.testing.assert_allclose(decoded, truth.numpy(), atol=1e-6)
    assert (mesh["vertexCount"], mesh["triangleCount"]) == (25, 32)
    prefix = "data:image/png;base64,"
    assert mesh["texture"].startswith(prefix)
    assert base64.b64decode(mesh["texture"][len(prefix):]) == texture.read_bytes() == (folder / "face.png").read_bytes()

    stamp = (folder / "mesh.js").stat().st_mtime_ns
    build_gallery(run)
    assert (folder / "mesh.js").stat().st_mtime_ns == stamp  # up to date: not rewritten
    vertices, triangles, uv = sheet(3)
    write_obj(folder / "face.obj", vertices, triangles, uv, torch.rand(3, 256, 256))
    build_gallery(run)
    assert '"vertexCount": 9' in (folder / "mesh.js").read_text()


def test_texture_maps_hold_the_fused_maps(tmp_path: Path) -> None:
    vertices, triangles, uv = sheet()
    screen = torch.stack([vertices * torch.tensor([20.0, -20.0, -20.0]) + torch.tensor([32.0, 32.0, 0.0])] * 2)
    screen[1, :, 0] += 16  # the second view sees the sheet shifted right: partly outside its image
    fused = fuse_texture(torch.rand(2, 3, 64, 64), screen, triangles, uv, 256)
    index = write_texture_maps(tmp_path, fused, [3, 5])
    entries = json.loads(index.read_text())
    assert [e["file"] for e in entries] == ["source.png", "view_03_visibility.png", "view_03_weight.png",
                                            "view_03_share.png", "view_05_visibility.png", "view_05_weight.png",
                                            "view_05_share.png"]
    for row, view in enumerate((3, 5)):
        for name, truth in (("visibility", fused.visibility[row].float()), ("weight", fused.view_weight[row]),
                            ("share", fused.blend_weight[row])):
            written = np.asarray(Image.open(tmp_path / f"view_{view:02d}_{name}.png"), dtype=np.float64) / 255
            np.testing.assert_allclose(written, truth.numpy(), atol=0.5 / 255 + 1e-6)
    assert not np.asarray(Image.open(tmp_path / "view_05_visibility.png")).all()  # shifted view misses a part
    source = np.asarray(Image.open(tmp_path / "source.png"))
    outside = (fused.source == TexelSource.OUTSIDE).numpy()  # the chart's gutter is inpainted, not outside
    assert source.shape == (256, 256, 3) and (source[outside] == 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([e["file"] for e in entries] + ["maps.json"])
    with pytest.raises(ValueError, match="names 1 views but the texture was fused from 2"):
        texture_maps(fused, [0])


def test_failed_rebuild_leaves_the_previous_gallery_whole(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_gallery(run)
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    real_page = pages.photo_page

    def failing(folder: Path, *neighbours: Path | None) -> str:
        if folder.name == "ffhq_00009":
            raise OSError("disk full")
        return real_page(folder, *neighbours)

    monkeypatch.setattr(pages, "photo_page", failing)
    with pytest.raises(OSError, match="disk full"):
        build_gallery(run)
    monkeypatch.undo()
    after = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    assert after == before  # nothing half-written, no temporary file left

    (run / "emma" / "metrics.json").unlink()
    with pytest.raises(GalleryError, match=r"emma lacks \['metrics.json'\]"):
        build_gallery(run)
    assert (run / "index.html").read_bytes() == before[run / "index.html"]


def test_bad_inputs_raise_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_gallery(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryError, match="holds no photo folder"):
        build_gallery(tmp_path / "empty")
    folder = tmp_path / "run" / "odd"
    vertices, triangles, uv = sheet(2)
    write_obj(folder / "face.obj", vertices, triangles, uv, torch.rand(3, 256, 256))
    (folder / "metrics.json").write_text("{}")
    obj = (folder / "face.obj").read_text().replace("f 1/1 ", "f 1/2 ")
    (folder / "face.obj").write_text(obj)
    with pytest.raises(MeshFileError, match="vertex and UV indices agree"):
        build_gallery(folder.parent)
    assert not (folder / "mesh.js").exists() and not (folder.parent / "index.html").exists()


def test_photo_to_mesh_script_writes_the_gallery_of_its_out_folder(shared_assets: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """The script's gallery step, with the pipeline (tested in test_pipeline.py) replaced by a writer of its files."""
    spec = importlib.util.spec_from_file_location("photo_to_mesh_script", REPO_ROOT / "scripts" / "photo_to_mesh.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def pipeline(image: Path, out: Path, *args: object, **kwargs: object) -> dict:
        out.mkdir(parents=True)
        vertices, triangles, uv = sheet()
        write_obj(out / "face.obj", vertices, triangles, uv, torch.rand(3, 256, 256))
        Image.new("RGB", (64, 32), "white").save(out / "grid.png")
        metrics = {"rerender": {"psnr": 30.0, "ssim": 0.9}, "rerender_scored_in": "face skin mask", "pose_degrees": {}, "landmark_rmse_px": 1.0,
                   "texel_sources": {}, "faces": {"faces_found": 1, "note": None}}
        (out / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(script, "photo_to_mesh", pipeline)
    outputs = tmp_path / "outputs"
    (outputs / "earlier").mkdir(parents=True)  # a photo folder from an earlier run is listed too
    write_pipeline_folder(outputs / "earlier", shared_assets / "faces" / "emma.jpg")
    monkeypatch.setattr(sys, "argv", ["photo_to_mesh.py", "--image", str(shared_assets / "faces" / "ffhq_00012.png"),
                                      "--out", str(outputs / "ffhq_00012"), "--assets", str(shared_assets)])
    assert script.main() == 0
    assert f"gallery: {(outputs / 'index.html').as_uri()}" in capsys.readouterr().out
    assert [u for u in links_of(outputs / "index.html").urls if u.endswith("index.html")] == [
        "earlier/index.html", "ffhq_00012/index.html"]
    page = outputs / "ffhq_00012" / "index.html"
    for written in (outputs / "index.html", page):
        assert_only_local_links(written)
    text = page.read_text()
    assert 'src="photo.jpg"' in text and 'src="grid.png"' in text and "Synthesised views" not in text
    assert Image.open(outputs / "ffhq_00012" / "photo.jpg").size == (512, 512)
