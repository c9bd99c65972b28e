"""A real small file system for full-disk tests: a tmpfs mounted for one test (root only)."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """``mount`` (created) as a tmpfs of ``size`` (e.g. ``"64k"``) until the block ends; skips the test where
    mounting is not allowed."""
    mount.mkdir()
    done = (subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
            if shutil.which("mount") else None)
    if done is None or done.returncode != 0:
        reason = "no mount command" if done is None else done.stderr.decode().strip() or done.returncode
        pytest.skip(f"cannot mount a {size} tmpfs here: {reason}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
