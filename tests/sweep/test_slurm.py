"""The SLURM path with a stand-in ``sbatch`` that runs the array's tasks here: the same run folders, the same report."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sweep.__main__ import main
from tests.sweep.conftest import write_experiment

STAND_IN = """#!/bin/bash
# sbatch stand-in: runs every task of the script's --array one after another, as SLURM would in parallel
script="${@: -1}"
echo "$@" >> "$(dirname "$0")/sbatch.calls"
last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' "$script")
for task in $(seq 0 "$last"); do SLURM_ARRAY_TASK_ID=$task SLURM_ARRAY_JOB_ID=77 bash "$script" || exit 1; done
echo "Submitted batch job 77"
"""


@pytest.fixture
def sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "sbatch").write_text(STAND_IN)
    (folder / "sbatch").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


@pytest.mark.slow
def test_a_job_array_gives_the_report_of_a_local_run(tmp_path: Path, sbatch: Path) -> None:
    grid = {"width": {"key": "model.init_args.hidden_channels", "values": [8, 16]},
            "seed": {"key": "seed_everything", "values": [0, 1]}}
    local, cluster = (write_experiment(tmp_path, out=name, grid=grid, report={"seeds": "seed"})
                      for name in ("local", "cluster"))
    assert main(["run", str(local)]) == 0
    assert main(["run", str(cluster), "--slurm", "--per-task", "2", "--sbatch-args=--partition=cpu"]) == 0
    script = next((tmp_path / "cluster" / ".slurm").glob("*.sbatch")).read_text()
    assert "#SBATCH --array=0-1\n" in script and "#SBATCH --partition=cpu\n" in script
    assert main(["report", str(cluster)]) == 0
    ours, theirs = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("local", "cluster"))
    assert ours["local"] == theirs["cluster"] and len(ours["local"]["cells"]) == 2
    assert main(["run", str(cluster), "--slurm"]) == 0  # nothing pending: nothing submitted
    assert len((sbatch / "sbatch.calls").read_text().splitlines()) == 1


def test_a_missing_sbatch_is_one_clear_error(experiment_file: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["run", str(experiment_file), "--slurm"]) == 2
    assert "sbatch is not on PATH" in capsys.readouterr().err
