"""Bad input through ``python main.py``: exit code 2, one ``error:`` line naming the problem, no traceback.

Each case is a real subprocess (the shell's view of the CLI); the inputs fail before any training, so each
costs about one interpreter start-up. ``--debug`` brings the traceback back.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.datamodules.test_planetoid import copy_planetoid
from tests.graph_fixtures import TINY_MAG

REPO = Path(__file__).resolve().parents[2]


def run_main(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python main.py ARGS`` run in ``cwd``, output captured (without a debug flag from the environment)."""
    environment = {**{k: v for k, v in os.environ.items() if k != "GNNFACE_DEBUG"}, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


def assert_one_error_line(done: subprocess.CompletedProcess, *named: str) -> str:
    """Exit code 2, no traceback, exactly one ``error:`` line on stderr that contains every ``named`` text."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    for text in named:
        assert text in errors[0], errors[0]
    return errors[0]


def tiny_mag_config(tmp_path: Path, teacher_checkpoint: str, **model_args) -> str:
    """A student config on the tiny generated MAG graph distilling from ``teacher_checkpoint``."""
    config = {"trainer": {"logger": False, "enable_progress_bar": False, "default_root_dir": str(tmp_path)},
              "model": {"class_path": "lightning_modules.distillation.DistillationModule",
                        "init_args": {"teacher_checkpoint": teacher_checkpoint, "arch": "rgcn", **model_args}},
              "data": {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
                       "init_args": {"root": str(tmp_path / "data"), "hetero": True,
                                     "synthetic": dict(TINY_MAG.__dict__)}}}
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_unknown_dataset_name_lists_the_valid_ones():
    done = run_main("fit", "--config", "configs/cora_teacher.yaml", "--data.init_args.name", "Corra")
    assert_one_error_line(done, "'Corra'", "Cora", "CiteSeer", "PubMed")


def test_unknown_class_path_is_named_with_the_available_classes():
    done = run_main("fit", "--config", "configs/cora_teacher.yaml", "--model", "lightning_modules.nope.Nope")
    assert_one_error_line(done, "lightning_modules.nope.Nope", "lightning_modules.node_classifier.NodeClassifier")


def test_key_typo_in_a_yaml_suggests_the_nearest_key(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "cora_teacher.yaml").read_text())
    init_args = config["model"]["init_args"]
    init_args["hiden_channels"] = init_args.pop("hidden_channels")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(config))
    done = run_main("fit", "--config", str(tmp_path / "typo.yaml"))
    assert_one_error_line(done, "hiden_channels", "did you mean hidden_channels?")


def test_wrong_type_names_the_option_and_the_value():
    done = run_main("fit", "--config", "configs/cora_teacher.yaml", "--trainer.max_epochs", "ten")
    assert_one_error_line(done, "trainer.max_epochs", "int", "'ten'")


def test_out_of_range_option_is_refused_before_any_work(shared_assets, tmp_path):
    copy_planetoid(shared_assets, tmp_path / "data", "Cora")
    done = run_main("fit", "--config", "configs/cora_teacher.yaml", "--model.init_args.dropout", "1.5",
                    "--data.init_args.root", str(tmp_path / "data"), "--checkpoint.dirpath", str(tmp_path / "ckpt"),
                    "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"))
    assert_one_error_line(done, "dropout must be in [0, 1)", "1.5")
    assert not (tmp_path / "logs").exists() and not (tmp_path / "ckpt").exists()  # refused before anything is written


def test_missing_data_folder_says_which_files_to_copy(tmp_path):
    done = run_main("fit", "--config", "configs/cora_teacher.yaml", "--data.init_args.root", str(tmp_path / "none"),
                    "--trainer.fast_dev_run", "true", "--trainer.logger", "false", "--checkpoint.dirpath", str(tmp_path))
    assert_one_error_line(done, "Cora", "ind.cora")


def test_missing_teacher_checkpoint_names_the_path_and_the_teacher_config(tmp_path):
    missing = run_main("fit", "--config", "configs/abkd_demo.yaml", "--model.init_args.teacher_checkpoint",
                       str(tmp_path / "nothing.ckpt"))
    assert_one_error_line(missing, "teacher_checkpoint", "nothing.ckpt", "does not exist")
    (tmp_path / "checkpoints" / "abkd_demo_teacher").mkdir(parents=True)
    empty = run_main("fit", "--config", str(REPO / "configs" / "abkd_demo.yaml"), cwd=tmp_path)
    assert_one_error_line(empty, "checkpoints/abkd_demo_teacher", "configs/abkd_demo_teacher.yaml")


@pytest.mark.parametrize("content, named", [
    (b"not a checkpoint", ("corrupt.ckpt", "as a Lightning checkpoint: it is a text file")),
    ({"state_dict": {}, "hyper_parameters": {"arch": "rgcn", "num_features": 999, "num_classes": 3,
                                              "graph_info": {"dataset": "elsewhere", "hetero": True}}},
     ("corrupt.ckpt", "999 features")),
], ids=["corrupt", "mismatched"])
def test_corrupt_or_mismatched_teacher_checkpoint(tmp_path, content, named):
    checkpoint = tmp_path / "corrupt.ckpt"
    checkpoint.write_bytes(content) if isinstance(content, bytes) else torch.save(content, checkpoint)
    assert_one_error_line(run_main("fit", "--config", tiny_mag_config(tmp_path, str(checkpoint))), *named)


def test_missing_asset_folder_for_predict(tmp_path):
    done = run_main("predict", "--config", "configs/gantex_demo.yaml", "--model.init_args.assets",
                    str(tmp_path / "no_assets"), "--trainer.logger", "false")
    assert_one_error_line(done, "no_assets")


@pytest.mark.parametrize("photos", [["broken.jpg"], ["broken.jpg", "sub/torn.png"]])
def test_unreadable_image(shared_assets, tmp_path, photos):
    """When every photo is unreadable the run is an error naming them (one unreadable photo among good ones is
    skipped instead: tests/lightning_modules/test_gantex.py)."""
    for photo in photos:
        (tmp_path / "photos" / photo).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / photo).write_bytes(b"\xff\xd8 not really a jpeg")
    path = tmp_path / "photos" / photos[0] if len(photos) == 1 else tmp_path / "photos"
    done = run_main("predict", "--config", "configs/gantex_demo.yaml", "--model.init_args.assets",
                    str(shared_assets), "--data.init_args.path", str(path),
                    "--trainer.logger", "false", "--trainer.callbacks.output_dir", str(tmp_path / "out"))
    assert_one_error_line(done, f"none of the {len(photos)} photo(s) could be read",
                          *(Path(photo).name for photo in photos))
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback():
    done = run_main("fit", "--config", "configs/cora_teacher.yaml", "--data.init_args.name", "Corra", "--debug")
    assert done.returncode != 0 and "Traceback" in done.stderr and "Corra" in done.stderr


@pytest.mark.parametrize("args, named", [
    (["--chekpoint.dirpath", "x"], ("--chekpoint.dirpath", "did you mean checkpoint.dirpath?")),
    (["--data.init_args.nme", "Cora"], ("'nme'", "did you mean name?")),
    (["--data", "datamodules.nope.X"], ("datamodules.nope.X", "datamodules.planetoid.PlanetoidDataModule")),
    (["--checkpoint.mode", "maximum"], ("checkpoint.mode", "maximum")),
], ids=["top-level typo", "init_args typo", "data class_path", "literal"])
def test_parse_errors_in_process_are_one_line_usage_errors(args, named):
    """The same messages through ``main.main`` (what a notebook or a script calling it sees)."""
    import main

    with pytest.raises(main.UsageError) as raised:
        main.main(["fit", "--config", str(REPO / "configs" / "cora_teacher.yaml"), *args])
    assert "\n" not in str(raised.value)
    for text in named:
        assert text in str(raised.value)


def test_output_folder_that_is_a_file_is_refused_before_any_work(tmp_path):
    import main

    (tmp_path / "taken").write_text("a file")
    with pytest.raises(main.OutputPathError, match="is a file, not a folder"):
        main.main(["fit", "--config", str(REPO / "configs" / "cora_teacher.yaml"),
                   "--checkpoint.dirpath", str(tmp_path / "taken" / "checkpoints")])
