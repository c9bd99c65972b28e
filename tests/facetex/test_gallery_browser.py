"""The gallery's WebGL viewer in a real headless Chromium (driven over the DevTools protocol on a pipe).

Ground truth: a mesh with a known texture (red/yellow checkerboard on the u < 0.5 half, i.e. the
model's -x side, blue/cyan on the other) is written with ``write_obj`` and made into a gallery; the
viewer's screenshots are compared with the project's own renderer (``render_turntable``, which the
viewer frames like): same silhouette, same colours, background elsewhere; yaw +60 shows the red
side, yaw -60 the blue one; a mouse drag turns the mesh, "reset view" and the shaded toggle work;
the page logs no console error and requests nothing but local files. Two meshes: the real Surrey
Face Model (needs ../shared/assets) and a generated ellipsoid cap (always runs).
Screenshots are left in /tmp/gallery_browser/ (and /tmp/gallery_shot.png) for a person to look at.
"""
from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from facetex.face3d.export import write_obj
from facetex.face3d.morphable_model import MorphableModel
from facetex.face3d.render import render_turntable
from facetex.gallery import build_gallery
from facetex.gallery.pages import VIEWER_BACKGROUND

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
SHOTS = Path(tempfile.gettempdir()) / "gallery_browser"
SIZE = 512  # the viewer canvas, CSS pixels at device pixel ratio 1
TIMEOUT = 30.0  # seconds for any one browser step
RED_SIDE = torch.tensor([[0.85, 0.15, 0.15], [0.95, 0.80, 0.20]])  # u < 0.5: model -x
BLUE_SIDE = torch.tensor([[0.15, 0.30, 0.90], [0.20, 0.80, 0.85]])  # u >= 0.5: model +x


