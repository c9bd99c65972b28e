"""``{dataset}`` and ``{distiller}`` in config paths: one config serves several datasets and KD methods without their
runs mixing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import main
from cli.placeholders import PlaceholderError, dataset_name, fill

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PLANETOID = Path(__file__).resolve().parents[2] / ".." / "shared" / "assets" / "graphs" / "planetoid"


def test_dataset_name_from_either_data_layout_and_filling():
    assert dataset_name({"init_args": {"name": "CiteSeer", "root": "data"}}) == "CiteSeer"
    assert dataset_name({"init_args": {"dataset": "torch_geometric.datasets.Amazon",
                                       "dataset_args": {"name": "Computers"}}}) == "Computers"
    assert dataset_name({"init_args": {"root": "data"}}) is None
    assert fill("checkpoint.dirpath", "checkpoints/{dataset}/t", {"dataset": "PubMed"}) == "checkpoints/PubMed/t"
    assert fill("checkpoint.dirpath", "checkpoints/t", {"dataset": None}) == "checkpoints/t"
    with pytest.raises(PlaceholderError, match="checkpoint.dirpath is 'c/{dataset}' but the data section"):
        fill("checkpoint.dirpath", "c/{dataset}", {"dataset": None})


@pytest.mark.skipif(not any(PLANETOID.glob("ind.citeseer.*")), reason="needs ../shared/assets/graphs/planetoid")
def test_cora_configs_run_on_citeseer_into_citeseer_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("Cora", "CiteSeer"):
        raw = tmp_path / "data" / "planetoid" / name / "raw"
        raw.mkdir(parents=True)
        for file in PLANETOID.glob(f"ind.{name.lower()}.*"):
            shutil.copy(file, raw)
    monkeypatch.chdir(tmp_path)
    quick = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    main.main(["fit", "--config", str(CONFIGS / "cora_teacher.yaml"), *quick])
    main.main(["fit", "--config", str(CONFIGS / "cora_teacher.yaml"), "--data.init_args.name", "CiteSeer", *quick])
    assert (tmp_path / "checkpoints" / "Cora" / "gcn_teacher" / "version_0" / "best.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "CiteSeer" / "gcn_teacher" / "version_0" / "best.ckpt").is_file()
    assert (tmp_path / "logs" / "CiteSeer_gcn_teacher").is_dir()
    # the student of the same dataset finds its teacher (CiteSeer's 3703 features, not Cora's 1433)
    cli = main.main(["fit", "--config", str(CONFIGS / "cora_abkd.yaml"), "--data.init_args.name", "CiteSeer", *quick])
    assert cli.model.hparams.teacher_checkpoint.endswith("checkpoints/CiteSeer/gcn_teacher/version_0/best.ckpt")
    assert (tmp_path / "checkpoints" / "CiteSeer" / "gcn_abkd" / "version_0" / "best.ckpt").is_file()
