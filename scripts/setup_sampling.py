"""Install PyG's graph-sampling kernels for the installed torch, the quickest way that works (``make setup-sampling``).

    .venv/bin/python scripts/setup_sampling.py --wheelhouse ../shared/wheels --build "make torch-sparse-metis-wheel"

pyg-lib gives PyG everything the project samples and partitions with (``NeighborLoader``, homogeneous
and heterogeneous; METIS for ``ClusterData`` and PyG's ``Partitioner``; ``DistNeighborLoader``), so
it is tried first: a wheel from the wheelhouse, then from the cache, then from PyG's wheel index
(``--index``; offline this gives up within seconds). torch-scatter + torch-sparse with METIS can do
all but distributed sampling; they are the fallback, again wheelhouse and cache first, and built
from their PyPI sources into the cache only when no wheel works (``--build``, up to an hour on 2 cores).

A wheel is used only if its name fits this Python and platform, its SHA-256 matches the folder's
``SHA256SUMS`` (when the folder has one) and, once installed, it loads with this torch and passes a
check: METIS separates two disjoint triangles (a 32-bit METIS crashes it) and, for pyg-lib, the
neighbour-sampling kernel exists. A wheel that fails is uninstalled and the next way is tried.
Every attempt prints one line; the last says which way worked and how long it took.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

CHECKSUMS = "SHA256SUMS"
TRIANGLES = "torch.tensor([0, 2, 4, 6, 8, 10, 12]), torch.tensor([1, 2, 0, 2, 0, 1, 4, 5, 3, 5, 3, 4])"
SEPARATED = "assert len(set(part[:3].tolist())) == len(set(part[3:].tolist())) == 1 and part[0] != part[3], part"
CHECKS = {
    "pyg-lib": f"import torch, pyg_lib; part = pyg_lib.partition.metis({TRIANGLES}, 2); {SEPARATED}; "
               "assert hasattr(torch.ops.pyg, 'neighbor_sample')",
    "torch-sparse": f"import torch, torch_scatter, torch_sparse; "
                    f"part = torch.ops.torch_sparse.partition({TRIANGLES}, None, 2, False); {SEPARATED}",
}
PACKAGES = {"pyg-lib": ("pyg_lib",), "torch-sparse": ("torch_scatter", "torch_sparse")}
"""The distributions each way installs, by their wheel-name prefix (torch-sparse needs torch-scatter)."""


def torch_tag() -> str:
    """``cp311-torch-2.13.0+cpu``: what prebuilt kernels must match (read without importing torch, which takes seconds)."""
    return f"cp{sys.version_info[0]}{sys.version_info[1]}-torch-{importlib.metadata.version('torch')}"


def pyg_index() -> str:
    """PyG's wheel index page for the installed torch."""
    return f"https://data.pyg.org/whl/torch-{importlib.metadata.version('torch')}.html"


@dataclass(frozen=True)
class Wheels:
    """Wheels of one way (pyg-lib, or torch-scatter + torch-sparse) found in one folder, or why none fit."""

    folder: Path
    files: tuple[Path, ...]
    problem: str | None = None


def fits_this_python(wheel: Path) -> bool:
    """Whether pip could install ``wheel`` here: one of its tags is one of this interpreter's."""
    try:
        _, _, _, tags = parse_wheel_filename(wheel.name)
    except ValueError:
        return False
    return not tags.isdisjoint(set(sys_tags()))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_problem(wheel: Path) -> str | None:
    """Why ``wheel`` fails its folder's ``SHA256SUMS`` (not listed, or another digest); None if it passes or there is none."""
    sums = wheel.parent / CHECKSUMS
    if not sums.is_file():
        return None
    listed = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, _, name = line.strip().partition("  ")
            listed[name.lstrip("*")] = digest.lower()
    if wheel.name not in listed:
        return f"{wheel.name} is not listed in {sums}"
    if sha256(wheel) != listed[wheel.name]:
        return f"{wheel.name} does not match its SHA-256 in {sums} (damaged or replaced)"
    return None


def find_wheels(folder: Path, way: str) -> Wheels:
    """The newest wheel of each distribution of ``way`` in ``folder`` that fits this Python and its checksum."""
    if not folder.is_dir():
        return Wheels(folder, (), f"no folder {folder}")
    chosen = []
    for prefix in PACKAGES[way]:
        candidates = sorted(w for w in folder.glob(f"{prefix}-*.whl") if fits_this_python(w))
        if not candidates:
            return Wheels(folder, (), f"no {prefix} wheel for this Python in {folder}")
        wheel = max(candidates, key=lambda w: parse_wheel_filename(w.name)[1])
        if (problem := checksum_problem(wheel)) is not None:
            return Wheels(folder, (), problem)
        chosen.append(wheel)
    return Wheels(folder, tuple(chosen))


