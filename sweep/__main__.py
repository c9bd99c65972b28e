"""``python -m sweep``: run an experiment's grid (here, in local workers, or on SLURM) and report it.

    python -m sweep run experiments/abkd_deep_gcn.yaml --workers 2      # resumable: finished cells are skipped
    python -m sweep run experiments/abkd_deep_gcn.yaml --slurm --sbatch-args "--partition=gpu --time=4:00:00"
    python -m sweep status experiments/abkd_deep_gcn.yaml
    python -m sweep report experiments/abkd_deep_gcn.yaml            # from the run folders alone
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from foundation.errors import InputError
from sweep.grid import Cell, Experiment, ExperimentError
from sweep.run import pending_cells, run_cells, state
from sweep.slurm import submit, task_cells


def only_filter(rules: list[str], experiment: Experiment) -> dict[str, set[str]]:
    """``--only axis=label[,label]`` as ``{axis: labels}``, checked against the grid."""
    axes = {axis.name: axis.labels for axis in experiment.grid}
    chosen: dict[str, set[str]] = {}
    for rule in rules:
        name, _, labels = rule.partition("=")
        if name not in axes or not labels:
            raise ExperimentError(f"--only {rule}: give AXIS=LABEL[,LABEL...] with an axis of {list(axes)}")
        if unknown := [label for label in labels.split(",") if label not in axes[name]]:
            raise ExperimentError(f"--only {rule}: {name} has no {unknown}; its labels are {axes[name]}")
        chosen.setdefault(name, set()).update(labels.split(","))
    return chosen


def selected(cells: list[Cell], only: dict[str, set[str]]) -> list[Cell]:
    return [cell for cell in cells if all(cell.labels[name] in labels for name, labels in only.items())]


def seed_major(cells: list[Cell], experiment: Experiment) -> list[Cell]:
    """Cells ordered seed by seed (the report's seed axis varies slowest), so a grid stopped early holds whole
    seeds: every method of a finished seed, paired."""
    axis = experiment.report.get("seeds", "seed")
    labels = next((a.labels for a in experiment.grid if a.name == axis), None)
    return sorted(cells, key=lambda cell: labels.index(cell.labels[axis])) if labels else cells


def run_local(experiment: Experiment, only: dict[str, set[str]], workers: int, threads: int) -> int:
    """Run the experiment's needs, then its pending cells; returns how many failed."""
    failed = 0
    for need, rules in needed(experiment, only):  # an --only rule on an axis it shares narrows a need too
        failed += run_local(need, rules, workers, threads)
    cells = seed_major(selected(pending_cells(experiment), only), experiment)
    total = len(selected(experiment.cells(), only))
    print(f"{experiment.path}: {total - len(cells)} of {total} cells finished, {len(cells)} to run", file=sys.stderr)
    start = time.perf_counter()
    for done, outcome in enumerate(run_cells(experiment, cells, workers, threads), start=1):
        elapsed = time.perf_counter() - start
        line = f"[{done}/{len(cells)} {elapsed / 60:.1f} min] {outcome.status} {outcome.folder}"
        print(line + (f": {outcome.error}" if outcome.error else ""), file=sys.stderr, flush=True)
        failed += outcome.status == "failed"
    return failed


def needed(experiment: Experiment, only: dict[str, set[str]]) -> list[tuple[Experiment, dict[str, set[str]]]]:
    """The experiments ``experiment`` needs, each narrowed on the axes they share to the labels ``experiment``
    runs (its own, or the ``--only`` ones): students on Cora need only Cora's teacher."""
    pairs = []
    for path in experiment.needs:
        need = Experiment.load(path)
        shared = {axis.name for axis in need.grid} & {axis.name for axis in experiment.grid}
        rules = {axis.name: only.get(axis.name, set(axis.labels)) for axis in experiment.grid if axis.name in shared}
        pairs.append((need, {name: labels & set(next(a for a in need.grid if a.name == name).labels)
                             for name, labels in rules.items()}))
    return pairs


def run_slurm(experiment: Experiment, only: dict[str, set[str]], args: argparse.Namespace) -> list[str]:
    """Submit the needs' pending cells, then this experiment's as an array after them; returns the job ids."""
    jobs: list[str] = []
    for need, rules in needed(experiment, only):
        jobs += run_slurm(need, rules, args)
    cells = seed_major(selected(pending_cells(experiment), only), experiment)
    job = submit(experiment, cells, args.per_task, shlex.split(args.sbatch_args), args.max_parallel, args.threads, jobs)
    print(f"{experiment.path}: {len(cells)} cells " + (f"submitted as job {job}" if job else "finished already"),
          file=sys.stderr)
    return [*jobs, *([job] if job else [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the cells not finished yet (and the experiments it needs)",
                              allow_abbrev=False)
    status = commands.add_parser("status", help="count finished, partial and new cells", allow_abbrev=False)
    report = commands.add_parser("report", help="write report.md and results.json from the run folders",
                                 allow_abbrev=False)
    for sub in (run, status, report):
        sub.add_argument("experiment", type=Path, help="experiment YAML (see experiments/)")
        sub.add_argument("--only", nargs="+", default=[], metavar="AXIS=LABELS",
                         help="only the cells with these labels, e.g. dataset=Cora seed=seed_0,seed_1")
    run.add_argument("--workers", type=int, default=0,
                     help="local worker processes (0: run the cells in this process); each imports the framework once")
    run.add_argument("--slurm", action="store_true", help="submit the pending cells as a SLURM job array instead")
    run.add_argument("--per-task", type=int, default=1, help="--slurm: cells run one after another by each array task")
    run.add_argument("--max-parallel", type=int, default=None, help="--slurm: array tasks running at once (%%N)")
    run.add_argument("--sbatch-args", default="", help='--slurm: further sbatch options, e.g. "--partition=cpu --time=2:00:00"')
    task = commands.add_parser("task", help="(inside a SLURM array task) run this task's cells", allow_abbrev=False)
    task.add_argument("experiment", type=Path)
    task.add_argument("--cells", type=Path, required=True, help="the submitted cell list")
    task.add_argument("--task", type=int, required=True, help="the array task index")
    task.add_argument("--per-task", type=int, default=1)
    for sub_parser in (run, task):
        sub_parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    args = parser.parse_args(argv)
    try:
        experiment = Experiment.load(args.experiment)
        if args.command == "task":
            cells = task_cells(experiment, args.cells, args.task, args.per_task)
            outcomes = list(run_cells(experiment, cells, 0, args.threads))
            for outcome in outcomes:
                print(f"{outcome.status} {outcome.folder} {outcome.error}".rstrip(), file=sys.stderr)
            return int(any(outcome.status == "failed" for outcome in outcomes))
        only = only_filter(args.only, experiment)
        if args.command == "status":
            cells = selected(experiment.cells(), only)
            counts: dict[str, int] = {}
            for cell in cells:
                counts[state(experiment, cell)] = counts.get(state(experiment, cell), 0) + 1
            print(f"{experiment.path}: {len(cells)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
            return 0
        if args.command == "run" and args.slurm:
            if args.per_task < 1 or (args.max_parallel is not None and args.max_parallel < 1):
                raise ExperimentError("--per-task and --max-parallel must be at least 1")
            run_slurm(experiment, only, args)
            print(f"when the jobs are done: python -m sweep report {experiment.path}", file=sys.stderr)
            return 0
        if args.command == "run":
            if args.workers < 0 or args.threads < 1:
                raise ExperimentError("--workers must be >= 0 and --threads >= 1")
            failed = run_local(experiment, only, args.workers, args.threads)
            if failed:
                print(f"error: {failed} cells failed; their failure.txt says why, and the next run retries them",
                      file=sys.stderr)
                return 1
        from sweep.report import write_report

        print(f"report: {write_report(experiment).resolve()}", file=sys.stderr)
    except InputError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
