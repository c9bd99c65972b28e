"""ABKD cost on the generated MAG graph at three sizes; prints Markdown tables, ``--out`` writes JSON.

    python -m benchmarks.abkd_scaling --out outputs/abkd_scaling.json     # 2k / 8k / 32k papers, minutes
    python -m benchmarks.abkd_scaling --quick                             # tiny graphs, seconds (the test)

The models are those of ``configs/abkd_demo*.yaml``: an R-GCN teacher 3 x 64 (frozen, eval mode) and an
R-GCN student 2 x 16, on graphs written by :mod:`graphkd.synthetic_mag` with every node count scaled with
the number of papers (so edges grow in proportion) and read through ``SyntheticMAGDataModule``. The
teacher keeps its random initialisation: the cost of a step does not depend on the weights' values.

Measured, each as a ratio against a baseline taken in the same process:

(a) one ABKD student training epoch, full batch (one step on the whole graph) and mini-batch
    (``NeighborLoader``, batch 1024, fan-out [25, 20, 10] as ``configs/abkd_mag.yaml``; sampling
    included), and its growth against the smallest graph;
(b) one training step of each KD method (logit KD, FitNet, ABKD) against a plain student step (task loss
    only, no teacher) on the same batch: the full middle-size graph and one fixed mini-batch of it; on the
    full graph also ABKD with the frozen teacher's outputs cached (``graphkd.teacher_cache``, what
    ``DistillationModule`` does by default: one teacher pass, reused while graph and weights are unchanged);
(c) teacher and student full-graph inference (eval, no grad): latency, and peak memory as the largest
    total of live bytes the CPU allocator handed out during one forward pass, read from
    ``torch.profiler``'s allocation records (``profile_memory=True``: every allocation and free, in order).

Without a neighbour sampler (pyg-lib or torch-sparse) the mini-batch cases are skipped and the tables say so.

Timings are medians over repeats after warm-up; the cases being compared (the three sizes too) are timed
in turn, round after round, so that load from other processes falls on all of them alike.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb would otherwise ask PyPI for a newer version

import torch
import torch_geometric.typing
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch_geometric.data import HeteroData
from tqdm import tqdm

from benchmarks.machine import benchmark_parser, machine, machine_line, use_threads, write_json
from benchmarks.module_step import ModuleStep
from datamodules.ogb import SyntheticMAGDataModule
from graphkd.distill import ABKD, DistillerFactory, FitNet, LogitKD
from graphkd.graph_info import GraphInfo
from graphkd.models import count_parameters
from graphkd.node_batch import NodeBatch
from graphkd.synthetic_mag import SyntheticMAGConfig
from lightning_modules.distillation import DistillationModule, read_classifier
from lightning_modules.node_classifier import NodeClassifier

FULL_SIZES = (2000, 8000, 32000)
QUICK_SIZES = (200, 400, 800)
SAMPLING = torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE
NO_SAMPLING = "skipped: no neighbour sampler (install pyg-lib, or `make setup-sampling` for torch-sparse)"
BATCH_SIZE = 1024
NUM_NEIGHBORS = [25, 20, 10]
TEACHER = {"hidden_channels": 64, "num_layers": 3, "dropout": 0.2}
STUDENT = {"hidden_channels": 16, "num_layers": 2, "dropout": 0.5}
CACHED = "ABKD, teacher cached"
METHODS: dict[str, DistillerFactory | None] = {
    "plain student": None,
    "logit KD": LogitKD,
    "FitNet": lambda s, t: FitNet(s, t, weight=0.1),
    "ABKD": ABKD,
}


@dataclass
class Repeats:
    """How many untimed warm-up and timed calls each case gets."""

    warmup: int
    runs: int


def mag_config(num_papers: int) -> SyntheticMAGConfig:
    """The default generator's proportions (3000 papers : 1500 authors : 40 institutions : 120 fields) at ``num_papers``."""
    return SyntheticMAGConfig(num_papers=num_papers, num_authors=num_papers // 2,
                              num_institutions=max(8, num_papers // 75), num_fields=max(8, num_papers // 25))


def load_mag(num_papers: int, root: Path) -> SyntheticMAGDataModule:
    """Generate the graph under ``root`` and load it through ogb (its progress text goes to stderr)."""
    datamodule = SyntheticMAGDataModule(mag_config(num_papers), root=str(root), batch_size=BATCH_SIZE,
                                        num_neighbors=NUM_NEIGHBORS)
    with contextlib.redirect_stdout(sys.stderr):
        datamodule.setup("fit")
    return datamodule


def frozen_teacher(datamodule: SyntheticMAGDataModule, root: Path, seed: int = 0) -> Path:
    """A randomly initialised teacher saved as a teacher checkpoint (what ``DistillationModule`` reads)."""
    torch.manual_seed(seed)
    teacher = NodeClassifier(datamodule.num_features, datamodule.num_classes, datamodule.graph_info, arch="rgcn",
                             **TEACHER)
    path = root / "teacher.ckpt"
    torch.save({"state_dict": teacher.state_dict(), "hyper_parameters": dict(teacher.hparams)}, path)
    return path


def student(datamodule: SyntheticMAGDataModule, teacher: Path, method: DistillerFactory | None,
            cache_teacher: bool = False) -> NodeClassifier:
    """The plain student (``method`` None: no teacher) or a ``DistillationModule`` distilling ``teacher``."""
    facts = {"num_features": datamodule.num_features, "num_classes": datamodule.num_classes,
             "graph_info": datamodule.graph_info}
    if method is None:
        return NodeClassifier(**facts, arch="rgcn", **STUDENT)
    return DistillationModule(**facts, teacher_checkpoint=str(teacher), distiller=method, cache_teacher=cache_teacher,
                              arch="rgcn", **STUDENT)


def interleaved_ms(cases: dict[str, Callable[[], object]], repeats: Repeats, desc: str) -> dict[str, float]:
    """Median wall-clock milliseconds of each case; every round calls every case once, in turn."""
    for _ in range(repeats.warmup):
        for call in cases.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in tqdm(range(repeats.runs), desc=desc, leave=False, file=sys.stderr):
        for name, call in cases.items():
            start = time.perf_counter()
            call()
            samples[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def no_grad_forward(model: nn.Module, batch: HeteroData, info: GraphInfo) -> Callable[[], object]:
    """A call running ``model`` on ``batch`` without autograd."""
    view = NodeBatch.of(batch, info)

    def call() -> object:
        with torch.no_grad():
            return view.run(model)
    return call


def peak_forward_bytes(model: nn.Module, batch: HeteroData, info: GraphInfo) -> int:
    """Largest total of live bytes allocated during one no-grad forward pass (allocator records, in time order)."""
    forward = no_grad_forward(model, batch, info)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward()
    records = sorted((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                     if event.name() == "[memory]")
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak


def epoch_cases(datamodule: SyntheticMAGDataModule, teacher: Path) -> dict[str, Callable[[], object]]:
    """(a) one ABKD epoch full batch, one over every NeighborLoader mini-batch of the training papers, and
    the sampling alone (the loader iterated without training)."""
    full_step = ModuleStep(student(datamodule, teacher, ABKD, cache_teacher=False))
    mini_step = ModuleStep(student(datamodule, teacher, ABKD))
    graph = datamodule.graph
    if not SAMPLING:
        return {"full": lambda: full_step(graph)}
    loader = datamodule.train_dataloader()
    return {"full": lambda: full_step(graph), "mini": lambda: [mini_step(batch) for batch in loader],
            "sampling": lambda: list(loader)}


def kd_step_times(datamodule: SyntheticMAGDataModule, teacher: Path, repeats: Repeats) -> dict[str, dict[str, float]]:
    """(b) step time of every method on the full graph and on one fixed mini-batch, plus the teacher's forward."""
    results = {}
    batches = {"full batch": datamodule.graph}
    if SAMPLING:
        batches["mini-batch"] = next(iter(datamodule.train_dataloader()))
    for mode, batch in batches.items():
        steps = {name: ModuleStep(student(datamodule, teacher, method)) for name, method in METHODS.items()}
        if mode == "full batch":  # a fixed mini-batch would hit the cache too, which real mini-batches never do
            steps[CACHED] = ModuleStep(student(datamodule, teacher, ABKD, cache_teacher=True))
        cases: dict[str, Callable[[], object]] = {name: (lambda step=step: step(batch)) for name, step in steps.items()}
        frozen = read_classifier(teacher)[0].model.eval()
        cases["teacher forward only"] = no_grad_forward(frozen, batch, datamodule.graph_info)
        results[mode] = interleaved_ms(cases, repeats, f"KD steps, {mode}")
    return results


def inference_models(datamodule: SyntheticMAGDataModule, teacher: Path) -> dict[str, nn.Module]:
    """(c) the teacher and the student in eval mode."""
    return {"teacher": read_classifier(teacher)[0].model.eval(), "student": student(datamodule, teacher, None).model.eval()}


def run(sizes: tuple[int, ...], epoch_repeats: Repeats, step_repeats: Repeats, root: Path) -> dict[str, Any]:
    """Every measurement; returns the JSON-ready report.

    The epochs (a) and inference passes (c) of all sizes are timed in one interleaved loop, so that a change
    in the machine's load during the run does not show up as growth from one size to the next.
    """
    datamodules = {n: load_mag(n, root / f"papers_{n}") for n in sizes}
    teachers = {n: frozen_teacher(dm, root / f"papers_{n}") for n, dm in datamodules.items()}
    epochs = {f"{n}/{kind}": call for n, dm in datamodules.items() for kind, call in epoch_cases(dm, teachers[n]).items()}
    epoch_ms = interleaved_ms(epochs, epoch_repeats, "(a) epochs, all sizes")
    models = {n: inference_models(dm, teachers[n]) for n, dm in datamodules.items()}
    forwards = {f"{n}/{name}": no_grad_forward(model, datamodules[n].graph, datamodules[n].graph_info)
                for n, pair in models.items() for name, model in pair.items()}
    forward_ms = interleaved_ms(forwards, step_repeats, "(c) inference, all sizes")
    report: dict[str, Any] = {"machine": machine(), "sizes": [], "inference": {}}
    for n, dm in datamodules.items():
        row = {"papers": n, "nodes": int(dm.graph.num_nodes), "edges": int(dm.graph.num_edges),
               "full_batch_epoch_ms": epoch_ms[f"{n}/full"]}
        if SAMPLING:
            loader = dm.train_dataloader()
            row.update(mini_batch_epoch_ms=epoch_ms[f"{n}/mini"], sampling_only_epoch_ms=epoch_ms[f"{n}/sampling"],
                       mini_batches=len(loader),
                       sampled_edges_per_batch=statistics.fmean(batch.num_edges for batch in loader))
        report["sizes"].append(row)
        report["inference"][str(n)] = {
            name: {"latency_ms": forward_ms[f"{n}/{name}"],
                   "peak_bytes": float(peak_forward_bytes(model, dm.graph, dm.graph_info)),
                   "parameters": float(count_parameters(model))}
            for name, model in models[n].items()}
    middle = sizes[len(sizes) // 2]
    report["kd_overhead"] = {"papers": middle, **kd_step_times(datamodules[middle], teachers[middle], step_repeats)}
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (ratios against the first size / the plain student / the teacher)."""
    lines = [machine_line(report["machine"]), "",
             "(a) ABKD student epoch (teacher 3x64 frozen, student 2x16), ratios vs the smallest graph", "",
             "| papers | nodes | edges | edges x | full-batch epoch ms | x | mini-batch epoch ms (batches) | x "
             "| of which sampling | sampled edges per batch / graph edges |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = report["sizes"][0]
    for row in report["sizes"]:
        mini = (f"| {row['mini_batch_epoch_ms']:.1f} ({row['mini_batches']}) "
                f"| {row['mini_batch_epoch_ms'] / base['mini_batch_epoch_ms']:.1f} "
                f"| {row['sampling_only_epoch_ms'] / row['mini_batch_epoch_ms']:.0%} "
                f"| {row['sampled_edges_per_batch'] / row['edges']:.2f} |") if "mini_batches" in row else "| - | - | - | - |"
        lines.append(
            f"| {row['papers']} | {row['nodes']} | {row['edges']} | {row['edges'] / base['edges']:.1f} "
            f"| {row['full_batch_epoch_ms']:.1f} | {row['full_batch_epoch_ms'] / base['full_batch_epoch_ms']:.1f} " + mini)
    if "mini_batches" not in base:
        lines.append(f"\nmini-batch epochs {NO_SAMPLING}")
    overhead = report["kd_overhead"]
    lines += ["", f"(b) training step per method, {overhead['papers']} papers, ratio vs the plain student step", "",
              "(x plain w/o teacher: the step minus the teacher's forward, over the plain step)", "",
              "| method | full batch ms | x plain | x plain w/o teacher | one mini-batch ms | x plain "
              "| x plain w/o teacher |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in (*METHODS, CACHED):
        cells = [name]
        for mode in ("full batch", "mini-batch"):
            times = overhead.get(mode, {})
            if name not in times:
                cells += ["-", "-", "-"]
                continue
            plain, teacher = times["plain student"], times["teacher forward only"]
            own = (times[name] - teacher) / plain if name not in ("plain student", CACHED) else times[name] / plain
            cells += [f"{times[name]:.1f}", f"{times[name] / plain:.2f}", f"{own:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if "mini-batch" not in overhead:
        lines.append(f"\nmini-batch steps {NO_SAMPLING}")
    for mode in ("full batch", "mini-batch")[:1 + ("mini-batch" in overhead)]:
        times = overhead[mode]
        lines.append(f"\nteacher forward (no grad), {mode}: {times['teacher forward only']:.1f} ms = "
                     f"{times['teacher forward only'] / times['plain student']:.2f} x the plain student step")
    lines += ["", "(c) full-graph inference (eval, no grad): student vs teacher", "",
              "| papers | teacher ms | student ms | latency ratio | teacher peak MiB | student peak MiB | memory ratio "
              "| parameter ratio |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for papers, pair in report["inference"].items():
        t, s = pair["teacher"], pair["student"]
        lines.append(f"| {papers} | {t['latency_ms']:.1f} | {s['latency_ms']:.1f} | {s['latency_ms'] / t['latency_ms']:.2f} "
                     f"| {t['peak_bytes'] / 2**20:.1f} | {s['peak_bytes'] / 2**20:.1f} "
                     f"| {s['peak_bytes'] / t['peak_bytes']:.2f} | {t['parameters'] / s['parameters']:.1f}x fewer |")
    return "\n".join(lines)


def check_finite(report: dict[str, Any]) -> None:
    """Refuse to write a report holding a non-positive or non-finite number (a broken measurement)."""
    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not (math.isfinite(value) and value > 0):
            raise RuntimeError(f"measurement {path} = {value} is not a positive finite number")
    walk({k: v for k, v in report.items() if k != "machine"}, "report")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help=f"graphs of {QUICK_SIZES} papers, 1 run each: a smoke test")
    parser.add_argument("--runs", type=int, default=5, help="timed repeats of every step / inference case")
    parser.add_argument("--epoch-runs", type=int, default=3, help="timed repeats of every epoch case")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.epoch_runs < 1:
        parser.error(f"--runs and --epoch-runs must be at least 1, got {args.runs} and {args.epoch_runs}")
    use_threads(args.threads)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    epoch_repeats = Repeats(0, 1) if args.quick else Repeats(1, args.epoch_runs)
    step_repeats = Repeats(1, 2) if args.quick else Repeats(2, args.runs)
    with tempfile.TemporaryDirectory(prefix="abkd_scaling_") as root:
        report = run(sizes, epoch_repeats, step_repeats, Path(root))
    check_finite(report)
    print(markdown(report))
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