def run(command: list[str], show: str = "on failure") -> bool:
    """Run ``command``; True if it succeeded. Its output is shown ``"always"``, ``"on failure"`` or ``"never"``."""
    done = subprocess.run(command, capture_output=show != "always", text=True)
    if done.returncode != 0 and show == "on failure":
        print(f"  {shlex.join(command)} failed:\n{(done.stdout + done.stderr).strip()[-2000:]}", file=sys.stderr)
    return done.returncode == 0


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def check(way: str) -> bool:
    """Whether the installed ``way`` loads with this torch and passes its METIS (and sampling) check."""
    return run([sys.executable, "-c", CHECKS[way]])


def installed_and_checked(install: list[str], way: str, show: str = "on failure") -> bool:
    """Run the pip ``install`` command, then the check; a failed check uninstalls what was installed.

    (A failed pip command changes nothing: pip rolls back.)
    """
    if not run(install, show):
        return False
    if check(way):
        return True
    run(pip("uninstall", "-y", "-q", *(name.replace("_", "-") for name in PACKAGES[way])))
    return False


def install_wheels(wheels: Wheels, way: str) -> bool:
    """Install ``wheels`` (without dependencies: torch is already there) and check them."""
    return installed_and_checked(pip("install", "-q", "--no-deps", "--force-reinstall", *map(str, wheels.files)), way)


def install_from_index(index: str) -> bool:
    """pyg-lib from PyG's wheel index for this torch (10 s timeout, no retries: offline gives up at once)."""
    return installed_and_checked(pip("install", "-q", "--force-reinstall", "--no-deps", "--timeout", "10", "--retries",
                                     "0", "--no-index", "--find-links", index, "pyg-lib"), "pyg-lib", show="never")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheelhouse", type=Path, action="append", default=[],
                        help="folder of prebuilt wheels, tried in the order given (e.g. ../shared/wheels)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "gnn-face-kd" / torch_tag(),
                        help="this Python and torch's own wheel folder: tried after the wheelhouses, built into last "
                             "(default ~/.cache/gnn-face-kd/<cpXY-torch-version>)")
    parser.add_argument("--index", default=pyg_index(), help="PyG's wheel index page for this torch ('' to skip it)")
    parser.add_argument("--build", help="command that builds torch-scatter + torch-sparse wheels with METIS into the "
                                        "folder it is given as {cache}")
    args = parser.parse_args(argv)
    folders = [*args.wheelhouse, args.cache]
    start = time.monotonic()

    def done(how: str) -> int:
        print(f"setup-sampling: {how} in {time.monotonic() - start:.0f} s")
        return 0

    for way in ("pyg-lib", "torch-sparse"):
        for folder in folders:
            wheels = find_wheels(folder, way)
            if wheels.problem is not None:
                print(f"setup-sampling: {way}: {wheels.problem}")
            elif install_wheels(wheels, way):
                return done(f"{way} from {folder} ({', '.join(w.name for w in wheels.files)})")
            else:
                print(f"setup-sampling: {way}: the wheels in {folder} do not work with this torch (output above)")
        if way == "pyg-lib" and args.index:
            if install_from_index(args.index):
                return done(f"pyg-lib from {args.index}")
            print(f"setup-sampling: pyg-lib: none from {args.index} (offline, or no wheel for this torch) "
                  f"after {time.monotonic() - start:.0f} s")
    if not args.build:
        print("setup-sampling: no working wheel found, and no --build command given", file=sys.stderr)
        return 1
    print(f"setup-sampling: building torch-scatter + torch-sparse with METIS into {args.cache} "
          "(15-60 min on 2 cores; later set-ups of this Python and torch take the wheels from there)")
    if not run(shlex.split(args.build.format(cache=args.cache)), show="always"):
        return 1
    wheels = find_wheels(args.cache, "torch-sparse")
    if wheels.problem is None and install_wheels(wheels, "torch-sparse"):
        return done(f"torch-sparse built into {args.cache}")
    print(f"setup-sampling: after the build: {wheels.problem or 'the wheels built do not pass their check'}; "
          f"delete {args.cache} and rerun", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
