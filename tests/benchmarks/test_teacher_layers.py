"""benchmarks.teacher_layers reads a teacher's run folder and scores its layers."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import teacher_layers
from sweep.__main__ import main as sweep
from tests.sweep.conftest import write_experiment


def test_a_run_folder_gives_its_teacher_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grid = {"depth": {"key": "model.init_args.num_layers", "values": [3]}}
    assert sweep(["run", str(write_experiment(tmp_path, grid=grid))]) == 0
    capsys.readouterr()
    teacher_layers.main([str(tmp_path / "out" / "depth_3")])
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith(f"| {tmp_path / 'out' / 'depth_3'} | gcn 3 x 8 | ")
    with pytest.raises(SystemExit) as failed:
        teacher_layers.main([str(tmp_path)])
    assert failed.value.code == 2 and "holds no run.yaml" in capsys.readouterr().err
