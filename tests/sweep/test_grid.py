"""Experiment files: the cells of a grid, their folders and configs, and the errors of a wrong file."""
from __future__ import annotations

from pathlib import Path

import pytest

from sweep.grid import Experiment, ExperimentError
from tests.sweep.conftest import write_experiment

METHODS = {"logit KD": {"model.init_args.distiller": {"class_path": "graphkd.distill.LogitKD"}},
           "ABKD": {"model.init_args.distiller": {"class_path": "graphkd.distill.ABKD", "init_args": {"align_weight": 3}}}}


def test_the_cells_are_the_product_of_the_axes_minus_the_excluded(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, grid={"method": METHODS, "seed": {"key": "seed_everything", "values": [0, 1, 2]}},
                            exclude=[{"method": "ABKD", "seed": ["seed_1", "seed_2"]}])
    cells = Experiment.load(path).cells()
    assert [cell.name for cell in cells] == ["logit KD/seed_0", "logit KD/seed_1", "logit KD/seed_2", "ABKD/seed_0"]
    assert cells[0].folder == tmp_path / "out" / "logit_KD" / "seed_0"


def test_a_cell_config_replaces_mappings_whole_and_keeps_the_rest(tmp_path: Path) -> None:
    """A swapped class_path never inherits the base's init_args; untouched keys stay the base's."""
    path = write_experiment(tmp_path, grid={"method": METHODS}, set={"trainer.max_epochs": 7})
    experiment = Experiment.load(path)
    base_distiller = {"class_path": "graphkd.distill.FitNet", "init_args": {"weight": 0.1}}
    experiment.base.write_text(experiment.base.read_text() + f"extra: {{distiller: {base_distiller}}}\n")
    first, second = (experiment.config(cell) for cell in experiment.cells())
    assert first["model"]["init_args"]["distiller"] == {"class_path": "graphkd.distill.LogitKD"}
    assert second["model"]["init_args"]["distiller"]["init_args"] == {"align_weight": 3}
    assert first["trainer"] == {"max_epochs": 7, "log_every_n_steps": 1, "num_sanity_val_steps": 0}
    assert first["model"]["init_args"]["hidden_channels"] == 8


@pytest.mark.parametrize(("keys", "message"), [
    ({"exclude": [{"method": "GCRD"}]}, r"exclude: method has no \['GCRD'\]"),
    ({"exclude": [{"model": "ABKD"}]}, "exclude names axis 'model'"),
    ({"sett": {}}, r"unknown keys \['sett'\]"),
])
def test_a_wrong_experiment_file_is_one_clear_error(tmp_path: Path, keys: dict, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        Experiment.load(write_experiment(tmp_path, grid={"method": METHODS}, **keys))


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="does not exist"):
        Experiment.load(tmp_path / "absent.yaml")
    path = write_experiment(tmp_path)
    (tmp_path / "base.yaml").unlink()
    with pytest.raises(ExperimentError, match="base config .* does not exist"):
        Experiment.load(path)


def test_a_needed_experiment_runs_only_the_labels_its_dependant_uses(tmp_path: Path) -> None:
    from sweep.__main__ import needed

    datasets = {name: {"data.init_args.root": name} for name in ("Cora", "CiteSeer", "Physics")}
    teachers = write_experiment(tmp_path, out="teachers", grid={"dataset": datasets})
    students = write_experiment(tmp_path, out="students", grid={"dataset": {"Cora": {}, "CiteSeer": {}}, "method": METHODS},
                                needs=[str(teachers)])
    ((need, rules),) = needed(Experiment.load(students), {})
    assert need.path == teachers and rules == {"dataset": {"Cora", "CiteSeer"}}
    ((_, rules),) = needed(Experiment.load(students), {"dataset": {"Cora"}})
    assert rules == {"dataset": {"Cora"}}
