"""The whole ABKD workflow through ``main.py``: fit teacher -> fit student -> test -> predict."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

import main
from callbacks.best_and_last import BestAndLastCheckpoint
from callbacks.rng_state import RNG_STATES_KEY
from cli.checkpoint_policy import CheckpointPolicy
from sweep.grid import Experiment
from sweep.run import run_config
from tests.graph_fixtures import TINY_MAG

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAINED = [path for path in sorted(CONFIGS.glob("*.yaml"))
           if {"max_epochs", "max_steps"} & set(yaml.safe_load(path.read_text()).get("trainer") or {})]
EXPERIMENTS = sorted((CONFIGS.parent / "experiments").glob("*.yaml"))


def write_config(path, model: dict, root, log_dir, extra_callbacks=()):
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 3, "enable_progress_bar": False, "log_every_n_steps": 1, "default_root_dir": str(log_dir),
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(log_dir), "name": "run"}},
            "callbacks": list(extra_callbacks),
        },
        "checkpoint": {"dirpath": str(log_dir / "ckpt")},  # best.ckpt by val/acc + last.ckpt in ckpt/version_<N>
        "model": model,
        "data": {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
                 "init_args": {"root": str(root), "hetero": True, "synthetic": dict(TINY_MAG.__dict__)}},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_teacher_student_test_predict_round_trip(tmp_path, capsys):
    data_root = tmp_path / "data"
    teacher_cfg = write_config(tmp_path / "teacher.yaml", {
        "class_path": "lightning_modules.node_classifier.NodeClassifier",
        "init_args": {"arch": "rgcn", "hidden_channels": 32, "num_layers": 3}}, data_root, tmp_path / "teacher")
    main.main(["fit", "--config", teacher_cfg])
    teacher_ckpt = tmp_path / "teacher" / "ckpt" / "version_0" / "best.ckpt"
    assert teacher_ckpt.is_file() and (teacher_ckpt.parent / "last.ckpt").is_file()
    assert f"checkpoints in {teacher_ckpt.parent} (best.ckpt, last.ckpt)" in capsys.readouterr().err
    first_run = teacher_ckpt.read_bytes()
    main.main(["fit", "--config", teacher_cfg, "--trainer.max_epochs", "1"])  # a rerun gets a version of its own
    assert teacher_ckpt.read_bytes() == first_run
    assert (tmp_path / "teacher" / "ckpt" / "version_1" / "best.ckpt").is_file()
    teacher_ckpt.parent.parent.joinpath("version_1", "best.ckpt").unlink()  # the folder now means version_0
    assert RNG_STATES_KEY in torch.load(teacher_ckpt, weights_only=True)  # main.py adds RNGStateCheckpoint to every run
    assert (tmp_path / "teacher" / "run" / "version_0" / "config.yaml").is_file()  # config saved beside the logs

    student_model = {"class_path": "lightning_modules.distillation.DistillationModule",
                     "init_args": {"teacher_checkpoint": str(tmp_path / "teacher" / "ckpt"), "arch": "rgcn", "hidden_channels": 8,
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

    assert fit.model.hparams["teacher_checkpoint"] == str(teacher_ckpt)  # a checkpoint folder: its newest version's best.ckpt
    student_ckpt = tmp_path / "student" / "ckpt" / "version_0" / "best.ckpt"
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


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_every_config_parses(config, capsys):
    """``--print_config`` of every main.py config: its keys, types and class paths are valid."""
    subcommand = "predict" if "return_predictions" in config.read_text() else "fit"
    with pytest.raises(SystemExit) as done:
        main.main([subcommand, "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == yaml.safe_load(config.read_text())["model"]["class_path"]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda path: path.name)
def test_every_experiment_gives_configs_main_accepts(experiment, tmp_path, monkeypatch, capsys):
    """Every label of every axis is checked once: the cell's whole config passes ``main.py --print_config``."""
    monkeypatch.chdir(CONFIGS.parent)  # an experiment's paths are relative to the repository
    loaded = Experiment.load(experiment.relative_to(CONFIGS.parent))
    covering, seen = [], set()
    for cell in loaded.cells():
        if not set(cell.labels.items()) <= seen:
            covering.append(cell)
            seen |= set(cell.labels.items())
    for cell in covering:
        path = tmp_path / "cell.yaml"
        path.write_text(yaml.safe_dump(run_config(loaded, cell)))
        with pytest.raises(SystemExit) as done:
            main.main(["fit", "--config", str(path), "--print_config"])
        assert done.value.code in (0, None), cell.name
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["class_path"] == run_config(loaded, cell)["model"]["class_path"]


@pytest.mark.parametrize("config", TRAINED, ids=lambda path: path.name)
def test_training_configs_name_their_own_checkpoint_folder(config):
    """The policy lives in main.py: a config names its folder (one no other config writes) and no
    ModelCheckpoint of its own."""
    loaded = yaml.safe_load(config.read_text())
    assert not [c for c in loaded["trainer"].get("callbacks") or [] if c["class_path"].endswith(".ModelCheckpoint")]
    folders = {yaml.safe_load(other.read_text())["checkpoint"]["dirpath"] for other in TRAINED if other != config}
    assert loaded["checkpoint"]["dirpath"] not in folders


def test_checkpoint_policy_writes_best_and_a_last_checkpoint_every_epoch(tmp_path):
    """``--ckpt_path last`` (the SLURM templates) needs ``last.ckpt`` from every epoch end, ``ckpt_path="best"``
    the monitored ``best.ckpt``: one callback writes both, each epoch once (tests/framework/test_best_and_last.py)."""
    policy = CheckpointPolicy(dirpath=str(tmp_path), monitor="val/nme", mode="min")
    (tmp_path / "version_0").mkdir(), (tmp_path / "version_3").mkdir(), (tmp_path / "notes").mkdir()
    assert policy.run_folder(resume=False) == tmp_path / "version_4"
    assert policy.run_folder(resume=True) == tmp_path / "version_3"
    (callback,) = policy.callbacks(tmp_path / "version_4")
    assert isinstance(callback, BestAndLastCheckpoint) and callback.dirpath == str(tmp_path / "version_4")
    assert (callback.filename, callback.monitor, callback.mode, callback.save_top_k) == ("best", "val/nme", "min", 1)


def test_face_regressor_config_runs_through_main(shared_assets, tmp_path):
    sfm = str(shared_assets / "sfm" / "sfm_3448.npz")
    cli = main.main(["fit", "--config", "configs/face_regressor_sfm.yaml", "--trainer.fast_dev_run", "true",
               "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", "--trainer.callbacks", "[]",
               "--checkpoint.dirpath", str(tmp_path / "checkpoints"),
               "--model.init_args.model_path", sfm, "--data.init_args.model_path", sfm,
               "--data.init_args.batch_size", "4", "--model.init_args.statistics_batches", "2"])
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/yaw_error"])
