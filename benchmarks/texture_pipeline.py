"""Photo -> textured mesh: time per stage and per image on the real photos; Markdown tables, ``--out`` JSON.

    python -m benchmarks.texture_pipeline --out outputs/texture_pipeline.json   # every photo, UV 512 and 1024
    python -m benchmarks.texture_pipeline --quick                               # one photo at UV 256 (the test)

Each image runs the real end-to-end :func:`app.photo_to_mesh.photo_to_mesh` (files written to a
temporary folder). Its stages are timed without a copy of its logic: for the duration of the run, the
functions that make up each stage are wrapped by :class:`StageClock`, which records each call's wall
and process-CPU time *minus* the time of wrapped calls inside it (so the z-buffer raster inside ``sample_view`` counts
once, as raster). What no wrapped function covers (glue in ``photo_to_mesh``) is reported as "other".
Shares are of CPU time (wall time also counts the waits for other processes' load): of the mean total
over the images, and, robust to one huge photo, the median over images of each image's own share. The
sizes of one photo run back to back; one untimed run (the smallest photo at the first size) goes first so
that one-off start-up costs are not charged to any image.

Photos and weights come from ``../shared/assets`` (or ``$SHARED_ASSETS``, or ``--assets``); when they are
absent the script says so and exits without measuring.
"""
from __future__ import annotations

import inspect
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from app import photo_to_mesh as job
from benchmarks.machine import ASSETS, benchmark_parser, machine, machine_line, publish, use_threads
from facetex.face3d import texture
from facetex.face3d.detector import FaceDetector
from facetex.face3d.pipeline import AssetPaths
from facetex.face3d.regressor import FaceRegressor

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
FULL_SIZES = (512, 1024)
QUICK_PHOTO, QUICK_SIZE = "ffhq_00009.png", 256
OTHER = "other (glue in photo_to_mesh)"
STAGES: dict[str, list[tuple[object, str]]] = {
    "load weights + face model": [(FaceDetector, "from_checkpoint"), (FaceRegressor, "from_files"),
                                  (job, "load_face_model")],
    "read photo": [(job, "load_image")],
    "detect (FaceBoxes)": [(FaceDetector, "detect_faces")],
    "crop + 3DDFA_V2 (2 passes)": [(FaceRegressor, "from_boxes")],
    "geometry (regressor mesh, or landmark fit)": [(job, "regressor_geometry"), (job, "fit_views")],
    "UV chart raster": [(texture, "build_uv_chart")],
    "view z-buffer raster": [(texture, "rasterize")],
    "visibility + view weights + sampling": [(texture, "sample_view")],
    "feather + blend + mirror checks": [(texture, "feather"), (texture, "blend_views"), (texture, "sample_at_mirror"),
                                        (texture, "mirror_blend"), (texture, "confirmed_mirror")],
    "inpainting (guided membrane)": [(texture, "membrane_fill")],
    "mesh + projection + fusion glue": [(job, "texture_views")],
    "re-render + score + turntable": [(job, "rerender"), (job, "score_views"), (job, "render_turntable")],
    "export (OBJ, PLY, grid PNG, JSON)": [(job, "photo_folder"), (job, "write_face_folder")],
}


def now() -> tuple[float, float]:
    """``(wall, process CPU)`` seconds; the CPU clock is the load-robust one on a shared machine."""
    return time.perf_counter(), time.process_time()


class StageClock:
    """Exclusive wall and CPU seconds per stage of wrapped functions (nested wrapped calls are excluded).

    ``wall[stage]`` and ``cpu[stage]`` sum every call of the stage's functions.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._nested: list[list[float]] = []  # per open call: [wall, cpu] spent in wrapped calls inside it

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._nested.append([0.0, 0.0])
            start_wall, start_cpu = now()
            try:
                return function(*args, **kwargs)
            finally:
                end_wall, end_cpu = now()
                wall, cpu = end_wall - start_wall, end_cpu - start_cpu
                inner_wall, inner_cpu = self._nested.pop()
                self.wall[stage] += wall - inner_wall
                self.cpu[stage] += cpu - inner_cpu
                if self._nested:
                    self._nested[-1][0] += wall
                    self._nested[-1][1] += cpu
        return timed

    @contextmanager
    def installed(self, stages: dict[str, list[tuple[object, str]]]) -> Iterator[StageClock]:
        """Replace every listed function (module function, method or classmethod) by its timed wrapper; restore after."""
        originals = []
        try:
            for stage, targets in stages.items():
                for owner, name in targets:
                    original = inspect.getattr_static(owner, name)
                    if isinstance(original, classmethod):
                        replacement: Any = classmethod(self.wrap(stage, original.__func__))
                    else:
                        replacement = self.wrap(stage, original)
                    originals.append((owner, name, original))
                    setattr(owner, name, replacement)
            yield self
        finally:
            for owner, name, original in reversed(originals):
                setattr(owner, name, original)


def time_photo(photo: Path, assets: AssetPaths, size: int, face_model: str) -> dict[str, dict[str, float]]:
    """``{"wall_ms" | "cpu_ms": {stage: ms}}`` (stages plus ``other`` and ``total``) of one ``photo_to_mesh`` run."""
    clock = StageClock()
    with tempfile.TemporaryDirectory(prefix="texture_bench_") as out, clock.installed(STAGES):
        start = now()
        job.photo_to_mesh(photo, Path(out) / "mesh", assets, face_model=face_model, texture_size=size,
                               progress=False)
        totals = [end - begin for end, begin in zip(now(), start)]
    times = {}
    for key, seconds, total in (("wall_ms", clock.wall, totals[0]), ("cpu_ms", clock.cpu, totals[1])):
        stage_ms = {stage: 1e3 * seconds.get(stage, 0.0) for stage in STAGES}
        times[key] = {**stage_ms, OTHER: 1e3 * total - sum(stage_ms.values()), "total": 1e3 * total}
    return times


def find_photos(folder: Path) -> list[Path]:
    """The JPEG and PNG files in ``folder``, by name (none when it does not exist)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES) if folder.is_dir() else []


