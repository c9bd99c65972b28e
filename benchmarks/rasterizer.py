"""Rasteriser speed: ``python -m benchmarks.rasterizer [--quick] [--out FILE.json]``; prints a Markdown table.

Cases: (a) the Surrey Face Model mesh at 512x512 in image space, (b) the BFM
``bfm_noneck_v3`` topology (38,365 vertices, 76,073 triangles) at 1024x1024 in UV
space, and (c) the loop-over-triangles reference rasteriser below against the torch
backend on a smaller image. Real meshes come from ``../shared/assets`` (or
``$SHARED_ASSETS``); when absent, a generated grid mesh of the same size stands in and
the table says so. Times are the median over runs after a warm-up, both wall-clock and
process CPU time (the two differ on a loaded machine).
"""
from __future__ import annotations

import argparse
import pickle
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from benchmarks.machine import ASSETS, machine, write_json
from facetex.face3d.camera import euler_to_rotation, project
from facetex.face3d.rasterizer import active_backend, rasterize, rasterize_uv



def reference_rasterize(screen_vertices: Tensor, faces: Tensor, image_size: tuple[int, int]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Obviously-correct z-buffer, one triangle at a time in float64 numpy (small images only).

    A pixel centre is inside when all three barycentrics are >= 0; a strictly nearer
    triangle replaces the stored one. Returns ``triangle_id (H, W)`` (-1 empty),
    ``barycentric (H, W, 3)``, ``depth (H, W)`` (+inf empty) for a single mesh ``(V, 3)``.
    """
    height, width = image_size
    vertices = screen_vertices.detach().double().cpu().numpy()
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    triangle_id = np.full((height, width), -1)
    barycentric = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    for index, (i, j, k) in enumerate(faces.cpu().numpy()):
        a, b, c = vertices[i], vertices[j], vertices[k]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if area == 0:
            continue
        w0 = ((c[0] - b[0]) * (ys - b[1]) - (c[1] - b[1]) * (xs - b[0])) / area
        w1 = ((a[0] - c[0]) * (ys - c[1]) - (a[1] - c[1]) * (xs - c[0])) / area
        w2 = 1.0 - w0 - w1
        z = w0 * a[2] + w1 * b[2] + w2 * c[2]
        nearer = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (z < depth)
        triangle_id[nearer] = index
        depth[nearer] = z[nearer]
        barycentric[nearer] = np.stack([w0, w1, w2], axis=-1)[nearer]
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
    for _ in range(warmup):
        call()
    walls, cpus = [], []
    for _ in tqdm(range(runs), leave=False):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(1e3 * statistics.median(walls), 1e3 * statistics.median(cpus))


def sfm_screen_mesh(size: int) -> tuple[Tensor, Tensor, str]:
    """The SFM mean face turned 30 degrees, filling a ``size`` image: ``(1, V, 3)``, faces, source."""
    path = ASSETS / "sfm" / "sfm_3448.npz"
    if path.is_file():
        data = np.load(path)
        vertices, faces, source = torch.from_numpy(data["mean"]), torch.from_numpy(data["triangles"]), "SFM 3448"
    else:
        points, faces = grid_mesh(59, 59)  # 3481 vertices, 6728 triangles
        bump = torch.exp(-((points - 0.5) ** 2).sum(-1) / 0.1)[:, None]
        vertices, source = torch.cat([(points - 0.5) * 160, 60 * bump], -1), "generated grid (SFM absent)"
    extent = float((vertices.amax(0) - vertices.amin(0))[:2].max())
    rotation = euler_to_rotation(torch.tensor([30.0]), torch.tensor([10.0]), torch.tensor([0.0]))
    screen = project(vertices[None].float(), rotation, torch.tensor([0.8 * size / extent]),
                     torch.tensor([[size / 2, size / 2]]))
    return screen, faces.long(), source


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


def measure(runs: int, device: torch.device, sizes: tuple[int, int, int] = (512, 1024, 128)) -> list[tuple[str, Timing]]:
    """Rows ``(case, timing)``: (a) image raster, (b) UV raster, (c) torch backend and the reference loop.

    ``sizes`` are the image side of (a), the UV side of (b) and the image side of the comparison (c).
    """
    image_size, uv_size, small = sizes

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    screen, faces, source = sfm_screen_mesh(image_size)
    screen, faces = screen.to(device), faces.to(device)
    timing = time_call(lambda: (rasterize(screen, faces, image_size, backend="torch"), sync()), runs)
    rows.append((f"(a) image {image_size}x{image_size}, {source}", timing))

    uv, uv_faces, source = bfm_uv_mesh()
    uv, uv_faces = uv.to(device), uv_faces.to(device)
    timing = time_call(lambda: (rasterize_uv(uv, uv_faces, uv_size, backend="torch"), sync()), runs)
    rows.append((f"(b) UV {uv_size}x{uv_size}, {source}", timing))

    screen_small, faces_small, source = sfm_screen_mesh(small)
    fast = time_call(lambda: rasterize(screen_small, faces_small, small, backend="torch"), runs)
    reference = time_call(lambda: reference_rasterize(screen_small[0], faces_small, (small, small)), 1, warmup=0)
    rows.append((f"(c) CPU image {small}x{small}, {source}: torch backend", fast))
    rows.append((f"(c) same, reference loop ({reference.wall_ms / fast.wall_ms:.0f}x slower)", reference))
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, Timing]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, like Sim3DR's one-core figure; 0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="small images (128, UV 256, 32), 1 run: a smoke test")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = measure(1, device, (128, 256, 32)) if args.quick else measure(args.runs, device)

    print(f"\nrasteriser backend 'torch' on {device} ({torch.get_num_threads()} threads); "
          f"auto would pick '{active_backend()}'\n")
    print("| case | wall ms (median) | CPU ms (median) |")
    print("| --- | ---: | ---: |")
    for name, timing in rows:
        print(f"| {name} | {timing.wall_ms:.1f} | {timing.cpu_ms:.1f} |")
    if args.out:
        write_json(args.out, {"machine": machine(), "device": str(device),
                              "rows": [{"case": n, **asdict(t)} for n, t in rows],
                              "reference_over_torch_wall": rows[3][1].wall_ms / rows[2][1].wall_ms})
    return rows


if __name__ == "__main__":
    main()