class Chromium:
    """Headless Chromium with one page, driven by DevTools protocol messages over ``--remote-debugging-pipe``."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="gallery-chromium-")
        to_browser, self._send_fd = os.pipe()
        self._read_fd, from_browser = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1100,900",
                 f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"]

        def wire_pipes() -> None:  # the browser reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen([CHROMIUM, *flags], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, pass_fds=(3, 4), preexec_fn=wire_pipes)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                self.call(f"{domain}.enable", session=self.session)
        except (RuntimeError, TimeoutError):
            self.close()
            raise

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait (at most ``TIMEOUT``) for its reply; events seen meanwhile go to ``events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method} failed: {reply['error']}")
                    return reply["result"]
                self.events.append(reply)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._read_fd], [], [], remaining)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {TIMEOUT} s")
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe during {method}")
            self._buffer += chunk

    def page(self, method: str, params: dict | None = None) -> dict:
        return self.call(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{expression!r} stayed false for {TIMEOUT} s")

    def open(self, url: str) -> None:
        """Navigate and wait until the viewer reports ready (or error)."""
        self.page("Page.navigate", {"url": url})
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete' && "
                      "document.body.dataset.viewer")

    def canvas_box(self) -> dict:
        return self.evaluate("(() => { const r = document.getElementById('viewer').getBoundingClientRect();"
                             " return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; })()")

    def screenshot(self) -> np.ndarray:
        """The viewer canvas as it is on screen: ``(SIZE, SIZE, 3)`` uint8."""
        self.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        box = self.canvas_box()
        data = self.page("Page.captureScreenshot", {"format": "png", "clip": {**box, "scale": 1},
                                                    "captureBeyondViewport": True})["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def mouse(self, kind: str, x: float, y: float, **extra: Any) -> None:
        self.page("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra})

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and requests for anything but local files."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(f"console.{params['type']}: {params['args']}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']}")
            elif method == "Network.requestWillBeSent" and not params["request"]["url"].startswith(("file:", "data:")):
                found.append(f"network request: {params['request']['url']}")
        return found

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=TIMEOUT)
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._send_fd)
            os.close(self._read_fd)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    chromium = Chromium()
    try:
        yield chromium
    finally:
        chromium.close()


def two_sided_texture(size: int = 256, squares: int = 8) -> torch.Tensor:
    """``(3, size, size)``: a checkerboard of ``RED_SIDE`` colours for u < 0.5 and ``BLUE_SIDE`` for u >= 0.5."""
    index = torch.arange(size) * squares // size
    check = (index[:, None] + index[None, :]) % 2  # (rows, cols)
    right = (torch.arange(size) >= size // 2)[None, :].expand(size, size)
    colours = torch.where(right[..., None], BLUE_SIDE[check], RED_SIDE[check])
    return colours.permute(2, 0, 1).contiguous()


def ellipsoid_cap(columns: int = 48, rows: int = 32) -> MorphableModel:
    """A face-sized ellipsoid cap facing +z (longitude +-100 deg, latitude +-70 deg); u follows x, v follows y."""
    theta = torch.linspace(-100.0, 100.0, columns + 1).deg2rad()
    phi = torch.linspace(-70.0, 70.0, rows + 1).deg2rad()
    lat, lon = torch.meshgrid(phi, theta, indexing="ij")
    vertices = torch.stack([70 * lon.sin() * lat.cos(), 95 * lat.sin(), 60 * lon.cos() * lat.cos()], -1).reshape(-1, 3)
    uv = torch.stack([(lon / lon.max() + 1) / 2, (lat / lat.max() + 1) / 2], -1).reshape(-1, 2)
    grid = torch.arange((rows + 1) * (columns + 1)).reshape(rows + 1, columns + 1)
    a, b, c, d = grid[:-1, :-1], grid[:-1, 1:], grid[1:, 1:], grid[1:, :-1]  # counter-clockwise from outside
    triangles = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    empty = torch.zeros(len(vertices), 3, 0)
    return MorphableModel(vertices, empty, empty, triangles, torch.zeros(0), torch.zeros(0), uv=uv)


@pytest.fixture(scope="module", params=["sfm", "generated"])
def gallery(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MorphableModel,
                                                                                                 torch.Tensor]:
    """A run folder with one photo folder holding the known-texture mesh; returns its page, the model, the texture."""
    if request.param == "sfm":
        assets = request.getfixturevalue("shared_assets")
        model = MorphableModel.from_sfm(assets / "sfm" / "sfm_3448.npz")
    else:
        model = ellipsoid_cap()
    texture = two_sided_texture()
    folder = tmp_path_factory.mktemp(f"gallery_{request.param}") / "known_texture"
    write_obj(folder / "face.obj", model.mean, model.triangles, model.uv, texture)
    (folder / "metrics.json").write_text(json.dumps({"rerender": {"psnr": None, "ssim": None}}))
    (folder / "maps").mkdir()  # one overlay: white over the red half
    Image.fromarray(((two_sided_texture()[2] < 0.5).numpy() * 255).astype(np.uint8)).save(folder / "maps" / "red.png")
    (folder / "maps" / "maps.json").write_text(json.dumps([{"file": "red.png", "label": "red half"}]))
    build_gallery(folder.parent)
    return folder / "index.html", model, texture


def reference(model: MorphableModel, texture: torch.Tensor, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """The project's render at ``yaw`` (``(SIZE, SIZE, 3)`` in [0, 1]) and the mesh's mask ``(SIZE, SIZE)``."""
    image = render_turntable(model.mean, model, texture, [yaw], SIZE)[0].permute(1, 2, 0).numpy()
    white = render_turntable(model.mean, model, torch.ones_like(texture), [yaw], SIZE)[0, 0].numpy()
    return image, white > 0.75


def mesh_mask(shot: np.ndarray) -> np.ndarray:
    background = np.array([int(VIEWER_BACKGROUND[i:i + 2], 16) for i in (1, 3, 5)])
    return np.abs(shot.astype(int) - background).sum(-1) > 12


def erode(mask: np.ndarray, steps: int = 2) -> np.ndarray:
    for _ in range(steps):
        mask = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def red_share(shot: np.ndarray, mask: np.ndarray) -> float:
    """Share of the mesh's pixels in the red/yellow family among those clearly red or blue."""
    pixels = shot[mask].astype(int)
    red = (pixels[:, 0] - pixels[:, 2]) > 80
    blue = (pixels[:, 2] - pixels[:, 0]) > 80
    return float(red.sum() / max(1, (red | blue).sum()))


