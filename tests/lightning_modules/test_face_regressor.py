"""The synthetic-face datamodule and the MobileNet regressor LightningModule, on a tiny face model."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules import synthetic_faces
from datamodules.synthetic_faces import SyntheticFacesDataModule
from facetex.face3d.camera import euler_to_rotation, pose_matrix, pose_to_euler, project
from facetex.face3d.drawing import draw_points, image_grid
from facetex.face3d.morphable_model import load_morphable_model
from lightning_modules.face_regressor import FaceRegressorModule


def write_tiny_face(path: Path, seed: int = 0, grid: int = 12) -> Path:
    """A face-sized cap with a nose (``grid`` x ``grid`` vertices), 4 shape and 2 expression modes, SFM layout."""
    generator = torch.Generator().manual_seed(seed)
    u, v = torch.meshgrid(torch.linspace(0, 1, grid), torch.linspace(0, 1, grid), indexing="xy")
    x, y = 140 * (u - 0.5), 180 * (v - 0.5)
    z = 60 * (1 - (x / 80) ** 2 - (y / 100) ** 2).clamp_min(0).sqrt() + 30 * torch.exp(-(x**2 + (y + 10) ** 2) / 450)
    mean = torch.stack([x, y, z - 60], -1).reshape(-1, 3)
    index = torch.arange(grid * grid).reshape(grid, grid)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    triangles = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    landmark_vertices = torch.linspace(0, grid * grid - 1, 68).round().long()
    np.savez(
        path,
        mean=mean.numpy().astype(np.float32),
        shape_basis=(3 * torch.randn(grid * grid, 3, 4, generator=generator)).numpy().astype(np.float32),
        shape_eigenvalues=np.ones(4, np.float32),
        expression_basis=(2 * torch.randn(grid * grid, 3, 2, generator=generator)).numpy().astype(np.float32),
        expression_names=np.array(["a", "b"]),
        triangles=triangles.numpy().astype(np.int64),
        uv=torch.stack([u, 1 - v], -1).reshape(-1, 2).numpy().astype(np.float32),  # v-down, as eos stores it
        ibug68_to_vertex=torch.stack([torch.arange(1, 69), landmark_vertices], 1).numpy().astype(np.int64),
    )
    return path


@pytest.fixture(scope="module")
def tiny_face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_face(tmp_path_factory.mktemp("face") / "tiny_face.npz")


def datamodule(path: Path, **overrides) -> SyntheticFacesDataModule:
    options = dict(model_path=str(path), model_format="sfm", image_size=64, batch_size=8, train_batches=4,
                   val_batches=2, seed=3)
    options.update(overrides)
    return SyntheticFacesDataModule(**options)


def test_load_morphable_model_rejects_unknown_format_and_missing_file(tiny_face: Path, tmp_path: Path) -> None:
    assert load_morphable_model(tiny_face).num_shape == 4
    with pytest.raises(ValueError, match="model_format"):
        load_morphable_model(tiny_face, "obj")
    with pytest.raises(FileNotFoundError):
        load_morphable_model(tmp_path / "absent.npz")


def test_streams_are_seeded_fresh_per_epoch_fixed_for_validation_and_disjoint_across_workers_and_ranks(
    tiny_face: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = datamodule(tiny_face)
    data.setup("fit")
    train = data.train_dataloader()
    first, second = [b.shape for b in train], [b.shape for b in train]
    assert len(first) == 4 and not torch.equal(torch.cat(first), torch.cat(second))  # new faces each epoch
    again = datamodule(tiny_face)
    again.setup("fit")
    torch.testing.assert_close(torch.cat([b.shape for b in again.train_dataloader()]), torch.cat(first))
    val = data.val_dataloader()
    torch.testing.assert_close(torch.cat([b.shape for b in val]), torch.cat([b.shape for b in val]))
    assert not torch.equal(torch.cat([b.shape for b in val]), torch.cat(first[:2]))

    with_workers = datamodule(tiny_face, num_workers=2)
    with_workers.setup("fit")
    shapes = torch.cat([b.shape for b in with_workers.train_dataloader()])
    assert shapes.shape[0] == 4 * 8 and torch.unique(shapes[:, 0]).numel() == 4 * 8  # no worker repeats another

    monkeypatch.setattr(synthetic_faces, "_distributed_rank", lambda: (1, 2))
    second_rank = datamodule(tiny_face)
    second_rank.setup("fit")
    assert not torch.equal(torch.cat([b.shape for b in second_rank.train_dataloader()]), torch.cat(first))


def test_targets_decode_to_the_rendered_landmarks(tiny_face: Path) -> None:
    data = datamodule(tiny_face)
    data.setup("fit")
    module = FaceRegressorModule(model_path=str(tiny_face), widen_factor=0.25)
    batch = next(iter(data.train_dataloader()))
    decoded = module.decode(module.target_vector(batch))
    torch.testing.assert_close(module.landmarks2d(decoded), batch.landmarks2d, rtol=0, atol=1e-3)
    torch.testing.assert_close(pose_to_euler(decoded.pose)[0], batch.yaw, rtol=0, atol=1e-3)


def test_pose_matrix_is_the_projection_of_camera_project() -> None:
    points = torch.randn(2, 5, 3)
    rotation = euler_to_rotation(torch.tensor([30.0, -70.0]), torch.tensor([10.0, 0.0]), torch.tensor([0.0, 5.0]))
    scale, translation = torch.tensor([1.5, 0.5]), torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    pose = pose_matrix(rotation, scale, translation)
    screen = points @ pose[:, :, :3].transpose(1, 2) + pose[:, None, :, 3]
    torch.testing.assert_close(screen, project(points, rotation, scale, translation))
    yaw, pitch, roll = pose_to_euler(pose)
    torch.testing.assert_close(torch.stack([yaw, pitch, roll]), torch.tensor([[30.0, -70.0], [10.0, 0.0], [0.0, 5.0]]),
                               rtol=0, atol=1e-3)


def test_drawn_points_and_grid_layout() -> None:
    images = torch.zeros(3, 3, 4, 5)
    drawn = draw_points(images, torch.tensor([[[0.5, 0.5], [4.9, 3.2], [9.0, 9.0]]]).expand(3, -1, -1), (1.0, 0.5, 0.0))
    assert drawn[:, 0].sum() == 3 * 2 and drawn[0, :, 3, 4].tolist() == [1.0, 0.5, 0.0]
    grid = image_grid(drawn, columns=2)
    assert grid.shape == (3, 8, 10) and grid[:, 4:, 5:].abs().sum() == 0  # fourth cell is blank
    torch.testing.assert_close(grid[:, 4:, :5], drawn[2])


def test_statistics_are_estimated_at_setup_and_travel_with_the_checkpoint(tiny_face: Path, tmp_path: Path) -> None:
    data = datamodule(tiny_face)
    module = FaceRegressorModule(model_path=str(tiny_face), widen_factor=0.25, statistics_batches=2)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    assert bool(module.statistics_ready)
    targets = torch.cat([module.target_vector(b) for b in data.statistics_batches(2)])
    torch.testing.assert_close(module.target_mean, targets.mean(0))
    assert module.target_std[11] == 1.0  # the pose's constant last entry stays unscaled
    path = tmp_path / "regressor.ckpt"
    trainer.save_checkpoint(path)
    restored = FaceRegressorModule.load_from_checkpoint(path)
    torch.testing.assert_close(restored.target_std, module.target_std)
    images = next(iter(data.val_dataloader())).images
    torch.testing.assert_close(restored.eval()(images), module.eval()(images))


def test_setup_rejects_a_datamodule_of_another_model(tiny_face: Path, tmp_path: Path) -> None:
    other = write_tiny_face(tmp_path / "other.npz", grid=10)
    module = FaceRegressorModule(model_path=str(tiny_face), widen_factor=0.25, statistics_batches=1)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="same model_path"):
        trainer.fit(module, datamodule=datamodule(other))


def test_validation_logs_a_landmark_grid_to_tensorboard(tiny_face: Path, tmp_path: Path) -> None:
    data = datamodule(tiny_face, val_batches=1)
    module = FaceRegressorModule(model_path=str(tiny_face), widen_factor=0.25, statistics_batches=1,
                                 num_logged_images=6)
    logger = TensorBoardLogger(tmp_path, name="regressor")
    trainer = L.Trainer(max_steps=1, limit_train_batches=1, log_every_n_steps=1, num_sanity_val_steps=0,
                        logger=logger, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert {"val/yaw_error", "val/nme", "train/loss"} <= set(events.Tags()["scalars"])
    image = events.Images("val/landmarks")[-1]
    assert (image.height, image.width) == (2 * 64, 4 * 64)  # 6 inputs on a 4-column grid


@pytest.mark.slow
def test_short_training_cuts_the_validation_yaw_error(tiny_face: Path, tmp_path: Path) -> None:
    L.seed_everything(0, workers=True)
    data = datamodule(tiny_face, batch_size=32, train_batches=30, val_batches=4)
    module = FaceRegressorModule(model_path=str(tiny_face), widen_factor=0.25, statistics_batches=4,
                                 optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-4))
    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                 enable_checkpointing=False, default_root_dir=tmp_path)
    evaluator = L.Trainer(**quiet)
    before = evaluator.validate(module, datamodule=data, verbose=False)[0]
    L.Trainer(max_epochs=10, limit_val_batches=0, **quiet).fit(module, datamodule=data)  # 300 steps
    after = evaluator.validate(module, datamodule=data, verbose=False)[0]
    # measured: yaw error 29.3 -> 10.8 degrees (0.37x), NME 0.67x
    assert before["val/yaw_error"] > 20.0
    assert after["val/yaw_error"] < 0.5 * before["val/yaw_error"]
    assert after["val/nme"] < 0.8 * before["val/nme"]


def test_default_optimizer_is_adamw_lr_1e_3_weight_decay_1e_4(tiny_face: Path) -> None:
    module = FaceRegressorModule(model_path=str(tiny_face), widen_factor=0.25)
    optimizer = module.optimizer(module.parameters())
    assert type(optimizer) is torch.optim.AdamW
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (1e-3, 1e-4)
