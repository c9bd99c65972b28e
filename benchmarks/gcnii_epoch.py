"""Time of one full-batch GCNII training epoch on real Cora; prints a Markdown table, ``--out`` writes JSON.

    python -m benchmarks.gcnii_epoch --out outputs/gcnii_epoch.json       # about a minute on one thread
    python -m benchmarks.gcnii_epoch --runs 1 --warmup 0                   # seconds (a smoke test)

One epoch is what ``configs/gcnii_*.yaml`` do per epoch on a full-batch graph: a training step (dropout
on, forward, cross-entropy on the training rows, backward, Adam step with GCNII's weight-decay groups)
and one evaluation forward (eval mode, no grad) that scores validation and test. Cases: GCNII at the
published Cora (64 x 64), CiteSeer-shaped (32 x 256) and PubMed-shaped (16 x 256) sizes, all on Cora's
features, against the peer of the same process, a GCN 2 x 64 (Kipf & Welling's Cora model), as the
ratio (of wall-clock times; the process CPU time is printed too, since on a shared machine it is
less disturbed by other processes than the wall clock). Cases are timed in turn, round after round, so load from other processes falls on all alike;
each number is the median over rounds after warm-up rounds. Cora: the ``ind.cora.*`` files of
``../shared/assets/graphs/planetoid`` (or ``--planetoid``), loaded from a temporary copy.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from benchmarks.machine import benchmark_parser, machine, machine_line, publish, use_threads
from benchmarks.module_step import ModuleStep
from datamodules.pyg_dataset import PyGDataModule
from graphkd.models import count_parameters
from lightning_modules.node_classifier import NodeClassifier

# name -> (arch, layers, hidden, dropout, arch options)
CASES: dict[str, tuple[str, int, int, float, dict[str, Any]]] = {
    "GCN 2 x 64 (peer)": ("gcn", 2, 64, 0.5, {}),
    "GCNII 64 x 64 (Cora)": ("gcnii", 64, 64, 0.6, {"alpha": 0.1, "lamda": 0.5, "conv_weight_decay": 0.01}),
    "GCNII 32 x 256 (CiteSeer shape)": ("gcnii", 32, 256, 0.7, {"alpha": 0.1, "lamda": 0.6, "conv_weight_decay": 0.01}),
    "GCNII 16 x 256 (PubMed shape)": ("gcnii", 16, 256, 0.5, {"alpha": 0.1, "lamda": 0.4, "conv_weight_decay": 5e-4}),
}
PEER = "GCN 2 x 64 (peer)"


def load_cora(planetoid: Path, workdir: Path) -> PyGDataModule:
    """Cora with row-normalised features and the public split, from a copy of the raw files."""
    raw = workdir / "Cora" / "raw"
    raw.mkdir(parents=True)
    for file in planetoid.glob("ind.cora.*"):
        shutil.copy(file, raw)
    datamodule = PyGDataModule("Planetoid", {"name": "Cora"}, root=str(workdir), normalize_features=True)
    datamodule.setup("fit")
    return datamodule


def epoch(step: ModuleStep, data: Data) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one training step (the module's) plus one evaluation forward."""
    start, start_cpu = time.perf_counter(), time.process_time()
    step(data)
    step.module.eval()
    with torch.no_grad():
        step.module(data)
    return time.perf_counter() - start, time.process_time() - start_cpu


def measure(datamodule: PyGDataModule, runs: int, warmup: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    facts = {"num_features": datamodule.num_features, "num_classes": datamodule.num_classes,
             "graph_info": datamodule.graph_info}
    steps = {name: ModuleStep(NodeClassifier(**facts, arch=arch, hidden_channels=hidden, num_layers=layers,
                                             dropout=dropout, arch_options=options))
             for name, (arch, layers, hidden, dropout, options) in CASES.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for round_ in range(warmup + runs):
        for name, step in steps.items():
            seconds = epoch(step, datamodule.graph)
            if round_ >= warmup:
                times[name].append(seconds)
    wall = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    return {name: {"parameters": count_parameters(steps[name].module.model), "epoch_s": wall[name],
                   "epoch_cpu_s": statistics.median(c for _, c in t), "ratio_to_peer": wall[name] / wall[PEER]}
            for name, t in times.items()}


def markdown(report: dict[str, Any]) -> str:
    lines = [machine_line(report["machine"]), "",
             f"One full-batch epoch on Cora (train step + eval forward), median of {report['runs']} rounds "
             f"(1-min load average at the start: {report['load_average_1min']:.1f}):", "",
             "| model | parameters | epoch (s) | epoch CPU (s) | x peer |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in report["cases"].items():
        lines.append(f"| {name} | {row['parameters']:,} | {row['epoch_s']:.3f} | {row['epoch_cpu_s']:.3f} "
                     f"| {row['ratio_to_peer']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = benchmark_parser(__doc__, planetoid=True)
    parser.add_argument("--runs", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    use_threads(args.threads)
    if not (args.planetoid / "ind.cora.graph").is_file():
        parser.error(f"no ind.cora.* files in {args.planetoid}; pass --planetoid")
    with tempfile.TemporaryDirectory() as workdir:
        datamodule = load_cora(args.planetoid, Path(workdir))
    report = {"machine": machine(), "load_average_1min": os.getloadavg()[0], "runs": args.runs,
              "cases": measure(datamodule, args.runs, args.warmup)}
    return publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
