"""Rasteriser speed: ``python -m benchmarks.rasterizer [--sim3dr PATH] [--quick] [--out FILE.json]``.

Prints a Markdown table. Cases: (a) image-space rasters at 512x512 of the BFM no-neck
mean face (38,365 vertices, 76,073 triangles) and of the Surrey Face Model mesh, (b)
the BFM UV layout at 1024x1024 (triangle ids + barycentrics + depth), (c) the UV colour
texture at 1024 (``rasterize_uv`` + ``interpolate`` of per-vertex colours, the
``uv_tex`` path), each by the C++ backend ("ours") and the pure-PyTorch backend, and
(d) the default backend against the loop-over-triangles reference below on a small
image. With ``--sim3dr PATH`` (the folder holding 3DDFA_V2's built ``Sim3DR_Cython``
extension, built outside this repository) the same rasters are also timed with Sim3DR's
``rasterize_triangles`` (a, b) and ``rasterize`` (c) in the same process, and the table
gives the ratios. Every compared call's output is also checked against ours (:func:`agreement`): the
pixels covered by one and not the other, the share of covered pixels where the same triangle wins, the
largest depth difference and how many pixels differ by more than 0.01, and for (c) the largest colour difference in 8-bit grey levels (Sim3DR takes
colours in [0, 1] and writes ``uint8(255 c)``). Real meshes come from ``../shared/assets`` (or ``$SHARED_ASSETS``);
when absent, a generated grid mesh of the same size stands in and the table says so.
The compared calls are timed in turn, round after round (so load from other processes
falls on all alike); medians after warm-ups, wall-clock and process CPU time.
"""
from __future__ import annotations

import argparse
import importlib
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from benchmarks.machine import ASSETS, machine, machine_line, write_json
from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d.rasterizer import Backend, active_backend, interpolate, rasterize, rasterize_uv, uv_to_pixels


