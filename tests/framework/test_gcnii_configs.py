"""The GCNII configs: GCNII's published settings parse, and the Cora teacher runs through ``main.py``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# chennnM/GCNII semi.sh: layers, hidden, lambda, dropout, weight decay of the GCNII layers (dense layers: 5e-4)
PUBLISHED = {"cora": (64, 64, 0.5, 0.6, 0.01), "citeseer": (32, 256, 0.6, 0.7, 0.01),
             "pubmed": (16, 256, 0.4, 0.5, 5e-4)}


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
def test_teacher_configs_parse_with_the_published_settings(dataset, capsys):
    with pytest.raises(SystemExit):
        main.main(["fit", "--config", str(CONFIGS / f"gcnii_{dataset}.yaml"), "--print_config"])
    model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    options = model["arch_options"]
    assert (model["num_layers"], model["hidden_channels"], options["lamda"], model["dropout"],
            options["conv_weight_decay"]) == PUBLISHED[dataset]
    adam = model["optimizer"]["init_args"]
    assert (model["arch"], options["alpha"], adam["lr"], adam["weight_decay"]) == ("gcnii", 0.1, 0.01, 5e-4)


def test_mlp_student_config_parses(capsys):
    with pytest.raises(SystemExit):
        main.main(["fit", "--config", str(CONFIGS / "gcnii_cora_abkd_mlp.yaml"), "--print_config"])
    model = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert (model["arch"], model["teacher_checkpoint"]) == ("mlp", "checkpoints/gcnii_cora")


def test_cora_teacher_config_runs_one_step_through_main(shared_assets, tmp_path):
    raw = tmp_path / "planetoid" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for file in (shared_assets / "graphs" / "planetoid").glob("ind.cora.*"):
        shutil.copy(file, raw)
    cli = main.main(["fit", "--config", str(CONFIGS / "gcnii_cora.yaml"), "--trainer.fast_dev_run", "true",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                     "--trainer.callbacks", "[]", "--data.init_args.root", str(tmp_path / "planetoid")])
    model = cli.model.model
    assert (len(model.convs), model.lins[0].in_features, model.lins[1].out_features) == (64, 1433, 7)
    assert [g["weight_decay"] for g in cli.trainer.optimizers[0].param_groups] == [0.01, 5e-4]
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