def photo_size(photo: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header (nothing decoded)."""
    with Image.open(photo) as image:
        return image.size


def run(photos: list[Path], assets: AssetPaths, sizes: tuple[int, ...], face_model: str,
        warmup: bool = True) -> dict[str, Any]:
    """Time every photo at every size (after one untimed run on the smallest photo if ``warmup``); stage means, shares."""
    if warmup:
        time_photo(min(photos, key=lambda p: math.prod(photo_size(p))), assets, sizes[0], face_model)
    per_image: dict[str, dict[str, dict[str, dict[str, float]]]] = {p.name: {} for p in photos}
    for photo in tqdm(photos, desc="photos", file=sys.stderr):
        for size in sizes:  # the sizes of one photo back to back: load drift falls on both alike
            per_image[photo.name][str(size)] = time_photo(photo, assets, size, face_model)
    stages: dict[str, dict[str, dict[str, float]]] = {}
    for size in map(str, sizes):
        runs = [per_image[p.name][size] for p in photos]
        cpu_total = statistics.fmean(run["cpu_ms"]["total"] for run in runs)
        stages[size] = {
            stage: {"wall_ms": statistics.fmean(run["wall_ms"][stage] for run in runs),
                    "cpu_ms": statistics.fmean(run["cpu_ms"][stage] for run in runs),
                    "share": statistics.fmean(run["cpu_ms"][stage] for run in runs) / cpu_total,
                    "median_share": statistics.median(run["cpu_ms"][stage] / run["cpu_ms"]["total"] for run in runs)}
            for stage in [*STAGES, OTHER, "total"]}
    return {"machine": machine(), "face_model": face_model, "sizes": list(sizes), "images": per_image,
            "photo_sizes": {p.name: list(photo_size(p)) for p in photos}, "stages": stages}


def markdown(report: dict[str, Any]) -> str:
    """Per-stage means with shares, then per-image totals, with ratios against the smallest UV size."""
    sizes = [str(s) for s in report["sizes"]]
    base = sizes[0]
    lines = [f"{machine_line(report['machine'])}; face model {report['face_model']}, {len(report['images'])} photo(s)", "",
             "(mean over the photos; share: of the mean CPU total; median share: the median over photos of each "
             "photo's own CPU share)", "",
             "| stage | " + " | ".join([f"UV {s} wall ms | CPU ms | share | median share" for s in sizes]
                                      + [f"CPU x vs UV {base}"] * (len(sizes) > 1)) + " |",
             "| --- |" + " ---: | ---: | ---: | ---: |" * len(sizes) + " ---: |" * (len(sizes) > 1)]
    for stage in report["stages"][base]:
        cells = [f"{report['stages'][s][stage]['wall_ms']:.1f} | {report['stages'][s][stage]['cpu_ms']:.1f} "
                 f"| {report['stages'][s][stage]['share']:.1%} | {report['stages'][s][stage]['median_share']:.1%}"
                 for s in sizes]
        ratio = [f"{report['stages'][sizes[-1]][stage]['cpu_ms'] / report['stages'][base][stage]['cpu_ms']:.2f}"
                 if report["stages"][base][stage]["cpu_ms"] > 0 else "-"] if len(sizes) > 1 else []
        lines.append(f"| {stage} | " + " | ".join(cells + ratio) + " |")
    lines += ["", "| photo | pixels | " + " | ".join([f"UV {s} wall ms | CPU ms" for s in sizes]
                                                  + [f"CPU x vs UV {base}"] * (len(sizes) > 1)) + " |",
              "| --- | ---: |" + " ---: | ---: |" * len(sizes) + " ---: |" * (len(sizes) > 1)]
    for name, runs in report["images"].items():
        width, height = report["photo_sizes"][name]
        cells = [f"{runs[s]['wall_ms']['total']:.0f} | {runs[s]['cpu_ms']['total']:.0f}" for s in sizes]
        cells += [f"{runs[sizes[-1]]['cpu_ms']['total'] / runs[base]['cpu_ms']['total']:.2f}"] * (len(sizes) > 1)
        lines.append(f"| {name} | {width}x{height} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PHOTO} at UV {QUICK_SIZE} only: a smoke test")
    parser.add_argument("--assets", type=Path, default=ASSETS, help="folder laid out like shared/assets")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(FULL_SIZES), help="UV texture sides")
    parser.add_argument("--face-model", choices=("sfm", "bfm"), default="bfm",
                        help="morphable model of the photo job (bfm: its default)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    photos = find_photos(args.assets / "faces")
    if not photos:
        print(f"skipped: no photos in {args.assets / 'faces'} (pass --assets or set SHARED_ASSETS)", file=sys.stderr)
        return None
    use_threads(args.threads)
    assets = AssetPaths.from_folder(args.assets)
    if args.quick:
        photos, sizes = [p for p in photos if p.name == QUICK_PHOTO] or photos[:1], (QUICK_SIZE,)
    else:
        sizes = tuple(sorted(set(args.sizes)))
    report = run(photos, assets, sizes, args.face_model, warmup=not args.quick)
    return publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
