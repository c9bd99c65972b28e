"""Memory and speed of training on METIS partitions vs holding the whole graph, as the graph grows; prints a table.

    nice -n 5 python -m benchmarks.partitioned_scale --papers 25000 100000 400000 --work /tmp/scale --out outputs/scale.json

For each size it generates the ogbn-mag-layout graph (``SyntheticMAGDataModule``, heterogeneous, authors =
papers / 2, institutions = papers / 75, fields = papers / 25 as in docs/large_graphs.md), cuts it into two
parts with ``scripts/partition_graph.py``, and trains the same R-GCN with ``main.py fit`` (subprocesses, the
commands users run) three ways, with the same global batch:

- ``1 process, whole graph``: ``NeighborLoader`` over the whole graph, ``2 x batch`` seeds per step;
- ``2 processes, whole graph each``: DDP (gloo), every process holding the whole graph, ``batch`` each;
- ``2 processes, one partition each``: DDP with ``PartitionedNodeDataModule`` (``DistNeighborLoader``,
  remote neighbours over RPC), ``batch`` each.

Every process runs on ``--threads`` torch threads (default 1: 2 processes use 2 cores). A probe callback
(``benchmarks/scale_probe.py``) records each process's peak resident memory (graph loading included) and, per
training epoch, its wall time (validation excluded), steps and sampled nodes; the table shows the largest
per-process peak, the training time of the last epoch (the first warms up) and sampled nodes per second of
all processes together, each with its ratio to the one-process run of the same size. Modes run in turn,
round after round (``--rounds``), so load from other processes falls on all alike; times are medians over
rounds, memory the largest. ``--limit-batches`` caps training steps per epoch for large graphs (the epoch
time is then that of the capped epoch, and says so).

Imports: no datamodule or LightningModule (everything runs through ``main.py``); ``torch`` to count the
partitions' nodes and edges.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.machine import benchmark_parser, machine, machine_line, publish, use_threads

REPO = Path(__file__).resolve().parents[1]
MODES = {  # name: (processes, data)
    "1 process, whole graph": (1, "whole"),
    "2 processes, whole graph each": (2, "whole"),
    "2 processes, one partition each": (2, "parts"),
}
BASELINE = "1 process, whole graph"


def synthetic(papers: int, feature_dim: int) -> dict[str, int]:
    """The generated graph's sizes for ``papers`` papers (the proportions of docs/large_graphs.md)."""
    return {"num_papers": papers, "num_authors": papers // 2, "num_institutions": max(papers // 75, 2),
            "num_fields": max(papers // 25, 2), "feature_dim": feature_dim}


def data_section(kind: str, work: Path, papers: int, args: Any, batch_size: int, hetero: bool = True) -> dict[str, Any]:
    """``data:`` of a run: the whole generated graph (``NeighborLoader``) or its two partitions."""
    suffix = "" if hetero else "_homo"
    if kind == "parts":
        return {"class_path": "datamodules.partitioned.PartitionedNodeDataModule",
                "init_args": {"root": str(work / f"parts_{papers}{suffix}"), "batch_size": batch_size,
                              "num_neighbors": args.num_neighbors, "concurrency": args.concurrency}}
    return {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
            "init_args": {"root": str(work / f"graph_{papers}"), "hetero": hetero,
                          "synthetic": synthetic(papers, args.feature_dim), "batch_size": batch_size,
                          "num_neighbors": args.num_neighbors}}


def run_config(run_dir: Path, data: dict[str, Any], args: Any) -> dict[str, Any]:
    """A ``main.py fit`` config: R-GCN ``--hidden`` x 2, the probe callback, checkpoints and CSV logs in ``run_dir``."""
    trainer: dict[str, Any] = {
        "accelerator": "cpu", "max_epochs": args.epochs, "num_sanity_val_steps": 0, "limit_val_batches": 2,
        "enable_progress_bar": False, "enable_model_summary": False, "use_distributed_sampler": False,
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir)}},
        "callbacks": [{"class_path": "benchmarks.scale_probe.ScaleProbe", "init_args": {"out_dir": str(run_dir / "probe")}}],
    }
    if args.limit_batches:
        trainer["limit_train_batches"] = args.limit_batches
    return {
        "seed_everything": 0,
        "checkpoint": {"dirpath": str(run_dir / "ckpt")},
        "trainer": trainer,
        "model": {"class_path": "lightning_modules.node_classifier.NodeClassifier",
                  "init_args": {"arch": "rgcn", "hidden_channels": args.hidden, "num_layers": len(args.num_neighbors),
                                "dropout": 0.5,
                                "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.005}}}},
        "data": data,
    }


def main_py(arguments: list[str], processes: int, log: Path, threads: int = 1) -> float:
    """``python main.py ARGS`` on ``processes`` CPU processes (``threads`` torch threads each); its wall seconds."""
    strategy = ["--trainer.strategy", "ddp", "--trainer.devices", str(processes)] if processes > 1 else ["--trainer.devices", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OUTDATED_IGNORE": "1"}
    start = time.perf_counter()
    with log.open("w") as output:
        done = subprocess.run([sys.executable, "main.py", *arguments, *strategy], cwd=REPO, env=env, stdout=output,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"main.py {' '.join(arguments)} failed ({done.returncode}); see {log}")
    return time.perf_counter() - start


def prepare(work: Path, papers: int, args: Any, hetero: bool = True) -> dict[str, Any]:
    """Generate the graph and its two partitions (once; reused when present); the graph's node and edge counts."""
    parts = Path(data_section("parts", work, papers, args, 1, hetero)["init_args"]["root"])
    if not parts.is_dir():
        config = work / f"data_{parts.name}.yaml"
        config.write_text(yaml.safe_dump({"data": data_section("whole", work, papers, args, 1, hetero)}))
        done = subprocess.run([sys.executable, "scripts/partition_graph.py", "--config", str(config), "--num-parts", "2",
                               "--out", str(parts)], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"partitioning {papers} papers failed:\n{done.stderr[-3000:]}")

    def total(folder: Path) -> int:
        files = sorted(folder.glob("*.pt")) if folder.is_dir() else [folder.with_suffix(".pt")]
        return sum(len(torch.load(path, weights_only=True)) for path in files)

    info = json.loads((parts / "partition_info.json").read_text())
    return {"papers": papers, "nodes": total(parts / "node_map"), "edges": total(parts / "edge_map"),
            "edge_cut": info["edge_cut"], "train_seeds": sum(info["split_sizes"]["train"])}


def measure(work: Path, papers: int, mode: str, round_index: int, args: Any) -> dict[str, Any]:
    """One ``main.py fit`` of ``mode``; what its processes' probes recorded."""
    processes, kind = MODES[mode]
    run_dir = work / "runs" / f"{papers}_{kind}{processes}_{round_index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    batch_size = args.batch_size * (2 // processes)  # the same global batch for every mode
    config = run_config(run_dir, data_section(kind, work, papers, args, batch_size), args)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    wall = main_py(["fit", "--config", str(run_dir / "config.yaml")], processes, run_dir / "output.log", args.threads)
    ranks = [json.loads((run_dir / "probe" / f"rank{rank}.json").read_text()) for rank in range(processes)]
    last = [rank["epochs"][-1] for rank in ranks]
    seconds = max(epoch["seconds"] for epoch in last)  # processes step together: the slowest is the epoch
    return {"peak_rss_mb": max(rank["peak_rss_mb"] for rank in ranks),
            "total_rss_mb": sum(rank["peak_rss_mb"] for rank in ranks),
            "epoch_s": seconds, "steps": last[0]["steps"], "seeds": sum(epoch["seeds"] for epoch in last),
            "nodes_per_s": sum(epoch["sampled_nodes"] for epoch in last) / seconds, "fit_wall_s": wall}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the times over rounds, the largest memory."""
    return {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "total_rss_mb": max(r["total_rss_mb"] for r in runs),
            "epoch_s": statistics.median(r["epoch_s"] for r in runs), "steps": runs[0]["steps"],
            "seeds": runs[0]["seeds"], "nodes_per_s": statistics.median(r["nodes_per_s"] for r in runs),
            "rounds": len(runs)}


def table(report: dict[str, Any]) -> str:
    capped = f" (first {report['settings']['limit_batches']} steps)" if report["settings"]["limit_batches"] else ""
    lines = [machine_line(report["machine"]),
             f"R-GCN {report['settings']['hidden']} x {len(report['settings']['num_neighbors'])}, fan-out "
             f"{report['settings']['num_neighbors']}, global batch {2 * report['settings']['batch_size']}, "
             f"{report['settings']['threads']} torch thread(s) per process", "",
             f"| papers | nodes | edges | run | peak memory per process (MB) | vs 1 process | all processes (MB) | "
             f"training epoch{capped} (s) | steps | sampled nodes / s | vs 1 process |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for size in report["sizes"]:
        base = size["modes"][BASELINE]
        for mode, row in size["modes"].items():
            lines.append(f"| {size['papers']:,} | {size['nodes']:,} | {size['edges']:,} | {mode} | {row['peak_rss_mb']:,.0f} | "
                         f"{row['peak_rss_mb'] / base['peak_rss_mb']:.2f} | {row['total_rss_mb']:,.0f} | "
                         f"{row['epoch_s']:.1f} | {row['steps']} | {row['nodes_per_s']:,.0f} | "
                         f"{row['nodes_per_s'] / base['nodes_per_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = benchmark_parser(__doc__.split("\n")[0])
    parser.set_defaults(threads=1)
    parser.add_argument("--papers", type=int, nargs="+", default=[25_000, 100_000, 400_000], help="graph sizes (papers)")
    parser.add_argument("--work", type=Path, default=Path("outputs/partitioned_scale"),
                        help="folder for the graphs, partitions and runs (reused: graphs are generated once)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (the last is reported)")
    parser.add_argument("--limit-batches", type=int, default=0, help="training steps per epoch (0: the whole epoch)")
    parser.add_argument("--batch-size", type=int, default=512, help="seeds per process and step (1 process: twice)")
    parser.add_argument("--num-neighbors", type=int, nargs="+", default=[10, 10], help="fan-out per layer")
    parser.add_argument("--hidden", type=int, default=64, help="R-GCN width")
    parser.add_argument("--feature-dim", type=int, default=128, help="paper feature width (ogbn-mag: 128)")
    parser.add_argument("--concurrency", type=int, default=4, help="RPC requests each DistNeighborLoader keeps in flight")
    parser.add_argument("--rounds", type=int, default=1, help="fits of each mode per size")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="which runs")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if BASELINE not in args.modes:
        parser.error(f"--modes must include {BASELINE!r}: the ratios are to it")
    use_threads(args.threads)  # the header's thread count is what every run uses
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "sizes": [],
                              "settings": {key: value for key, value in vars(args).items() if key not in ("out", "work")}}
    for papers in args.papers:
        size = prepare(args.work, papers, args)
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
        for round_index in range(args.rounds):
            for mode in args.modes:
                runs[mode].append(measure(args.work, papers, mode, round_index, args))
                print(f"{papers} papers, {mode}, round {round_index + 1}: {runs[mode][-1]}", file=sys.stderr)
        size["modes"] = {mode: summarise(results) for mode, results in runs.items()}
        report["sizes"].append(size)
    report["settings"]["papers"] = args.papers
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    main()
