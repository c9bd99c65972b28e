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


def _quiet_trainer(**options) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **options)


def test_face_regressor_trains_under_bf16_and_validates_like_fp32(tmp_path):
    """The 3DDFA-style regressor: bf16 training steps stay finite, and bf16 validation of the same weights
    matches fp32 validation to bf16's precision (the landmark projection and losses run in fp32)."""
    from lightning_modules.face_regressor import FaceRegressorModule
    from tests.lightning_modules.test_face_regressor import datamodule, write_tiny_face

    face = write_tiny_face(tmp_path / "face.npz")
    L.seed_everything(0)
    module = FaceRegressorModule(model_path=str(face), widen_factor=0.25, statistics_batches=1)
    _quiet_trainer(max_steps=4, limit_val_batches=0, precision="bf16-mixed").fit(module, datamodule(face))
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in module.parameters())
    fp32 = _quiet_trainer().validate(module, datamodule(face), verbose=False)[0]
    bf16 = _quiet_trainer(precision="bf16-mixed").validate(module, datamodule(face), verbose=False)[0]
    for name in ("val/nme", "val/yaw_error"):
        assert math.isfinite(bf16[name])
        assert abs(bf16[name] - fp32[name]) <= 0.05 * abs(fp32[name]) + 1e-3, (name, fp32[name], bf16[name])


def test_gan_encoder_trains_under_bf16_and_validates_like_fp32():
    """The ReStyle encoder against a frozen StyleGAN2 (modulated convs, upfirdn2d): the same check."""
    from datamodules.generator_samples import GeneratorSamplesDataModule
    from lightning_modules.gan_encoder import GANEncoderModule
    from tests.lightning_modules.test_gan_encoder import TINY

    L.seed_everything(0)
    module = GANEncoderModule(**TINY, optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))

    def data() -> GeneratorSamplesDataModule:
        return GeneratorSamplesDataModule(batch_size=4, train_batches=3, val_batches=2, truncation=0.7)

    _quiet_trainer(max_epochs=1, limit_val_batches=0, precision="bf16-mixed").fit(module, data())
    assert all(torch.isfinite(p).all() for p in module.parameters())
    fp32 = _quiet_trainer().validate(module, data(), verbose=False)[0]
    bf16 = _quiet_trainer(precision="bf16-mixed").validate(module, data(), verbose=False)[0]
    assert math.isfinite(bf16["val/l2"])
    assert abs(bf16["val/l2"] - fp32["val/l2"]) <= 0.05 * fp32["val/l2"], (fp32["val/l2"], bf16["val/l2"])
