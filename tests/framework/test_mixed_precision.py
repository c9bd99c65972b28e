"""bf16 mixed precision on CPU: ABKD trains with finite losses; the rasteriser's depth test is unchanged."""
from __future__ import annotations

import math

import lightning as L
import torch

from datamodules.ogb import SyntheticMAGDataModule
from facetex.face3d.rasterizer import rasterize
from graphkd.distill import ABKD
from lightning_modules.distillation import DistillationModule
from lightning_modules.node_classifier import NodeClassifier
from tests.graph_fixtures import TINY_MAG


def test_abkd_trains_under_bf16_autocast(tmp_path):
    dm = SyntheticMAGDataModule(TINY_MAG, root=str(tmp_path / "mag"), hetero=False)
    facts = {"num_features": dm.num_features, "num_classes": dm.num_classes, "graph_info": dm.graph_info}
    options = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
    teacher_trainer = L.Trainer(max_epochs=2, **options)
    teacher_trainer.fit(NodeClassifier(**facts, arch="gcn", hidden_channels=32, num_layers=3), dm)
    teacher_trainer.save_checkpoint(tmp_path / "teacher.ckpt")
    student = DistillationModule(**facts, teacher_checkpoint=str(tmp_path / "teacher.ckpt"), distiller=ABKD,
                                 hidden_channels=8, num_layers=2)
    trainer = L.Trainer(max_epochs=3, precision="bf16-mixed", **options)
    trainer.fit(student, dm)
    metrics = trainer.callback_metrics
    for name in ("train/loss", "train/loss_kd_logit", "train/loss_kd_align", "val/acc"):
        assert math.isfinite(float(metrics[name])), name
    assert torch.allclose(student.distiller.attention_scores().sum(dim=1), torch.ones(1))


def test_rasteriser_depth_test_is_fp32_under_autocast():
    torch.manual_seed(0)
    vertices = torch.rand(2, 60, 3) * torch.tensor([96.0, 96.0, 1.0])
    faces = torch.randint(0, 60, (80, 3))
    reference = rasterize(vertices, faces, (96, 96))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = rasterize(vertices, faces, (96, 96))
    assert torch.equal(mixed.triangle_id, reference.triangle_id)
    assert mixed.depth.dtype == torch.float32 and torch.equal(mixed.depth, reference.depth)
