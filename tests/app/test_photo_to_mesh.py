"""The photo job's limits: big photos, a full disk and Ctrl-C each end at once, in one line, with nothing written."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import app.photo_to_mesh as job
from app.face_outputs import face_folder_bytes
from app.photo_to_mesh import OutputFolderError, photo_to_mesh
from facetex.face3d.image_io import ImageTooLargeError
from facetex.face3d.pipeline import AssetPaths
from tests.image_fixtures import bomb_png
from tests.tmpfs import mounted_tmpfs

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "photo_to_mesh.py"
NO_ASSETS = AssetPaths(*(Path("/nonexistent") / name for name in "abcdefg"))  # the checks come before any asset


@pytest.fixture()
def ctrl_c_raises() -> Iterator[None]:
    """Python's own Ctrl-C handling, as in a terminal (a shell starts background jobs with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def terminal_ctrl_c() -> None:
    """In the child before it runs the script: Ctrl-C as in a terminal, even when these tests run in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture()
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs); where it cannot be mounted, the free-space check is tested with a fake
    disk_usage instead."""
    with mounted_tmpfs(tmp_path / "full", "1m") as mount:
        yield mount


def test_a_disk_without_room_for_the_files_is_refused_before_any_work(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(job.shutil, "disk_usage", lambda path: real._replace(free=face_folder_bytes(1024) - 1))
    with pytest.raises(OutputFolderError, match=r"not enough free space .*'.*out'.* need about 11\.0 MiB"):
        photo_to_mesh(tmp_path / "absent.png", tmp_path / "out", NO_ASSETS, texture_size=1024, progress=False)
    monkeypatch.setattr(job.shutil, "disk_usage", lambda path: real._replace(free=face_folder_bytes(1024)))
    with pytest.raises(FileNotFoundError, match="absent.png"):  # enough room: on to the photo
        photo_to_mesh(tmp_path / "absent.png", tmp_path / "out", NO_ASSETS, texture_size=1024, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_full_file_system_is_said_at_once(small_tmpfs: Path) -> None:
    with pytest.raises(OutputFolderError, match=f"not enough free space .*{small_tmpfs}"):
        photo_to_mesh(small_tmpfs / "absent.png", small_tmpfs / "out", NO_ASSETS, texture_size=256, progress=False)
    assert list(small_tmpfs.iterdir()) == []


def test_a_decompression_bomb_is_refused_before_any_asset_is_read(tmp_path: Path) -> None:
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        photo_to_mesh(bomb_png(tmp_path / "bomb.png"), tmp_path / "out", NO_ASSETS, progress=False)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_inside_a_long_native_call_stops_the_job_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                ctrl_c_raises: None) -> None:
    """The photo's decoding stands in for any long stage: a native call that holds no Python frame."""
    monkeypatch.setattr(job, "load_image", lambda path, max_side: time.sleep(5.0))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        photo_to_mesh(tmp_path / "photo.png", tmp_path / "out", NO_ASSETS, progress=False)
    timer.join()
    assert time.perf_counter() - started < 2.0
    assert list(tmp_path.iterdir()) == []


def test_script_says_a_bomb_in_one_line(shared_assets: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--image", str(bomb_png(tmp_path / "bomb.png")), "--out",
                             str(tmp_path / "out"), "--assets", str(shared_assets)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and "photo_to_mesh:" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "too large to decode safely" in lines[0]
    assert not (tmp_path / "out").exists()


def test_script_exits_130_on_ctrl_c_and_writes_nothing(shared_assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--image", str(shared_assets / "faces" / "ffhq_00009.png"),
                                "--out", str(out), "--assets", str(shared_assets), "--uv-size", "256"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=terminal_ctrl_c)
    seen = ""
    while "fit face model" not in seen:  # the progress bar names each stage as it starts
        chunk = process.stderr.read(1)
        assert chunk, f"the job ended before fitting: {seen[-2000:]}"
        seen += chunk
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    _, rest = process.communicate(timeout=60)
    assert time.perf_counter() - sent < 5.0  # generous for a loaded machine: it answers in about 0.2 s
    assert process.returncode == 130
    assert rest.strip().splitlines()[-1] == f"interrupted: nothing written to {out}"
    assert list(tmp_path.iterdir()) == []
