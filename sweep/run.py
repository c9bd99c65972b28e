"""Running an experiment's cells: here, in a pool of local worker processes, or (``sweep.slurm``) as a job array.

A cell is an ordinary ``main.py fit`` run folder: ``cell.yaml`` (what the experiment asks of it), ``run.yaml``
(that plus the run folder's logger, checkpoints and record: ``main.py fit --config <cell>/run.yaml`` reruns it),
TensorBoard logs and ``config.yaml`` in ``logs/fit``, checkpoints in
``checkpoints/version_0``, what it printed in ``output.log`` and, once it has finished, ``record.json``
(:mod:`callbacks.run_record`). A cell with a record is skipped; one without (killed, failed) is cleared and run
again; a finished cell whose ``cell.yaml`` differs from what the experiment now asks is refused, never mixed in.

Workers import the framework once and run cell after cell in-process, so a cell pays no interpreter start-up.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from callbacks.run_record import RECORD_FILE
from cli.errors import explain
from sweep.grid import Cell, Experiment, ExperimentError

CELL_FILE, RUN_FILE, OUTPUT_FILE, FAILURE_FILE = "cell.yaml", "run.yaml", "output.log", "failure.txt"


@dataclass(frozen=True)
class Outcome:
    """How one cell ended: ``finished`` (it ran now), ``failed`` (``error`` says why)."""

    folder: str
    status: str
    error: str = ""


def run_config(experiment: Experiment, cell: Cell) -> dict[str, Any]:
    """The cell's ``main.py`` config with the run folder's logger, checkpoint folder and record.

    Progress bars and model summaries are off (many cells share a console); the checkpoint policy's monitor
    and mode (``checkpoint.monitor``/``mode``, default ``val/acc``/``max``) also choose the record's best epoch.
    """
    config = experiment.config(cell)
    folder = str(cell.folder)
    checkpoint = config.setdefault("checkpoint", {})
    checkpoint["dirpath"] = f"{folder}/checkpoints"
    trainer = config.setdefault("trainer", {})
    trainer.update(enable_progress_bar=False, enable_model_summary=False, logger={
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": folder, "name": "logs", "version": "fit"}})
    record = {"class_path": "callbacks.run_record.RunRecord", "init_args": {
        "dirpath": folder, "monitor": checkpoint.get("monitor", "val/acc"), "mode": checkpoint.get("mode", "max")}}
    trainer["callbacks"] = [*(trainer.get("callbacks") or []), record]
    return config


def state(experiment: Experiment, cell: Cell) -> str:
    """``finished``, ``changed`` (finished, but with another config than the experiment's now), ``partial``
    (started, not finished) or ``new``. A folder that is not a cell's (no ``cell.yaml``) is refused."""
    folder = cell.folder
    if not folder.exists():
        return "new"
    if not (folder / CELL_FILE).is_file():
        if any(folder.iterdir()):
            raise ExperimentError(f"{folder} exists and is not a sweep cell (no {CELL_FILE}); choose another out")
        return "new"
    if not (folder / RECORD_FILE).is_file():
        return "partial"
    same = yaml.safe_load((folder / CELL_FILE).read_text()) == experiment.config(cell)
    return "finished" if same else "changed"


def pending_cells(experiment: Experiment) -> list[Cell]:
    """The cells still to run, after refusing finished cells whose config changed."""
    cells = experiment.cells()
    states = [state(experiment, cell) for cell in cells]
    if changed := [str(cell.folder) for cell, status in zip(cells, states) if status == "changed"]:
        raise ExperimentError(f"{len(changed)} finished cells were run with another config than {experiment.path} now "
                              f"gives (first: {changed[0]}); move them away to rerun, or give the experiment another out")
    return [cell for cell, status in zip(cells, states) if status != "finished"]


@contextlib.contextmanager
def captured_output(path: Path) -> Iterator[None]:
    """This process's stdout/stderr (Python-level) into ``path`` while a cell runs."""
    with path.open("a") as stream, contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        yield


def run_cell(folder: str, asked: dict[str, Any], config: dict[str, Any]) -> Outcome:
    """Clear the folder, write ``cell.yaml`` (``asked``) and ``run.yaml`` (``config``) and run ``main.py fit`` on
    the latter in this process.

    A failure is kept in ``failure.txt`` and returned, never raised: the other cells go on.
    """
    import main as framework  # the CLI every cell runs; imported once per worker

    path = Path(folder)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / CELL_FILE).write_text(yaml.safe_dump(asked, sort_keys=False))
    (path / RUN_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    arguments = ["fit", "--config", str(path / RUN_FILE)]
    argv, sys.argv = sys.argv, ["main.py", *arguments]  # what a DDP launcher reruns for the other ranks
    try:
        with captured_output(path / OUTPUT_FILE):
            framework.main()  # reads sys.argv, as a DDP rank does
    except Exception as error:  # noqa: BLE001 - one cell's failure must not end the sweep; it is reported
        (path / FAILURE_FILE).write_text(traceback.format_exc())
        message = explain(error) or f"{type(error).__name__}: {error}"
        return Outcome(folder, "failed", " ".join(message.split())[:300])
    finally:
        sys.argv = argv
    if not (path / RECORD_FILE).is_file():
        return Outcome(folder, "failed", f"the fit ended without {RECORD_FILE} (interrupted?)")
    return Outcome(folder, "finished")


def quiet_worker(threads: int) -> None:
    """A worker's setup: ``threads`` torch threads, and Lightning's per-run banners off."""
    import torch

    torch.set_num_threads(threads)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def run_cells(experiment: Experiment, cells: list[Cell], workers: int, threads: int) -> Iterator[Outcome]:
    """Run ``cells`` here (``workers`` 0) or in ``workers`` processes; yields each outcome as it ends."""
    jobs = [(str(cell.folder), experiment.config(cell), run_config(experiment, cell)) for cell in cells]
    if workers == 0:
        quiet_worker(threads)
        for job in jobs:
            yield run_cell(*job)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=quiet_worker,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(run_cell, *job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
