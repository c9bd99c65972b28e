"""The gallery's HTML: an overview grid of every photo folder in a run and one page per photo.

Layout of a run folder ``ROOT`` (what ``build_gallery(ROOT)`` writes is marked +):

    ROOT/index.html                 + overview: a card per photo (lazy thumbnail, name, re-render scores)
    ROOT/gallery_assets/            + viewer.js (WebGL viewer), page.js (overlay picker), gallery.css
    ROOT/NAME/index.html            + the photo's page: 3D viewer, photo, views, UV texture + maps, metrics
    ROOT/NAME/mesh.js               + the mesh and texture for the viewer (``mesh_data``)
    ROOT/NAME/face.obj, face.mtl, face.png, metrics.json      written by the pipeline (required)
    ROOT/NAME/photo.jpg, aligned.png, inversion.png, grid.png, views.json + views/, maps/maps.json + maps/
                                    optional: shown when present (``main.py predict`` writes all of them,
                                    ``scripts/photo_to_mesh.py`` the photo and the grid)

A photo folder is any non-hidden subfolder holding ``face.obj`` (hidden ones are writers' staging
folders). Every link is relative and every file is local, so the gallery works opened from disk
(``file://``) with no network, and a run folder can be moved or zipped as a whole. Nothing heavy
is loaded before it is shown: overview thumbnails and view images are ``loading="lazy"``, the mesh
only on its photo's page, a texture map only when picked.

Why a small plain-WebGL viewer rather than three.js: it needs one textured mesh, an orthographic
orbit camera and two shaders (about 300 lines, nothing vendored, nothing to rebuild at release
time); three.js ships ES modules only since r160, which ``file://`` pages cannot import, so it would
need a bundling step and a ~700 kB vendored file for features the gallery does not use. The
viewer also frames and turns the mesh exactly as ``face3d.render.render_turntable`` does, which
lets the browser test compare its pixels with the project's own renders.

Every file is written to a temporary name and renamed into place, so a reader never sees a
half-written page, and rebuilding after each photo always lists every folder present.
"""
from __future__ import annotations

import json
import shutil
from html import escape
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from foundation.files import atomic_paths
from facetex.gallery.maps import MAPS_INDEX
from facetex.gallery.mesh_data import MESH_SCRIPT, write_mesh_script
from facetex.gallery.photo import PHOTO_FILE
from foundation.errors import InputError

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = ("viewer.js", "page.js", "gallery.css")
ASSETS_FOLDER = "gallery_assets"
PAGE_FILE = "index.html"
VIEWER_BACKGROUND = "#2a2e36"  # the viewer's clear colour (tests read it from here)
REQUIRED_FILES = ("face.obj", "face.mtl", "face.png", "metrics.json")


class GalleryError(InputError, ValueError):
    """The run folder cannot be made into a gallery (no photo folders, a photo folder missing a required file)."""


def photo_folders(root: Path) -> list[Path]:
    """The photo folders of ``root``: non-hidden subfolders holding ``face.obj``, sorted by name."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "face.obj").is_file())


def _href(*parts: str) -> str:
    return escape("/".join(quote(part) for part in parts), quote=True)


def _number(value: Any) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _degrees(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:+.1f}\u00b0"


def _document(title: str, assets: str, body: Iterable[str], scripts: Iterable[str] = ()) -> str:
    lines = ["<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(title)}</title>", f'<link rel="stylesheet" href="{assets}/gallery.css">', "</head>",
             "<body>", *body, *(f'<script src="{src}"></script>' for src in scripts), "</body>", "</html>", ""]
    return "\n".join(lines)


def _figure(src: str, caption: str) -> str:
    """A lazily loaded image with its caption (also its alt text)."""
    return (f'<figure><img src="{src}" loading="lazy" alt="{escape(caption, quote=True)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _flatten(metrics: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar entries of ``metrics`` as ``(dotted key, value)``; lists (per-view entries) are left to their table."""
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            rows.append((f"{prefix}{key}", value))
    return rows


