"""Running a grid: ordinary run folders, finished cells skipped, a killed grid resumed, failures kept apart."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sweep.__main__ import main
from sweep.grid import Experiment
from tests.sweep.conftest import write_experiment

REPO = Path(__file__).resolve().parents[2]


def records(out: Path) -> dict[str, dict]:
    return {str(path.parent.relative_to(out)): json.loads(path.read_text()) for path in sorted(out.rglob("record.json"))}


def test_each_cell_is_an_ordinary_run_folder_and_a_rerun_skips_it(experiment_file: Path, capsys) -> None:
    assert main(["run", str(experiment_file)]) == 0
    out = experiment_file.parent / "out"
    found = records(out)
    assert sorted(found) == ["width_16", "width_8"]
    cell = out / "width_16"
    run = yaml.safe_load((cell / "run.yaml").read_text())
    assert run["model"]["init_args"]["hidden_channels"] == 16
    assert (cell / "logs" / "fit" / "config.yaml").is_file() and list((cell / "logs" / "fit").glob("events.*"))
    best = torch.load(cell / "checkpoints" / "version_0" / "best.ckpt", weights_only=True)
    record = found["width_16"]
    assert record["epochs"] == 3 and record["stopped"] == "max_epochs"
    assert best["epoch"] == record["best_epoch"]  # the record's best epoch is the checkpoint's
    assert record["at_best"]["val/acc"] == max(record["history"]["val/acc"])
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("record.json")}
    capsys.readouterr()
    assert main(["run", str(experiment_file)]) == 0
    assert "2 of 2 cells finished, 0 to run" in capsys.readouterr().err
    assert stamps == {path: path.stat().st_mtime_ns for path in out.rglob("record.json")}
    assert (out / "report.md").is_file()


def test_a_grid_killed_mid_way_resumes_with_the_cells_it_had_not_finished(experiment_file: Path) -> None:
    out = experiment_file.parent / "out"
    command = [sys.executable, "-m", "sweep", "run", str(experiment_file)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.rglob("record.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    first = {path: path.stat().st_mtime_ns for path in out.rglob("record.json")}
    assert len(first) == 1, "killed before the first cell finished or after the last"
    assert main(["run", str(experiment_file)]) == 0
    assert len(records(out)) == 2
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in first.items())  # finished cells were not rerun


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path: Path, capsys) -> None:
    grid = {"width": {"key": "model.init_args.hidden_channels", "values": [8, -1]}}
    path = write_experiment(tmp_path, grid=grid)
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "hidden_channels must be at least 1" in err and "1 cells failed" in err
    assert (tmp_path / "out" / "width_8" / "record.json").is_file()
    assert (tmp_path / "out" / "width_-1" / "failure.txt").is_file()


def test_a_finished_cell_run_with_another_config_is_refused(experiment_file: Path, capsys) -> None:
    assert main(["run", str(experiment_file), "--only", "width=width_8"]) == 0
    experiment = Experiment.load(experiment_file)
    experiment.base.write_text(experiment.base.read_text().replace("max_epochs: 3", "max_epochs: 4"))
    capsys.readouterr()
    assert main(["run", str(experiment_file)]) == 2
    assert "1 finished cells were run with another config" in capsys.readouterr().err


def test_local_workers_give_the_same_records_as_one_process(tmp_path: Path) -> None:
    """Cells are seeded: a pool of two workers reproduces the in-process results exactly."""
    here, pooled = write_experiment(tmp_path, out="here"), write_experiment(tmp_path, out="pooled")
    assert main(["run", str(here)]) == 0 and main(["run", str(pooled), "--workers", "2"]) == 0
    mine, theirs = records(tmp_path / "here"), records(tmp_path / "pooled")
    assert {k: v["history"]["val/acc"] for k, v in mine.items()} == {k: v["history"]["val/acc"] for k, v in theirs.items()}


@pytest.mark.parametrize("rule", ["depth=1", "width=width_9"])
def test_only_names_existing_axes_and_labels(experiment_file: Path, rule: str, capsys) -> None:
    assert main(["run", str(experiment_file), "--only", rule]) == 2
    assert capsys.readouterr().err.startswith("error: --only")
