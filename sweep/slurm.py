"""An experiment's pending cells as a SLURM job array: each array task runs a few cells in one process.

``python -m sweep run EXP --slurm`` writes ``<out>/.slurm/<stamp>.sbatch`` and ``<stamp>.cells`` (the cell
folders, one per line) and submits it with ``sbatch``; every task runs ``python -m sweep task EXP --cells
<stamp>.cells --task $SLURM_ARRAY_TASK_ID --per-task K``, i.e. the same in-process cell runner as a local sweep,
so the run folders are the same and ``python -m sweep report EXP`` reads them after the job. A needed
experiment with pending cells is submitted first and the array waits for it (``--dependency=afterok``).
Resubmitting after a partial job runs only what has not finished.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from foundation.errors import InputError
from sweep.grid import Cell, Experiment

SUBMITTED = re.compile(r"Submitted batch job (\d+)")


class SubmitError(InputError, RuntimeError):
    """``sbatch`` is missing or refused the job; the message holds what it said."""


def array_script(experiment: Experiment, cells_file: Path, tasks: int, per_task: int, sbatch_args: list[str],
                 max_parallel: int | None, threads: int) -> str:
    """The ``sbatch`` script of ``tasks`` array tasks over the cells listed in ``cells_file``."""
    throttle = f"%{max_parallel}" if max_parallel else ""
    logs = experiment.out / ".slurm"
    directives = [f"--job-name=sweep-{experiment.path.stem}", f"--array=0-{tasks - 1}{throttle}",
                  f"--output={logs}/%A_%a.out", f"--cpus-per-task={threads}", *sbatch_args]
    command = [sys.executable, "-m", "sweep", "task", str(experiment.path), "--cells", str(cells_file),
               "--task", "$SLURM_ARRAY_TASK_ID", "--per-task", str(per_task), "--threads", str(threads)]
    return "\n".join(["#!/bin/bash", *(f"#SBATCH {directive}" for directive in directives), "set -euo pipefail",
                      f"cd {shlex.quote(str(Path.cwd()))}",
                      " ".join(part if part.startswith("$") else shlex.quote(part) for part in command), ""])


def submit(experiment: Experiment, cells: list[Cell], per_task: int, sbatch_args: list[str],
           max_parallel: int | None, threads: int, after: list[str]) -> str | None:
    """Submit ``cells`` as one array job (after the jobs ``after``); returns its id, or None when none is pending."""
    if not cells:
        return None
    folder = experiment.out / ".slurm"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cells_file = folder / f"{stamp}.cells"
    cells_file.write_text("".join(f"{cell.folder}\n" for cell in cells))
    tasks = -(-len(cells) // per_task)
    script = folder / f"{stamp}.sbatch"
    dependency = [f"--dependency=afterok:{':'.join(after)}"] if after else []
    script.write_text(array_script(experiment, cells_file, tasks, per_task, [*dependency, *sbatch_args], max_parallel,
                                   threads))
    try:
        answer = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise SubmitError("sbatch is not on PATH: run --slurm on a SLURM login node, or run the cells here with "
                          "--workers N") from error
    found = SUBMITTED.search(answer.stdout)
    if answer.returncode != 0 or found is None:
        raise SubmitError(f"sbatch refused {script}: {' '.join((answer.stderr or answer.stdout).split())[:300]}")
    return found.group(1)


def task_cells(experiment: Experiment, cells_file: Path, task: int, per_task: int) -> list[Cell]:
    """The cells of array task ``task``: lines ``task * per_task`` onwards of ``cells_file``."""
    listed = cells_file.read_text().split()[task * per_task:(task + 1) * per_task]
    by_folder = {str(cell.folder): cell for cell in experiment.cells()}
    if unknown := [folder for folder in listed if folder not in by_folder]:
        raise InputError(f"{cells_file} names cells that {experiment.path} no longer has: {unknown[:3]}")
    return [by_folder[folder] for folder in listed]