VIEW_COLUMNS = (("view", "view"), ("asked_yaw", "asked yaw"), ("measured_yaw", "measured yaw"),
                ("geometry_yaw", "mesh yaw"), ("used", "used"), ("psnr", "PSNR dB"), ("ssim", "SSIM"),
                ("mask_fraction", "mask"), ("landmark_rmse_px", "landmark RMSE px"))


def _metrics_tables(metrics: dict) -> list[str]:
    summary = [f'<tr><td class="key">{escape(key)}</td><td>{_number(value)}</td></tr>'
               for key, value in _flatten(metrics) if key not in ("name", "image")]
    parts = ['<table class="metrics">', '<tr><th class="key">measure</th><th>value</th></tr>', *summary, "</table>"]
    views = metrics.get("views")
    if isinstance(views, list) and views:
        parts += ["<h3>Per view (re-render scores inside the face mask)</h3>", '<table class="views">',
                  "<tr>" + "".join(f"<th>{escape(label)}</th>" for _, label in VIEW_COLUMNS) + "</tr>"]
        parts += ["<tr>" + "".join(f"<td>{_number(view.get(key))}</td>" for key, _ in VIEW_COLUMNS) + "</tr>"
                  for view in views]
        parts.append("</table>")
    return parts


def _inputs_section(folder: Path, metrics: dict) -> list[str]:
    figures = []
    if (folder / PHOTO_FILE).is_file():
        figures.append(_figure(PHOTO_FILE, "photo"))
    if (folder / "aligned.png").is_file():
        figures.append(_figure("aligned.png", "aligned crop (what the generator is inverted to)"))
    if (folder / "inversion.png").is_file():
        psnr = metrics.get("inversion_psnr")
        figures.append(_figure("inversion.png", "inversion" + ("" if psnr is None else f", PSNR {psnr:.1f} dB")))
    if (folder / "grid.png").is_file():
        figures.append('<figure><a href="grid.png"><img class="whole" src="grid.png" loading="lazy" alt="summary grid"></a>'
                       "<figcaption>summary grid (click for full size)</figcaption></figure>")
    return ["<h2>Input</h2>", '<div class="grid">', *figures, "</div>"] if figures else []


def _views_section(folder: Path) -> list[str]:
    if not (folder / "views.json").is_file():
        return []
    figures = []
    for view in json.loads((folder / "views.json").read_text()):
        measured = view.get("measured_yaw")
        label = f"measured yaw {_degrees(measured)}" if measured is not None else "no face detected, yaw not measured"
        caption = f"view {view['view']}: {label} (asked {_degrees(view.get('asked_yaw'))})"
        figures.append(_figure(_href(*view["file"].split("/")), caption))
    return ["<h2>Synthesised views</h2>", '<div class="grid">', *figures, "</div>"]


def _texture_section(folder: Path) -> list[str]:
    options = ['<option value="">texture only</option>']
    if (folder / "maps" / MAPS_INDEX).is_file():
        for entry in json.loads((folder / "maps" / MAPS_INDEX).read_text()):
            options.append(f'<option value="{_href("maps", entry["file"])}">{escape(entry["label"])}</option>')
    picker = ("" if len(options) == 1 else
              f'<p><label>overlay <select data-overlay="uv-overlay">{"".join(options)}</select></label></p>')
    return ["<h2>UV texture</h2>", picker, '<div class="uv">', '<img src="face.png" loading="lazy" alt="UV texture">',
            '<img id="uv-overlay" class="overlay" alt="texture map" hidden>', "</div>"]


def _viewer_section() -> list[str]:
    return [
        "<h2>3D mesh</h2>", '<div class="viewer">',
        f'<canvas id="viewer" data-background="{VIEWER_BACKGROUND}" width="512" height="512"></canvas>',
        '<div class="controls">', '<span id="viewer-pose"></span>',
        '<button id="viewer-reset" type="button">reset view</button>',
        '<label><input type="radio" name="viewer-mode" value="texture" checked> texture</label>',
        '<label><input type="radio" name="viewer-mode" value="shaded"> shaded geometry</label>',
        "<p>drag to orbit, wheel to zoom<br>start view from the URL:<br><code>?yaw=30&amp;pitch=-10&amp;zoom=1.5"
        "&amp;mode=shaded</code></p>",
        '<p id="viewer-status"></p>', "</div>", "</div>",
    ]