def reference_rasterize(screen_vertices: Tensor, faces: Tensor, image_size: tuple[int, int]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Obviously-correct z-buffer, one triangle at a time in float64 numpy (small images only).

    A pixel centre is inside when all three barycentrics are >= 0; a strictly nearer
    triangle replaces the stored one. Each triangle tests the pixels of its bounding box
    grown by one pixel (no centre outside it can be inside). Returns ``triangle_id (H, W)``
    (-1 empty), ``barycentric (H, W, 3)``, ``depth (H, W)`` (+inf empty) for a single mesh ``(V, 3)``.
    """
    height, width = image_size
    vertices = screen_vertices.detach().double().cpu().numpy()
    triangle_id = np.full((height, width), -1)
    barycentric = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    for index, (i, j, k) in enumerate(faces.cpu().numpy()):
        a, b, c = vertices[i], vertices[j], vertices[k]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        corners = np.stack([a, b, c])[:, :2]
        if area == 0 or not np.isfinite(corners).all():
            continue
        col0, row0 = np.maximum(np.floor(corners.min(axis=0) - 0.5), 0).astype(int)
        col1, row1 = np.minimum(np.ceil(corners.max(axis=0) - 0.5), [width - 1, height - 1]).astype(int)
        if col1 < col0 or row1 < row0:
            continue
        ys, xs = np.mgrid[row0:row1 + 1, col0:col1 + 1] + 0.5
        w0 = ((c[0] - b[0]) * (ys - b[1]) - (c[1] - b[1]) * (xs - b[0])) / area
        w1 = ((a[0] - c[0]) * (ys - c[1]) - (a[1] - c[1]) * (xs - c[0])) / area
        w2 = 1.0 - w0 - w1
        z = w0 * a[2] + w1 * b[2] + w2 * c[2]
        window = (slice(row0, row1 + 1), slice(col0, col1 + 1))
        nearer = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (z < depth[window])
        triangle_id[window][nearer] = index
        depth[window][nearer] = z[nearer]
        barycentric[window][nearer] = np.stack([w0, w1, w2], axis=-1)[nearer]
    return triangle_id, barycentric, depth


def grid_mesh(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """A ``rows x cols`` vertex grid over the unit square: positions ``(V, 2)``, faces ``(F, 3)``."""
    v, u = torch.meshgrid(torch.linspace(0, 1, rows), torch.linspace(0, 1, cols), indexing="ij")
    index = torch.arange(rows * cols).view(rows, cols)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).view(-1, 3), torch.stack([a, d, c], -1).view(-1, 3)])
    return torch.stack([u, v], -1).view(-1, 2), faces


@dataclass
class Timing:
    wall_ms: float
    cpu_ms: float


def time_call(call: Callable[[], object], runs: int, warmup: int = 2) -> Timing:
    """Median wall-clock and process-CPU milliseconds of ``call`` after ``warmup`` calls."""
    return time_in_turn({"call": call}, runs, warmup)["call"]


def time_in_turn(calls: dict[str, Callable[[], object]], runs: int, warmup: int = 2) -> dict[str, Timing]:
    """Median wall-clock and process-CPU milliseconds of each call, the calls timed in turn each round."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    walls: dict[str, list[float]] = {name: [] for name in calls}
    cpus: dict[str, list[float]] = {name: [] for name in calls}
    for _ in tqdm(range(runs), leave=False):
        for name, call in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {name: Timing(1e3 * statistics.median(walls[name]), 1e3 * statistics.median(cpus[name])) for name in calls}


def screen_mesh(vertices: Tensor, faces: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """``vertices (V, 3)`` turned 30 degrees and scaled to fill a ``size`` image: ``(1, V, 3)``, faces."""
    extent = float((vertices.amax(0) - vertices.amin(0))[:2].max())
    rotation = euler_to_rotation(torch.tensor([30.0]), torch.tensor([10.0]), torch.tensor([0.0]))
    screen = project(vertices[None].float(), rotation, torch.tensor([0.8 * size / extent]),
                     torch.tensor([[size / 2, size / 2]]))
    return screen, faces.long()


def bump_grid(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """A grid mesh lifted into a bump, standing in for a face: ``(V, 3)``, faces."""
    points, faces = grid_mesh(rows, cols)
    bump = torch.exp(-((points - 0.5) ** 2).sum(-1) / 0.1)[:, None]
    return torch.cat([(points - 0.5) * 160, 60 * bump], -1), faces


def sfm_screen_mesh(size: int) -> tuple[Tensor, Tensor, str]:
    """The SFM mean face turned 30 degrees, filling a ``size`` image: ``(1, V, 3)``, faces, source."""
    path = ASSETS / "sfm" / "sfm_3448.npz"
    if path.is_file():
        data = np.load(path)
        vertices, faces, source = torch.from_numpy(data["mean"]), torch.from_numpy(data["triangles"]), "SFM 3448"
    else:
        vertices, faces = bump_grid(59, 59)  # 3481 vertices, 6728 triangles
        source = "generated grid (SFM absent)"
    return *screen_mesh(vertices, faces, size), source


def bfm_screen_mesh(size: int) -> tuple[Tensor, Tensor, str]:
    """The BFM no-neck mean face turned 30 degrees, filling a ``size`` image: ``(1, V, 3)``, faces, source."""
    path = ASSETS / "bfm" / "bfm_noneck_mean.npz"
    if path.is_file():
        data = np.load(path)
        vertices = torch.from_numpy(data["u"].T.astype(np.float32))
        faces, source = torch.from_numpy(data["tri"].T.astype(np.int64)), "BFM no-neck 38365 / 76073"
    else:
        vertices, faces = bump_grid(196, 196)  # 38416 vertices, 76050 triangles
        source = "generated grid (BFM absent)"
    return *screen_mesh(vertices, faces, size), source


def bfm_uv_mesh() -> tuple[Tensor, Tensor, str]:
    """The BFM no-neck UV layout ``(V, 2)`` and faces; a same-size grid when assets are absent."""
    tri_path, uv_path, indices_path = (ASSETS / "bfm" / name for name in ("tri.pkl", "BFM_UV.mat", "indices.npy"))
    if tri_path.is_file() and uv_path.is_file() and indices_path.is_file():
        from scipy.io import loadmat

        with open(tri_path, "rb") as handle:
            faces = torch.from_numpy(np.asarray(pickle.load(handle)).T.astype(np.int64))
        uv = loadmat(str(uv_path))["UV"][np.load(indices_path)]
        return torch.from_numpy(uv).float(), faces, "BFM no-neck 38365 / 76073"
    points, faces = grid_mesh(196, 196)  # 38416 vertices, 76050 triangles
    return points, faces, "generated grid (BFM absent)"


class Sim3DR:
    """3DDFA_V2's Sim3DR rasteriser, imported from the folder holding its built ``Sim3DR_Cython``.

    Sim3DR samples pixel ``(x, y)`` at integer coordinates and keeps the larger depth, so
    vertices are given shifted by half a pixel with depth negated; then it picks the same
    pixels (on the BFM cases, the same triangle at every covered pixel too).
    Each call allocates its buffers, as Sim3DR's own Python wrapper does.
    """

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir() or not any(folder.glob("Sim3DR_Cython*")):
            raise SystemExit(f"--sim3dr {folder}: no built Sim3DR_Cython extension there; run "
                             "'python setup.py build_ext --inplace' in 3DDFA_V2's Sim3DR/ folder and pass that folder")
        sys.path.insert(0, str(folder))
        try:
            self.module = importlib.import_module("Sim3DR_Cython")
        finally:
            sys.path.remove(str(folder))

    @staticmethod
    def inputs(screen: Tensor, faces: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(V, 3)`` float32 vertices in Sim3DR's convention and ``(F, 3)`` int32 triangles."""
        vertices = screen.detach().float().cpu().numpy() * np.float32([1, 1, -1]) - np.float32([0.5, 0.5, 0])
        triangles = np.ascontiguousarray(faces.cpu().numpy(), dtype=np.int32)
        return np.ascontiguousarray(vertices, dtype=np.float32), triangles

    def rasterize_triangles(self, vertices: np.ndarray, triangles: np.ndarray, height: int, width: int
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Triangle ids ``(H, W)`` (-1 empty) and depth ``(H, W)`` in our sign (+inf empty), from ``rasterize_triangles``."""
        depth = np.full((height, width), -1e8, dtype=np.float32)
        triangle = np.full((height, width), -1, dtype=np.int32)
        barycentric = np.zeros((height * width, 3), dtype=np.float32)
        self.module.rasterize_triangles(vertices, triangles, depth, triangle, barycentric, len(triangles),
                                        height, width)
        return triangle, np.where(depth > -1e8, -depth, np.inf)

    def rasterize(self, vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray, height: int, width: int
                  ) -> np.ndarray:
        """A ``(H, W, C)`` uint8 image interpolated from per-vertex colours in [0, 1] (``rasterize``, as
        ``Sim3DR.rasterize``: it writes ``uint8(255 c)`` itself, so colours must not be scaled by 255 first)."""
        image = np.zeros((height, width, colours.shape[1]), dtype=np.uint8)
        depth = np.full((height, width), -1e8, dtype=np.float32)
        self.module.rasterize(image, vertices, triangles, colours, depth, len(triangles), height, width,
                              colours.shape[1])
        return image


@dataclass
class Row:
    case: str
    ours: Timing  # the C++ backend
    torch: Timing  # the pure-PyTorch backend
    sim3dr: Timing | None
    agreement: dict[str, str]  # peer ("torch", "sim3dr") -> how its output compares with ours (:func:`agreement`)


def agreement(ours: tuple[Tensor | np.ndarray, ...], theirs: tuple[Tensor | np.ndarray, ...]) -> str:
    """How a peer's raster compares with ours, both ``(triangle_id (H, W), depth (H, W))`` (-1 / +inf empty) or
    ``(colour (H, W, C) in 8-bit levels, covered (H, W))``: pixels covered by only one of the two, then (ids) the
    share of pixels both cover where the same triangle wins and the largest depth difference there, or (colours)
    the largest colour difference there in grey levels."""
    first, second = (np.asarray(a.cpu() if isinstance(a, Tensor) else a) for a in ours[:2])
    other_first, other_second = (np.asarray(a.cpu() if isinstance(a, Tensor) else a) for a in theirs[:2])
    if first.ndim == 3:  # colours
        both = second & other_second
        differ = int((second != other_second).sum())
        largest = float(np.abs(first.astype(np.float64) - other_first.astype(np.float64))[both].max(initial=0.0))
        return f"{differ} px covered by one only; colour max {largest:.1f} levels"
    covered, other_covered = first >= 0, other_first >= 0
    both = covered & other_covered
    same = float((first[both] == other_first[both]).mean()) if both.any() else 1.0
    gaps = np.abs(second[both].astype(np.float64) - other_second[both])
    close = int((gaps > 0.01).sum())
    return (f"{int((covered != other_covered).sum())} px covered by one only; same triangle {same:.2%}; depth max "
            f"{float(gaps.max(initial=0.0)):.2g} ({close} px off by more than 0.01)")


def measure(runs: int, sizes: tuple[int, int, int] = (512, 1024, 128), sim3dr: Sim3DR | None = None,
            warmup: int = 2) -> tuple[list[Row], Timing, Timing]:
    """Rows (a) image rasters, (b) UV raster, (c) UV colour texture; then (d) the default
    backend and the reference loop on a small image. ``sizes`` are the image side of (a),
    the UV side of (b, c) and the image side of (d)."""
    image_size, uv_size, small = sizes
    rows = []

    def compare(case: str, ours: Callable[[], object], torch_backend: Callable[[], object],
                peer: Callable[[], object] | None, output: Callable[[str, object], tuple]) -> None:
        """Time the calls in turn, then compare each peer's output (``output(name, result)``) with ours."""
        calls = {"ours": ours, "torch": torch_backend} | ({"sim3dr": peer} if peer else {})
        timings = time_in_turn(calls, runs, warmup)
        reference = output("ours", ours())
        checks = {name: agreement(reference, output(name, call())) for name, call in calls.items() if name != "ours"}
        rows.append(Row(case, timings["ours"], timings["torch"], timings.get("sim3dr"), checks))

    def ids_and_depth(name: str, result: object) -> tuple:
        if name == "sim3dr":
            return result  # type: ignore[return-value]
        fragments = result
        return fragments.triangle_id[0], fragments.depth[0]  # type: ignore[attr-defined]

    for load in (bfm_screen_mesh, sfm_screen_mesh):
        screen, faces, source = load(image_size)
        peer = None
        if sim3dr:
            vertices, triangles = sim3dr.inputs(screen[0], faces)
            peer = lambda: sim3dr.rasterize_triangles(vertices, triangles, image_size, image_size)  # noqa: E731
        compare(f"(a) image {image_size}x{image_size}, {source}: ids + barycentrics + depth",
                lambda: rasterize(screen, faces, image_size, backend="cpp"),
                lambda: rasterize(screen, faces, image_size, backend="torch"), peer, ids_and_depth)

    uv, uv_faces, source = bfm_uv_mesh()
    texels = torch.cat([uv_to_pixels(uv, uv_size), torch.zeros(len(uv), 1)], dim=1)
    colours = torch.rand(1, len(uv), 3, generator=torch.Generator().manual_seed(0))
    vertices, triangles = sim3dr.inputs(texels, uv_faces) if sim3dr else (None, None)
    compare(f"(b) UV {uv_size}x{uv_size}, {source}: ids + barycentrics + depth",
            lambda: rasterize_uv(uv, uv_faces, uv_size, backend="cpp"),
            lambda: rasterize_uv(uv, uv_faces, uv_size, backend="torch"),
            (lambda: sim3dr.rasterize_triangles(vertices, triangles, uv_size, uv_size)) if sim3dr else None,
            ids_and_depth)

    def colour_texture(backend: Backend) -> tuple[Tensor, Tensor]:
        fragments = rasterize_uv(uv, uv_faces, uv_size, backend=backend)
        return interpolate(colours, uv_faces, fragments, backend=backend), fragments.mask

    def colour_levels(name: str, result: object) -> tuple:
        if name == "sim3dr":  # uint8(255 c): compared with ours in the same 8-bit levels, where it wrote colour
            return result, np.asarray(result).any(axis=-1)  # type: ignore[call-overload]
        texture, mask = result  # type: ignore[misc]
        return np.floor(255 * texture[0].numpy() + 1e-4), mask[0].numpy()

    compare(f"(c) UV colour texture {uv_size}x{uv_size}, {source}: raster + interpolate",
            lambda: colour_texture("cpp"), lambda: colour_texture("torch"),
            (lambda: sim3dr.rasterize(vertices, triangles, colours[0].numpy(), uv_size, uv_size)) if sim3dr else None,
            colour_levels)

    screen_small, faces_small, _ = sfm_screen_mesh(small)
    fast = time_call(lambda: rasterize(screen_small, faces_small, small), runs, warmup)
    reference = time_call(lambda: reference_rasterize(screen_small[0], faces_small, (small, small)), 1, warmup=0)
    return rows, fast, reference


def ratio(numerator: Timing, denominator: Timing | None) -> str:
    return f"{numerator.cpu_ms / denominator.cpu_ms:.2f}x" if denominator and denominator.cpu_ms > 0 else "-"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, like Sim3DR's one-core figure; 0: torch's default)")
    parser.add_argument("--sim3dr", type=Path,
                        help="folder holding 3DDFA_V2's built Sim3DR_Cython extension: adds Sim3DR columns and ratios")
    parser.add_argument("--quick", action="store_true", help="small images (128, UV 256, 32), 1 run: a smoke test")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    sim3dr = Sim3DR(args.sim3dr) if args.sim3dr else None
    active_backend("cpp")  # builds the C++ kernels (or says why not) before any timing
    if args.quick:
        rows, fast, reference = measure(1, (128, 256, 32), sim3dr, warmup=1)
    else:
        rows, fast, reference = measure(args.runs, sim3dr=sim3dr)

    facts = machine()
    print(f"\n{machine_line(facts)}\nCPU rasterisers, medians of {1 if args.quick else args.runs} runs "
          "timed in turn; ms as wall / CPU; ratios of CPU times\n")
    print("| case | ours (C++ backend) | pure-torch backend | Sim3DR | ours / Sim3DR | torch / Sim3DR | torch / ours |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        cells = [f"{t.wall_ms:.1f} / {t.cpu_ms:.1f}" if t else "-" for t in (row.ours, row.torch, row.sim3dr)]
        print(f"| {row.case} | {' | '.join(cells)} | {ratio(row.ours, row.sim3dr)} | {ratio(row.torch, row.sim3dr)} "
              f"| {ratio(row.torch, row.ours)} |")
    print("\nOutputs against ours (the C++ backend), same inputs:\n\n| case | peer | agreement |\n| --- | --- | --- |")
    for row in rows:
        for peer, text in row.agreement.items():
            print(f"| {row.case.split(':')[0]} | {peer} | {text} |")
    speedup = reference.wall_ms / fast.wall_ms
    print(f"\n(d) image {32 if args.quick else 128}x{32 if args.quick else 128}, SFM: backend '{active_backend()}' "
          f"{fast.wall_ms:.1f} ms, the reference loop {reference.wall_ms:.1f} ms ({speedup:.0f}x slower)")
    report = {"machine": facts, "rows": [asdict(row) for row in rows], "default_backend": asdict(fast),
              "reference_loop": asdict(reference), "reference_over_default_wall": speedup}
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
