"""GradientShare measures each loss term's gradient on the student without changing the training."""
from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from callbacks.gradient_share import GradientShare, gradient_norm
from datamodules.ogb import SyntheticMAGDataModule
from graphkd.distill import ABKD
from lightning_modules.distillation import DistillationModule
from lightning_modules.node_classifier import NodeClassifier
from tests.graph_fixtures import TINY_MAG


def test_gradient_norm_known_answer() -> None:
    """d/dw of 3 w1 + 4 w2 is (3, 4): norm 5; an unused parameter counts as zero."""
    w, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    assert gradient_norm(3 * w[0] + 4 * w[1], [w, unused]) == pytest.approx(5.0)


def test_the_measured_run_trains_exactly_as_an_unmeasured_one(tmp_path) -> None:
    data = SyntheticMAGDataModule(TINY_MAG, root=str(tmp_path / "mag"), hetero=False)
    facts = {"num_features": data.num_features, "num_classes": data.num_classes, "graph_info": data.graph_info}
    teacher = NodeClassifier(**facts, arch="gcn", hidden_channels=16, num_layers=3)
    fit = lambda module, callbacks, root: L.Trainer(
        max_epochs=3, logger=L.pytorch.loggers.CSVLogger(root), enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks).fit(module, data)
    fit(teacher, [], tmp_path / "teacher")
    path = tmp_path / "teacher.ckpt"
    teacher.trainer.save_checkpoint(path)
    students = []
    for callbacks in ([], [GradientShare(epochs=[0, 2])]):
        L.seed_everything(0)
        students.append(DistillationModule(**facts, teacher_checkpoint=str(path), arch="gcn", hidden_channels=8,
                                           num_layers=2, distiller=ABKD))
        fit(students[-1], callbacks, tmp_path / f"run{len(students)}")
    plain, measured = (dict(s.model.state_dict()) for s in students)
    assert all(torch.equal(plain[k], measured[k]) for k in plain)
    rows = json.loads(next((tmp_path / "run2").rglob("gradient_share.json")).read_text())
    assert [row["epoch"] for row in rows] == [0, 2]
    assert set(rows[0]) == {"epoch", "ce", "kd_logit", "kd_align"} and all(rows[0][t] > 0 for t in ("ce", "kd_logit", "kd_align"))
