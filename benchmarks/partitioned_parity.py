"""Does training on two METIS partitions learn what one process on the whole graph learns? Prints a table.

    nice -n 5 python -m benchmarks.partitioned_parity --papers 8000 --seeds 0 1 2 3 --work /tmp/parity --out outputs/parity.json

On the generated ogbn-mag-layout graph (heterogeneous: R-GCN; and its paper-citation graph: GraphSAGE), each
run is a ``main.py fit`` (a subprocess, as users run it) of

- ``1 process, whole graph``: ``NeighborLoader`` over the whole graph, ``2 x batch`` seeds per step;
- ``2 processes, one partition each``: DDP (gloo) with ``PartitionedNodeDataModule`` (``DistNeighborLoader``),
  ``batch`` seeds per process and step: the same global batch, fan-out, model, optimiser and epochs,

for a teacher (2 x ``--hidden``) and an ABKD student (2 x ``--student-hidden``) distilled from one teacher
(the 1-process teacher of the first seed, for both sides, so only the data path differs), each with every
seed of ``--seeds`` (``seed_everything``). A run's score is its test accuracy at its best validation epoch
(what ``main.py test`` scores with its ``best.ckpt``; both splits scored whole, every epoch). The table gives
each side's mean and standard deviation over seeds and the difference of means (2 processes - 1 process)
with its 95% confidence interval (Welch's t). The two sides cannot agree bit for bit (the batches differ: each
process seeds only its own partition's nodes, and the neighbour samples differ); "within noise" means that
interval includes 0.

Imports: no datamodule or LightningModule (everything runs through ``main.py``).
"""
from __future__ import annotations

import csv
import math
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml
from scipy import stats

from benchmarks.machine import benchmark_parser, machine, machine_line, publish, use_threads
from benchmarks.partitioned_scale import data_section, main_py, prepare

SIDES = {"1 process, whole graph": (1, "whole"), "2 processes, one partition each": (2, "parts")}
ARCH = {True: "rgcn", False: "sage"}


def config(run_dir: Path, data: dict[str, Any], model: dict[str, Any], seed: int, args: Any) -> Path:
    """A ``main.py fit`` config: checkpoints and CSV metrics in ``run_dir``."""
    trainer = {"accelerator": "cpu", "max_epochs": args.epochs, "num_sanity_val_steps": 0, "enable_progress_bar": False,
               "enable_model_summary": False, "use_distributed_sampler": False,
               "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir)}}}
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump({"seed_everything": seed, "checkpoint": {"dirpath": str(run_dir / "ckpt")},
                                    "trainer": trainer, "model": model, "data": data}))
    return path


def score(run_dir: Path) -> dict[str, float]:
    """Test accuracy at the epoch of best validation accuracy (the first such epoch), from the run's CSV log."""
    rows = list(csv.DictReader(next(run_dir.glob("lightning_logs/version_*/metrics.csv")).open()))
    epochs = [(float(r["val/acc"]), -int(r["epoch"]), float(r["test/acc"])) for r in rows if r.get("val/acc")]
    val, negative_epoch, test = max(epochs)
    return {"val_acc": val, "test_acc": test, "epoch": -negative_epoch}


def fit(work: Path, name: str, side: str, data: dict[str, Any], model: dict[str, Any], seed: int, args: Any) -> dict[str, Any]:
    processes, _ = SIDES[side]
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    seconds = main_py(["fit", "--config", str(config(run_dir, data, model, seed, args))], processes,
                      run_dir / "output.log", args.threads)
    result = {**score(run_dir), "seed": seed, "wall_s": seconds, "run_dir": str(run_dir)}
    print(f"{name}: {result}", file=sys.stderr)
    return result


