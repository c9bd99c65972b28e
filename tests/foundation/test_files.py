"""All-or-nothing writes on a full or unwritable disk: one OutputWriteError naming the folder, nothing left behind;
staged folders get the user's umask."""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from foundation.errors import InputError
from foundation.files import OutputWriteError, atomic_paths, staged_folder, write_failure
from tests.tmpfs import mounted_tmpfs


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted at ``tmp_path/full``."""
    with mounted_tmpfs(tmp_path / "full", "64k") as mount:
        yield mount


def test_staged_folder_gets_the_umask_like_mkdir(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        with staged_folder(tmp_path / "out") as staging:
            (staging / "a.txt").write_text("a")
        (tmp_path / "made").mkdir()
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == (tmp_path / "made").stat().st_mode & 0o777 == 0o755


def no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_on_a_full_disk_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out" / "grid.png"
    with pytest.raises(OutputWriteError) as raised:
        with atomic_paths(target) as (temporary,):
            temporary.write_bytes(b"x" * 1000)
            no_space()
    message = str(raised.value)
    assert isinstance(raised.value, InputError) and "\n" not in message
    assert f"no space left on the file system of {target.parent}" in message and "grid.png" in message
    assert "1000 B written before the disk filled" in message and "free" in message
    assert sorted(p.name for p in target.parent.iterdir()) == []


def test_staged_folder_on_a_full_disk_removes_the_staging_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputWriteError, match=f"no space left on the file system of {tmp_path} for the folder out"):
        with staged_folder(tmp_path / "out") as staging:
            (staging / "a.bin").write_bytes(b"x" * 10)
            no_space()
    assert list(tmp_path.iterdir()) == []


def test_errors_that_are_not_about_space_or_permission_pass_through(tmp_path: Path) -> None:
    assert write_failure(OSError(errno.ENOENT, "No such file"), tmp_path, "x") is None
    assert write_failure(ValueError("bad"), tmp_path, "x") is None
    elsewhere = PermissionError(errno.EACCES, "Permission denied", "/etc/shadow")
    assert write_failure(elsewhere, tmp_path, "x") is None  # an input the body could not read is not the output's fault
    with pytest.raises(FileNotFoundError):
        with atomic_paths(tmp_path / "a.txt"):
            (tmp_path / "missing" / "b.txt").read_text()


def test_read_only_folder_names_the_folder(tmp_path: Path) -> None:
    failure = write_failure(OSError(errno.EROFS, "Read-only file system", str(tmp_path / "a")), tmp_path, "a.txt")
    assert failure is not None and str(failure) == f"cannot write a.txt in {tmp_path}: a read-only file system; write somewhere else"


def test_a_real_full_file_system(small_tmpfs: Path) -> None:
    """On a 64 KiB tmpfs: a 1 MiB file does not fit; the error names the folder and the space free."""
    with pytest.raises(OutputWriteError, match=rf"no space left on the file system of {small_tmpfs} for big.bin \(.*free\)"):
        with atomic_paths(small_tmpfs / "big.bin") as (temporary,):
            temporary.write_bytes(b"x" * (1 << 20))
    assert list(small_tmpfs.iterdir()) == []
