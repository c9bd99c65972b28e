"""The report from run folders alone: means over trained seeds, the share that did not train, paired intervals."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sweep.grid import Experiment
from sweep.report import paired_difference, write_report
from tests.sweep.conftest import write_experiment

METHODS = {"logit KD": {"model.init_args.distiller": {"class_path": "graphkd.distill.LogitKD"}},
           "ABKD": {"model.init_args.distiller": {"class_path": "graphkd.distill.ABKD"}}}


def fake_record(val: float, test: float, stopped: str = "early_stopping", attention=None) -> dict:
    return {"monitor": "val/acc", "mode": "max", "best_epoch": 3, "at_best": {"val/acc": val, "test/acc": test},
            "epochs": 10, "max_epochs": 10, "stopped": stopped, "seconds": 1.0,
            "parameters": {"student": 100.0, "teacher": 800.0, "compression_ratio": 8.0}, "majority_share": 0.3,
            "attention": attention, "history": {}}


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences() -> None:
    """Differences 1, 2, 3 points: mean 2, sample std 1, half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321."""
    d = paired_difference([0.51, 0.52, 0.53], [0.50, 0.50, 0.50])
    assert d["mean"] == pytest.approx(2.0) and d["n"] == 3
    assert d["high"] - d["mean"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)


def test_collapsed_students_are_counted_apart_from_the_mean(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, grid={"method": METHODS, "seed": {"key": "seed_everything", "values": [0, 1, 2]}},
                            report={"rows": "method", "seeds": "seed", "pairs": [["ABKD", "logit KD"]],
                                    "heatmaps": ["ABKD"]})
    experiment = Experiment.load(path)
    scores = {("logit KD", "seed_0"): (0.80, 0.78), ("logit KD", "seed_1"): (0.35, 0.20),  # seed 1 collapsed
              ("logit KD", "seed_2"): (0.82, 0.80), ("ABKD", "seed_0"): (0.81, 0.79), ("ABKD", "seed_1"): (0.79, 0.77),
              ("ABKD", "seed_2"): (0.83, 0.81)}
    for cell in experiment.cells():
        val, test = scores[(cell.labels["method"], cell.labels["seed"])]
        cell.folder.mkdir(parents=True)
        attention = [[0.9, 0.1], [0.2, 0.8]] if cell.labels["method"] == "ABKD" else None
        stopped = "max_epochs" if cell.labels["seed"] == "seed_2" else "early_stopping"
        (cell.folder / "record.json").write_text(json.dumps(fake_record(val, test, stopped, attention)))
    report = write_report(experiment).read_text()
    assert "| logit KD | 79.00 ± 1.41 (2/3), 1 at the epoch limit |" in report  # the collapsed seed is not in the mean
    assert "| ABKD | 79.00 ± 2.00 (3/3), 1 at the epoch limit |" in report
    # the pair is over every seed both finished, the collapse included: (1 + 57 + 1) / 3 points
    assert "| ABKD - logit KD | +19.67 [" in report and "(3) |" in report
    results = json.loads((experiment.out / "results.json").read_text())
    assert results[path.stem]["cells"]["all"]["logit KD"]["trained"] == [True, False, True]
    assert (experiment.out / "img").is_dir() and len(list((experiment.out / "img").glob("*.png"))) == 1
