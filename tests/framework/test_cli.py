"""The whole ABKD workflow through ``main.py``: fit teacher -> fit student -> test -> predict."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

import main
from callbacks.rng_state import RNG_STATES_KEY
from tests.graph_fixtures import TINY_MAG

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAINED = [path for path in sorted(CONFIGS.glob("*.yaml"))
           if {"max_epochs", "max_steps"} & set((yaml.safe_load(path.read_text()).get("trainer") or {}))]


def write_config(path, model: dict, root, log_dir, extra_callbacks=()):
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 3, "enable_progress_bar": False, "log_every_n_steps": 1, "default_root_dir": str(log_dir),
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(log_dir), "name": "run"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(log_dir / "ckpt"), "filename": "best", "monitor": "val/acc",
                                         "mode": "max", "enable_version_counter": False}}, *extra_callbacks],
        },
        "model": model,
        "data": {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
                 "init_args": {"root": str(root), "hetero": True, "synthetic": dict(TINY_MAG.__dict__)}},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_teacher_student_test_predict_round_trip(tmp_path):
    data_root = tmp_path / "data"
    teacher_cfg = write_config(tmp_path / "teacher.yaml", {
        "class_path": "lightning_modules.node_classifier.NodeClassifier",
        "init_args": {"arch": "rgcn", "hidden_channels": 32, "num_layers": 3}}, data_root, tmp_path / "teacher")
    main.main(["fit", "--config", teacher_cfg])
    teacher_ckpt = tmp_path / "teacher" / "ckpt" / "best.ckpt"
    assert teacher_ckpt.is_file()
    assert RNG_STATES_KEY in torch.load(teacher_ckpt, weights_only=True)  # main.py adds RNGStateCheckpoint to every run
    assert (tmp_path / "teacher" / "run" / "version_0" / "config.yaml").is_file()  # config saved beside the logs

    student_model = {"class_path": "lightning_modules.distillation.DistillationModule",
                     "init_args": {"teacher_checkpoint": str(teacher_ckpt), "arch": "rgcn", "hidden_channels": 8,
                                   "num_layers": 2, "distiller": {"class_path": "graphkd.distill.ABKD"}}}
    student_cfg = write_config(tmp_path / "student.yaml", student_model, data_root, tmp_path / "student",
                               [{"class_path": "callbacks.attention_heatmap.AttentionHeatmap"}])
    fit = main.main(["fit", "--config", student_cfg])
    logged = fit.trainer.callback_metrics
    assert logged["params/compression_ratio"] > 1.0
    for term in ("train/loss_ce", "train/loss_kd_logit", "train/loss_kd_align", "val/acc", "test/acc"):
        assert term in logged, term
    heatmaps = sorted((tmp_path / "student" / "run" / "version_0" / "attention").glob("epoch_*.png"))
    assert len(heatmaps) == 3

    student_ckpt = tmp_path / "student" / "ckpt" / "best.ckpt"
    test = main.main(["test", "--config", student_cfg, "--ckpt_path", str(student_ckpt)])
    assert 0.0 <= test.trainer.callback_metrics["test/acc"] <= 1.0

    predictions = tmp_path / "predictions.csv"
    main.main(["predict", "--config", student_cfg, "--ckpt_path", str(student_ckpt), "--trainer.callbacks+",
               "callbacks.node_predictions.NodePredictionWriter", "--trainer.callbacks.output_file", str(predictions)])
    rows = list(csv.DictReader(predictions.open()))
    assert [int(r["node_id"]) for r in rows] == list(range(TINY_MAG.num_papers))
    assert {int(r["prediction"]) for r in rows} <= set(range(TINY_MAG.num_classes))


def test_print_config_lists_linked_model(capsys, tmp_path):
    cfg = write_config(tmp_path / "t.yaml", {"class_path": "lightning_modules.node_classifier.NodeClassifier"},
                       tmp_path / "data", tmp_path)
    with pytest.raises(SystemExit):
        main.main(["fit", "--config", cfg, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "lightning_modules.node_classifier.NodeClassifier"
    assert printed["model"]["init_args"]["arch"] == "gcn"


@pytest.mark.parametrize("config", TRAINED, ids=lambda path: path.name)
def test_training_configs_write_best_and_a_last_checkpoint_every_epoch(config):
    """``--ckpt_path last`` (the SLURM templates) needs ``last.ckpt`` from every epoch end. Lightning 2.6's
    ``save_last: true`` only rewrites it when the monitored score improves, so a second, unmonitored
    ModelCheckpoint named ``last`` keeps it; the monitored one comes first (``ckpt_path="best"`` uses it)."""
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    checkpoints = [c.get("init_args", {}) for c in callbacks if c["class_path"].endswith(".ModelCheckpoint")]
    best, *others = checkpoints
    assert best["filename"] == "best" and best["monitor"]
    assert [c["filename"] for c in others if c.get("monitor") is None] == ["last"]
    assert {c["dirpath"] for c in checkpoints} == {best["dirpath"]} and not any(c.get("save_last") for c in checkpoints)


def test_face_regressor_config_runs_through_main(shared_assets, tmp_path):
    sfm = str(shared_assets / "sfm" / "sfm_3448.npz")
    cli = main.main(["fit", "--config", "configs/face_regressor_sfm.yaml", "--trainer.fast_dev_run", "true",
               "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", "--trainer.callbacks", "[]",
               "--model.init_args.model_path", sfm, "--data.init_args.model_path", sfm,
               "--data.init_args.batch_size", "4", "--model.init_args.statistics_batches", "2"])
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/yaw_error"])
