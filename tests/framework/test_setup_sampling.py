"""``make setup-sampling`` picks its wheels as documented: right Python, right checksum, the cheapest way first."""
from __future__ import annotations

import hashlib
import importlib.util
import platform
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "setup_sampling.py"
TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"
PYG_LIB = "pyg_lib-0.8.0-cp310-abi3-linux_x86_64.whl"
SCATTER = f"torch_scatter-2.1.2-{TAG}-{TAG}-linux_x86_64.whl"
SPARSE = f"torch_sparse-0.6.18-{TAG}-{TAG}-linux_x86_64.whl"
pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="the wheel names here are for Linux x86-64")


@pytest.fixture(scope="module")
def setup_sampling():
    spec = importlib.util.spec_from_file_location("setup_sampling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def wheelhouse(folder: Path, names: list[str], sums: bool = True) -> Path:
    """Files named like wheels (contents are their names) and, if ``sums``, a SHA256SUMS listing them."""
    folder.mkdir(parents=True)
    lines = []
    for name in names:
        (folder / name).write_text(name)
        lines.append(f"{hashlib.sha256(name.encode()).hexdigest()}  {name}")
    if sums:
        (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return folder


def test_wheels_must_fit_this_python_and_their_checksums(setup_sampling, tmp_path):
    good = wheelhouse(tmp_path / "good", [PYG_LIB, SCATTER, SPARSE])
    assert setup_sampling.find_wheels(good, "pyg-lib").files == (good / PYG_LIB,)
    assert setup_sampling.find_wheels(good, "torch-sparse").files == (good / SCATTER, good / SPARSE)

    (good / PYG_LIB).write_text("replaced")
    assert "does not match its SHA-256" in setup_sampling.find_wheels(good, "pyg-lib").problem
    unlisted = wheelhouse(tmp_path / "unlisted", [SCATTER])
    (unlisted / SPARSE).write_text(SPARSE)
    assert "is not listed in" in setup_sampling.find_wheels(unlisted, "torch-sparse").problem
    assert setup_sampling.find_wheels(wheelhouse(tmp_path / "nosums", [PYG_LIB], sums=False), "pyg-lib").problem is None

    other = wheelhouse(tmp_path / "other", ["torch_scatter-2.1.2-cp39-cp39-linux_x86_64.whl", SPARSE])
    assert "no torch_scatter wheel for this Python" in setup_sampling.find_wheels(other, "torch-sparse").problem
    assert "no folder" in setup_sampling.find_wheels(tmp_path / "missing", "pyg-lib").problem


def test_ways_are_tried_cheapest_first_and_building_comes_last(setup_sampling, tmp_path, monkeypatch, capsys):
    shared = wheelhouse(tmp_path / "shared", [PYG_LIB, SCATTER, SPARSE])
    cache = wheelhouse(tmp_path / "cache", [PYG_LIB])
    tried: list[str] = []
    works: set[str] = set()

    def install_wheels(wheels, way):
        tried.append(f"{way} {wheels.folder.name}")
        return f"{way} {wheels.folder.name}" in works

    def install_from_index(index):
        tried.append(f"pyg-lib {index}")
        return f"pyg-lib {index}" in works

    monkeypatch.setattr(setup_sampling, "install_wheels", install_wheels)
    monkeypatch.setattr(setup_sampling, "install_from_index", install_from_index)
    arguments = ["--wheelhouse", str(shared), "--cache", str(cache), "--index", "INDEX"]

    works.add("pyg-lib shared")
    assert setup_sampling.main(arguments) == 0 and tried == ["pyg-lib shared"]
    assert f"setup-sampling: pyg-lib from {shared} ({PYG_LIB}) in " in capsys.readouterr().out

    tried.clear()
    works.clear()
    built = tmp_path / "built"
    build = f"{sys.executable} -c \"open('{built}', 'w').write('{{cache}}')\""
    assert setup_sampling.main([*arguments, "--build", build]) == 1  # built, but the cache holds no torch-sparse
    assert tried == ["pyg-lib shared", "pyg-lib cache", "pyg-lib INDEX", "torch-sparse shared"]
    assert built.read_text() == str(cache)  # the build command was given the cache folder
    assert f"no torch_scatter wheel for this Python in {cache}" in capsys.readouterr().err

    tried.clear()
    works.add("torch-sparse shared")
    assert setup_sampling.main(arguments) == 0 and tried[-1] == "torch-sparse shared"
    assert "setup-sampling: torch-sparse from" in capsys.readouterr().out
