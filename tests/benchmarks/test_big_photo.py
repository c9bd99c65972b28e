"""benchmarks/big_photo.py's parts: the big photo it makes, and what it reads off each child process."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.big_photo import TIME, make_big_photo, run_child


def test_the_big_photo_is_a_4_by_3_jpeg_of_the_asked_size_around_the_face(tmp_path: Path) -> None:
    face = np.zeros((64, 64, 3), np.uint8)
    face[:, :8] = 255  # a white band on the face's left edge
    Image.fromarray(face).save(tmp_path / "face.png")
    width, height = make_big_photo(tmp_path / "face.png", tmp_path / "big.jpg", megapixels=0.3)
    with Image.open(tmp_path / "big.jpg") as big:
        assert big.format == "JPEG" and big.size == (width, height) == (632, 474)
        pixels = np.asarray(big.convert("L"), dtype=int)
    left = (width - height) // 2
    assert pixels[:, left: left + 40].mean() > 200 and pixels[:, left - 40: left].mean() > 200  # face band, mirror
    assert pixels[:, width // 2].mean() < 30


@pytest.mark.skipif(not TIME.is_file(), reason="needs GNU time at /usr/bin/time")
def test_each_child_reports_its_own_peak_memory_and_an_interrupt(tmp_path: Path) -> None:
    grow = [sys.executable, "-c", "import sys; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
                                  "print('allocated', file=sys.stderr, flush=True); import time; time.sleep(30)"]
    grown = run_child(grow[:2] + [grow[2].replace("time.sleep(30)", "pass")], env={})
    assert grown["returncode"] == 0 and grown["peak_rss_bytes"] >= 200 * 2**20 and grown["cpu_s"] > 0
    small = run_child([sys.executable, "-c", "pass"], env={})
    assert small["returncode"] == 0 and small["peak_rss_bytes"] < 100 * 2**20  # its own, not this process's
    stopped = run_child(grow, env={}, interrupt=("allocated", 0.1))
    assert stopped["returncode"] != 0 and stopped["interrupt_to_exit_s"] < 5  # SIGINT: KeyboardInterrupt in sleep
    assert "KeyboardInterrupt" in stopped["stderr_tail"]