def save(shot: np.ndarray, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    Image.fromarray(shot).save(SHOTS / name)
    return SHOTS / name


def test_viewer_draws_the_known_texture_where_the_mesh_is(browser: Chromium, gallery: tuple) -> None:
    page, model, texture = gallery
    shares = {}
    for yaw in (0.0, 60.0, -60.0):
        browser.open(f"{page.as_uri()}?yaw={yaw:g}")
        assert browser.evaluate("document.body.dataset.viewer") == "ready", browser.evaluate("document.body.innerText")
        shot = browser.screenshot()
        path = save(shot, f"{page.parent.parent.name}_yaw{yaw:+.0f}.png")
        print(f"\nscreenshot: {path}")
        if yaw == 60.0 and page.parent.parent.name.startswith("gallery_sfm"):
            shutil.copyfile(path, Path(tempfile.gettempdir()) / "gallery_shot.png")
        truth, truth_mask = reference(model, texture, yaw)
        drawn = mesh_mask(shot)
        assert iou(drawn, truth_mask) > 0.97, f"yaw {yaw}: the viewer's silhouette differs from the project's render"
        inside = erode(drawn & truth_mask)
        error = np.abs(shot[inside] / 255.0 - truth[inside])
        assert error.mean() < 0.03 and np.quantile(error, 0.9) < 0.08, f"yaw {yaw}: colours differ from the texture's"
        outside = ~(drawn | truth_mask)
        outside = erode(outside)
        background = np.array([int(VIEWER_BACKGROUND[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(shot[outside].astype(int) - background) <= 1).all(), "background is not the page's colour"
        shares[yaw] = red_share(shot, drawn)
    print(f"red/yellow share of the mesh's pixels by yaw: {shares}")
    assert 0.3 < shares[0.0] < 0.7  # frontal: both halves
    assert shares[60.0] > 0.8 and shares[-60.0] < 0.2  # nose to the right shows the -x (red) side, and back
    assert browser.problems() == []


def test_drag_reset_zoom_and_shaded_mode(browser: Chromium, gallery: tuple) -> None:
    page, model, texture = gallery
    browser.open(f"{page.as_uri()}?yaw=60")
    turned = browser.screenshot()
    browser.open(page.as_uri())
    front = browser.screenshot()
    box = browser.canvas_box()
    x, y = box["x"] + SIZE / 2, box["y"] + SIZE / 2
    browser.mouse("mousePressed", x, y, button="left", buttons=1, clickCount=1)
    for step in range(1, 7):  # 120 px to the right at 0.5 degree per pixel
        browser.mouse("mouseMoved", x + 20 * step, y, button="left", buttons=1)
    browser.mouse("mouseReleased", x + 120, y, button="left", buttons=0, clickCount=1)
    assert browser.wait_for("document.getElementById('viewer').dataset.yaw === '60.0'")
    dragged = browser.screenshot()
    assert np.abs(dragged.astype(int) - turned).max() <= 2  # the drag reached the same view as ?yaw=60
    assert iou(mesh_mask(dragged), mesh_mask(front)) < 0.9

    browser.evaluate("document.getElementById('viewer-reset').click()")
    assert browser.wait_for("document.getElementById('viewer').dataset.yaw === '0.0'")
    assert np.abs(browser.screenshot().astype(int) - front).max() <= 2

    browser.page("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": x, "y": y, "deltaX": 0, "deltaY": -400})
    zoom = float(browser.wait_for("document.getElementById('viewer').dataset.zoom !== '1.000' && "
                                  "document.getElementById('viewer').dataset.zoom"))
    assert zoom == pytest.approx(np.exp(0.4), rel=1e-3)
    assert mesh_mask(browser.screenshot()).sum() > 1.3 * mesh_mask(front).sum()
    browser.evaluate("document.getElementById('viewer-reset').click()")

    browser.evaluate("document.querySelector('input[value=shaded]').click()")
    assert browser.wait_for("document.getElementById('viewer').dataset.mode === 'shaded'")
    shaded = browser.screenshot()
    save(shaded, f"{page.parent.parent.name}_shaded.png")
    drawn = mesh_mask(shaded)
    assert iou(drawn, mesh_mask(front)) > 0.98
    pixels = shaded[erode(drawn)].astype(int)
    assert np.abs(pixels - pixels[:, :1]).max() <= 4 and pixels.std() > 5  # grey (texture pairs differ by > 80), lit unevenly
    assert browser.problems() == []


def test_texture_overlay_is_loaded_only_when_picked(browser: Chromium, gallery: tuple) -> None:
    browser.events.clear()
    browser.open(gallery[0].as_uri())
    overlay = "document.getElementById('uv-overlay')"
    assert browser.evaluate(f"[getComputedStyle({overlay}).display, {overlay}.getAttribute('src')]") == ["none", None]
    pick = "(value => {{ const s = document.querySelector('select[data-overlay]'); s.value = value; " \
           "s.dispatchEvent(new Event('change')); }})({!r})"
    browser.evaluate(pick.format("maps/red.png"))
    assert browser.wait_for(f"{overlay}.complete && {overlay}.naturalWidth") == 256
    assert browser.evaluate(f"getComputedStyle({overlay}).display") == "block"
    browser.evaluate(pick.format(""))
    assert browser.evaluate(f"getComputedStyle({overlay}).display") == "none"
    requested = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert sum(url.endswith("/maps/red.png") for url in requested) == 1  # fetched once, when picked
    assert browser.problems() == []
    browser.events.clear()


def test_bad_url_parameter_is_reported_on_the_page(browser: Chromium, gallery: tuple) -> None:
    page = gallery[0]
    browser.open(f"{page.as_uri()}?yaw=left")
    assert browser.evaluate("document.body.dataset.viewer") == "error"
    assert "yaw=left is not a number" in browser.evaluate("document.getElementById('viewer-status').textContent")
    assert any("yaw=left" in problem for problem in browser.problems())
    browser.events.clear()