def photo_page(folder: Path, previous: Path | None, following: Path | None) -> str:
    """The HTML of ``folder``'s page; ``previous``/``following`` are its neighbours in the overview (or None)."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise GalleryError(f"photo folder {folder} lacks {missing}; it was not written completely: run the photo again")
    metrics = json.loads((folder / "metrics.json").read_text())
    assets = f"../{ASSETS_FOLDER}"
    links = [f'<a href="../{PAGE_FILE}">all photos</a>']
    if previous is not None:
        links.append(f'<a href="{_href("..", previous.name, PAGE_FILE)}">\u2190 {escape(previous.name)}</a>')
    if following is not None:
        links.append(f'<a href="{_href("..", following.name, PAGE_FILE)}">{escape(following.name)} \u2192</a>')
    separator = " \u00b7 "
    body = [f"<nav>{separator.join(links)}</nav>", f"<h1>{escape(folder.name)}</h1>", *_viewer_section(),
            *_inputs_section(folder, metrics), *_views_section(folder), *_texture_section(folder),
            "<h2>Metrics</h2>", *_metrics_tables(metrics)]
    return _document(f"{folder.name}: face gallery", assets, body,
                     [MESH_SCRIPT, f"{assets}/viewer.js", f"{assets}/page.js"])


def _card(folder: Path) -> str:
    metrics = json.loads((folder / "metrics.json").read_text())
    thumbnail = PHOTO_FILE if (folder / PHOTO_FILE).is_file() else "face.png"
    rerender = metrics.get("rerender", {})
    scores = f"re-render PSNR {_number(rerender.get('psnr'))} dB, SSIM {_number(rerender.get('ssim'))}"
    views = metrics.get("views")
    count = f", {len(views)} views" if isinstance(views, list) else ""
    return (f'<a class="card" href="{_href(folder.name, PAGE_FILE)}">'
            f'<img src="{_href(folder.name, thumbnail)}" loading="lazy" width="180" height="180" '
            f'alt="{escape(folder.name, quote=True)}"><strong>{escape(folder.name)}</strong>'
            f"<span>{scores}{count}</span></a>")


def overview_page(root: Path, folders: list[Path]) -> str:
    """The HTML of ``root/index.html``: one card per photo folder."""
    body = [f"<h1>Faces: {len(folders)} photo{'s' if len(folders) != 1 else ''}</h1>",
            f"<p>{escape(str(root.resolve()))}</p>", '<div class="grid">', *(_card(f) for f in folders), "</div>"]
    return _document("face gallery", ASSETS_FOLDER, body)


def _write_text(path: Path, text: str) -> None:
    with atomic_paths(path) as (temporary,):
        temporary.write_text(text, encoding="utf-8")


def build_gallery(root: str | Path) -> Path:
    """(Re)write the gallery of every photo folder in ``root``; returns ``root/index.html``.

    Raises ``FileNotFoundError`` when ``root`` is not a folder and :class:`GalleryError` when it holds
    no photo folder or a photo folder lacks a required file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"gallery folder {str(root)!r} does not exist; pass the folder holding the photo folders")
    folders = photo_folders(root)
    if not folders:
        raise GalleryError(f"{root} holds no photo folder (a subfolder with face.obj); pass the run's faces folder, "
                           "e.g. logs/<run>/version_N/faces, or the parent of photo_to_mesh.py's --out")
    if (root / ASSETS_FOLDER / "face.obj").exists():
        raise GalleryError(f"{root / ASSETS_FOLDER} is the gallery's asset folder; rename that photo")
    (root / ASSETS_FOLDER).mkdir(exist_ok=True)
    for name in STATIC_FILES:
        with atomic_paths(root / ASSETS_FOLDER / name) as (temporary,):
            shutil.copyfile(STATIC_DIR / name, temporary)
    for index, folder in enumerate(folders):
        write_mesh_script(folder)
        previous = folders[index - 1] if index > 0 else None
        following = folders[index + 1] if index + 1 < len(folders) else None
        _write_text(folder / PAGE_FILE, photo_page(folder, previous, following))
    _write_text(root / PAGE_FILE, overview_page(root, folders))
    return root / PAGE_FILE