def classifier(hetero: bool, hidden: int, args: Any) -> dict[str, Any]:
    return {"arch": ARCH[hetero], "hidden_channels": hidden, "num_layers": len(args.num_neighbors), "dropout": 0.5,
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": args.lr}}}


def compare(one: list[float], two: list[float]) -> dict[str, float]:
    """Means, standard deviations and the difference of means (two - one) with its Welch 95% interval."""
    mean_one, mean_two = statistics.mean(one), statistics.mean(two)
    var_one, var_two = statistics.variance(one), statistics.variance(two)
    se = math.sqrt(var_one / len(one) + var_two / len(two))
    dof = se**4 / ((var_one / len(one)) ** 2 / (len(one) - 1) + (var_two / len(two)) ** 2 / (len(two) - 1)) if se else 1.0
    half = stats.t.ppf(0.975, dof) * se
    return {"mean_one": mean_one, "std_one": statistics.stdev(one), "mean_two": mean_two, "std_two": statistics.stdev(two),
            "difference": mean_two - mean_one, "low": mean_two - mean_one - half, "high": mean_two - mean_one + half}


def table(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [machine_line(report["machine"]),
             f"{settings['papers']:,} papers; {settings['epochs']} epochs; global batch {2 * settings['batch_size']}; "
             f"fan-out {settings['num_neighbors']}; seeds {settings['seeds']}; test accuracy at the best validation epoch", "",
             "| graph | model | 1 process, whole graph | 2 processes, one partition each | difference (95% CI) | within noise |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in report["comparisons"]:
        c = row["test_acc"]
        lines.append(f"| {row['graph']} | {row['model']} | {c['mean_one']:.4f} ± {c['std_one']:.4f} | "
                     f"{c['mean_two']:.4f} ± {c['std_two']:.4f} | {c['difference']:+.4f} ({c['low']:+.4f}, {c['high']:+.4f}) | "
                     f"{'yes' if c['low'] <= 0 <= c['high'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = benchmark_parser(__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=8000, help="graph size (papers)")
    parser.add_argument("--graphs", nargs="+", default=["hetero", "homo"], choices=["hetero", "homo"],
                        help="all four node types (R-GCN) and/or the paper-citation graph (GraphSAGE)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="seed_everything of the runs")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per fit")
    parser.add_argument("--batch-size", type=int, default=256, help="seeds per process and step (1 process: twice)")
    parser.add_argument("--num-neighbors", type=int, nargs="+", default=[10, 10], help="fan-out per layer")
    parser.add_argument("--hidden", type=int, default=64, help="teacher width")
    parser.add_argument("--student-hidden", type=int, default=16, help="ABKD student width")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--feature-dim", type=int, default=128, help="paper feature width")
    parser.add_argument("--concurrency", type=int, default=4, help="RPC requests each DistNeighborLoader keeps in flight")
    parser.add_argument("--work", type=Path, default=Path("outputs/partitioned_parity"), help="graphs, partitions, runs")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    parser.set_defaults(threads=1)
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds (a spread is compared)")
    use_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "comparisons": [], "runs": {},
                              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")}}
    for graph in args.graphs:
        hetero = graph == "hetero"
        report["runs"][graph] = {"graph": prepare(args.work, args.papers, args, hetero)}
        data = {side: data_section(kind, args.work, args.papers, args, args.batch_size * (2 // processes), hetero)
                for side, (processes, kind) in SIDES.items()}
        teacher = {"class_path": "lightning_modules.node_classifier.NodeClassifier",
                   "init_args": classifier(hetero, args.hidden, args)}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {"teacher": {s: [] for s in SIDES}, "ABKD student": {s: [] for s in SIDES}}
        for seed in args.seeds:  # sides alternate, so load from other processes falls on both alike
            for side, (processes, kind) in SIDES.items():
                runs["teacher"][side].append(fit(args.work, f"{graph}_teacher_{kind}{processes}_seed{seed}", side, data[side],
                                                 teacher, seed, args))
        first = Path(runs["teacher"][next(iter(SIDES))][0]["run_dir"])
        teacher_checkpoint = str(next(first.glob("ckpt/version_*/best.ckpt")))
        student = {"class_path": "lightning_modules.distillation.DistillationModule",
                   "init_args": {"teacher_checkpoint": teacher_checkpoint, **classifier(hetero, args.student_hidden, args),
                                 "distiller": {"class_path": "graphkd.distill.ABKD"}}}
        for seed in args.seeds:
            for side, (processes, kind) in SIDES.items():
                runs["ABKD student"][side].append(fit(args.work, f"{graph}_student_{kind}{processes}_seed{seed}", side,
                                                      data[side], student, seed, args))
        report["runs"][graph].update(runs)
        for model, sides in runs.items():
            one, two = ([r["test_acc"] for r in results] for results in sides.values())
            report["comparisons"].append({"graph": "4 node types (R-GCN)" if hetero else "paper citations (GraphSAGE)",
                                          "model": model, "test_acc": compare(one, two)})
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    main()
