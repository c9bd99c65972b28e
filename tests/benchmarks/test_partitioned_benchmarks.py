"""The pieces of the partition benchmarks that run in seconds: the probe callback, the score and the comparison.

The benchmarks themselves run ``main.py`` many times (minutes to hours); their numbers are in docs/large_graphs.md.
"""
from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
from scipy import stats

from benchmarks.partitioned_parity import compare, score
from benchmarks.scale_probe import ScaleProbe
from datamodules.ogb import SyntheticMAGDataModule
from lightning_modules.node_classifier import NodeClassifier
from tests.graph_fixtures import TINY_MAG, require_neighbor_sampler


def test_probe_counts_every_training_step_seed_and_sampled_node(tmp_path):
    require_neighbor_sampler()
    dm = SyntheticMAGDataModule(TINY_MAG, root=str(tmp_path / "graph"), hetero=True, batch_size=64)
    model = NodeClassifier(dm.num_features, dm.num_classes, dm.graph_info, arch="rgcn", hidden_channels=8, num_layers=2)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        callbacks=[ScaleProbe(str(tmp_path / "probe"))])
    trainer.fit(model, dm)
    report = json.loads((tmp_path / "probe" / "rank0.json").read_text())
    train = int(dm.target_store.train_mask.sum())
    assert report["rank"] == 0 and report["world_size"] == 1 and report["peak_rss_mb"] > 50
    assert len(report["epochs"]) == 2
    for epoch in report["epochs"]:
        assert epoch["steps"] == math.ceil(train / 64) and epoch["seeds"] == train
        assert epoch["sampled_nodes"] > epoch["seeds"] and epoch["seconds"] > 0


def test_score_is_the_test_accuracy_at_the_first_best_validation_epoch(tmp_path):
    folder = tmp_path / "lightning_logs" / "version_0"
    folder.mkdir(parents=True)
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "step", "train/acc", "val/acc", "test/acc"])
        writer.writeheader()
        for epoch, val, test in ((0, 0.5, 0.4), (1, 0.7, 0.6), (2, 0.7, 0.9), (3, 0.6, 0.8)):
            writer.writerow({"epoch": epoch, "step": epoch, "val/acc": val, "test/acc": test})
            writer.writerow({"epoch": epoch, "step": epoch, "train/acc": 0.5})
    assert score(tmp_path) == {"val_acc": 0.7, "test_acc": 0.6, "epoch": 1}


@pytest.mark.parametrize("shift", [0.0, 0.05])
def test_comparison_interval_agrees_with_welchs_test(shift):
    one = [0.80, 0.82, 0.79, 0.81]
    two = [value + shift for value in (0.81, 0.80, 0.83, 0.80)]
    result = compare(one, two)
    assert result["difference"] == pytest.approx(sum(two) / 4 - sum(one) / 4)
    p_value = stats.ttest_ind(two, one, equal_var=False).pvalue
    assert (result["low"] <= 0 <= result["high"]) == (p_value >= 0.05)
