"""What a user can feed ``main.py`` ends in one ``error:`` line, exit code 2 and nothing left behind, or does what it
says (issue 23): any ``--ckpt_path``, values a library refuses, option names in full, a swapped KD method, resumed
and evaluated runs' log folders, why a fit stopped, full disks.

Each case runs ``main.run`` (what ``python main.py`` runs, minus the interpreter start) in a folder of its own on a
tiny generated MAG graph; "nothing left behind" compares the folder's files before and after.
"""
from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import torch
import yaml

import main
from datamodules.ogb import SyntheticMAGDataModule
from tests.graph_fixtures import TINY_MAG
from tests.tmpfs import mounted_tmpfs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TEACHER = {"class_path": "lightning_modules.node_classifier.NodeClassifier",
           "init_args": {"arch": "rgcn", "hidden_channels": 16, "num_layers": 2,
                         "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}}}


def config(model: dict, **sections) -> dict:
    """A fit config on the tiny MAG graph under ``data/``, logging to ``logs/run``, checkpointing to ``checkpoints/run``."""
    trainer = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
               "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                          "init_args": {"save_dir": "logs", "name": "run"}}, **sections.pop("trainer", {})}
    return {"seed_everything": 0, "trainer": trainer, "checkpoint": {"dirpath": "checkpoints/run"}, "model": model,
            "data": {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
                     "init_args": {"root": "data", "hetero": True, "synthetic": dict(TINY_MAG.__dict__)}}, **sections}


def student(distiller: str = "graphkd.distill.ABKD", teacher: str = "teacher.ckpt") -> dict:
    return {"class_path": "lightning_modules.distillation.DistillationModule",
            "init_args": {"teacher_checkpoint": teacher, "arch": "rgcn", "hidden_channels": 8, "num_layers": 2,
                          "distiller": {"class_path": distiller}}}


def files(folder: Path) -> set[str]:
    """Every file and folder under ``folder`` but the shared data."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "data" not in p.relative_to(folder).parts[:1]}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """The tiny graph and a 1-epoch teacher checkpoint, made once."""
    root = tmp_path_factory.mktemp("cli_inputs")
    SyntheticMAGDataModule(synthetic=TINY_MAG, root=str(root / "data"), hetero=True).prepare_data()
    (root / "teacher.yaml").write_text(yaml.safe_dump(config(TEACHER, trainer={"logger": False})))
    previous = Path.cwd()
    os.chdir(root)
    try:
        main.main(["fit", "--config", "teacher.yaml"])
    finally:
        os.chdir(previous)
    return root


@pytest.fixture
def folder(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run folder (the working directory) holding the graph, the teacher checkpoint and ``teacher.yaml``."""
    (tmp_path / "data").symlink_to(shared / "data")
    (tmp_path / "teacher.ckpt").write_bytes((shared / "checkpoints" / "run" / "version_0" / "best.ckpt").read_bytes())
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(config(TEACHER)))
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(config(student())))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py"])
    monkeypatch.delenv("GNNFACE_DEBUG", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``main.run(args)``: its exit code and what it printed on stderr."""
    code = main.run(list(args))
    return code, capsys.readouterr().err


def assert_refused(capsys: pytest.CaptureFixture, folder: Path, args: list[str], *named: str) -> str:
    """Exit code 2, one ``error:`` line holding every ``named`` text, and no file added to ``folder``."""
    before = files(folder)
    code, err = run(capsys, *args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err[-3000:]
    for text in named:
        assert text in errors[0], errors[0]
    assert files(folder) == before, files(folder) - before
    return errors[0]


def truncated(path: Path) -> None:
    data = Path("teacher.ckpt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def gan_pt(path: Path) -> None:
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "latent_avg": torch.zeros(4)}, path)


def encoder_ckpt(path: Path) -> None:
    torch.save({"epoch": 3, "global_step": 30, "pytorch-lightning_version": "2.6.6",
                "state_dict": {"encoder.weight": torch.zeros(2)}, "optimizer_states": [],
                "hyper_parameters": {"_class_path": "lightning_modules.gan_encoder.GANEncoderModule"}}, path)


def weights_only(path: Path) -> None:
    checkpoint = torch.load("teacher.ckpt", weights_only=True)
    torch.save({key: checkpoint[key] for key in ("state_dict", "hyper_parameters", "pytorch-lightning_version",
                                                 "epoch", "global_step")}, path)


@pytest.mark.parametrize("subcommand, write, named", [
    ("test", lambda p: p.write_text("not a checkpoint\n"), ("given.ckpt", "it is a text file", "expected a checkpoint of NodeClassifier")),
    ("test", lambda p: p.write_bytes(b""), ("given.ckpt", "it is an empty file")),
    ("test", truncated, ("given.ckpt", "truncated")),
    ("test", gan_pt, ("given.ckpt", "holds a dictionary of g_ema, latent_avg, not a Lightning checkpoint")),
    ("test", encoder_ckpt, ("is a checkpoint of lightning_modules.gan_encoder.GANEncoderModule, but this run's model "
                            "is lightning_modules.node_classifier.NodeClassifier",)),
    ("fit", weights_only, ("holds weights only", "a fit cannot continue from it")),
], ids=["text", "empty", "truncated", "gan .pt", "another module's", "weights only (fit)"])
def test_a_ckpt_path_that_cannot_serve_the_run_is_one_line(capsys, folder, subcommand, write, named):
    write(folder / "given.ckpt")
    line = assert_refused(capsys, folder, [subcommand, "--config", "teacher.yaml", "--ckpt_path", "given.ckpt"], *named)
    assert "weights_only=False" not in line


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_a_teacher_given_as_the_students_checkpoint_is_refused(capsys, folder, subcommand):
    assert_refused(capsys, folder, [subcommand, "--config", "student.yaml", "--ckpt_path", "teacher.ckpt"],
                   f"{folder / 'teacher.ckpt'} is a checkpoint of lightning_modules.node_classifier.NodeClassifier",
                   "this run's model is lightning_modules.distillation.DistillationModule")


def test_a_checkpoint_of_another_shape_names_the_weights(capsys, folder):
    """A checkpoint without LightningCLI's class record (written by a plain Trainer) is checked by its weights."""
    checkpoint = torch.load("teacher.ckpt", weights_only=True)
    checkpoint["hyper_parameters"] = {"hidden_channels": 16}
    torch.save(checkpoint, folder / "given.ckpt")
    assert_refused(capsys, folder, ["test", "--config", "teacher.yaml", "--model.init_args.hidden_channels", "32",
                                    "--ckpt_path", "given.ckpt"],
                   "does not fit this run's NodeClassifier (other shapes:", "hidden_channels 16 there, 32 here")


def test_resuming_nothing_is_an_error_naming_where_it_looked(capsys, folder, monkeypatch):
    assert_refused(capsys, folder, ["fit", "--config", "teacher.yaml", "--ckpt_path", "last"],
                   f"--ckpt_path last: nothing to resume in {folder / 'checkpoints' / 'run'}",
                   "drop --ckpt_path last to start a new run")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued job stopped before its first epoch end starts over
    code, err = run(capsys, "fit", "--config", "teacher.yaml", "--ckpt_path", "last")
    assert code == 0 and "a requeued job stopped before its first epoch ended): starting the run" in err
    assert (folder / "checkpoints" / "run" / "version_0" / "last.ckpt").is_file()


@pytest.mark.parametrize("args, named", [
    (["--trainer.max_epoch", "5"], ("unknown option --trainer.max_epoch", "did you mean trainer.max_epochs?")),
    (["--model.init_args.optimizer.init_args.lr", "-0.01"],
     ("model.init_args.optimizer: torch.optim.Adam refuses its arguments: Invalid learning rate: -0.01",)),
    (["--model.init_args.optimizer.init_args.betas", "[0.9, 1.5]"], ("torch.optim.Adam", "beta parameter at index 1")),
    (["--trainer.max_epochs", "-5"], ("trainer: `max_epochs` must be a non-negative integer or -1", "-5")),
], ids=["option prefix", "negative lr", "betas", "negative max_epochs"])
def test_values_refused_before_any_folder(capsys, folder, args, named):
    assert_refused(capsys, folder, ["fit", "--config", "teacher.yaml", *args], *named)
    assert not (folder / "logs").exists() and not (folder / "checkpoints").exists()


def test_a_mistyped_distiller_is_blamed_on_the_distiller(capsys, folder):
    assert_refused(capsys, folder, ["fit", "--config", "student.yaml", "--model.init_args.distiller",
                                    "graphkd.distill.GCRDX"],
                   "model.init_args.distiller: 'graphkd.distill.GCRDX' does not import",
                   "did you mean graphkd.distill.GCRD?")


def test_a_swapped_distiller_gets_folders_of_its_own(capsys, folder):
    """Named with ``{distiller}``: filled in; named in full: the swapped method's name appended; not swapped: as named."""
    placed = config(student(), checkpoint={"dirpath": "checkpoints/s_{distiller}"})
    placed["trainer"]["logger"]["init_args"]["name"] = "s_{distiller}"
    (folder / "placed.yaml").write_text(yaml.safe_dump(placed))
    swap = ["--model.init_args.distiller", "graphkd.distill.LogitKD"]
    for args in (["--config", "placed.yaml", *swap], ["--config", "student.yaml", *swap], ["--config", "student.yaml"]):
        code, err = run(capsys, "fit", *args)
        assert code == 0, err[-2000:]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["run", "run_logitkd", "s_logitkd"]
    assert sorted(p.name for p in (folder / "logs").iterdir()) == ["run", "run_logitkd", "s_logitkd"]
    assert f"checkpoints in {folder / 'checkpoints' / 'run' / 'version_0'}" in err  # printed paths are absolute


def test_resume_continues_its_log_folder_and_test_logs_inside_it(capsys, folder):
    code, _ = run(capsys, "fit", "--config", "teacher.yaml")
    assert code == 0
    code, err = run(capsys, "fit", "--config", "teacher.yaml", "--ckpt_path", "last", "--trainer.max_epochs", "2")
    assert code == 0 and "fit stopped after 2 epochs (step 2): max_epochs=2 reached" in err
    run_logs = folder / "logs" / "run"
    assert sorted(p.name for p in run_logs.iterdir()) == ["version_0"]  # the resumed run's curves go on there
    assert len(list((run_logs / "version_0").glob("events.out.tfevents.*"))) == 2
    code, err = run(capsys, "test", "--config", "teacher.yaml", "--ckpt_path", "best")
    assert code == 0 and "Be aware that when using `ckpt_path`" not in err
    assert (run_logs / "version_0" / "test_0" / "config.yaml").is_file() and sorted(run_logs.iterdir()) == [run_logs / "version_0"]
    assert f"logs in {run_logs / 'version_0' / 'test_0'}" in err
    code, err = run(capsys, "fit", "--config", "teacher.yaml", "--ckpt_path", "last", "--trainer.max_epochs", "2")
    assert code == 0 and "max_epochs=2 reached before this run (it resumed a finished run: nothing was trained)" in err


def test_early_stopping_says_so(capsys, folder):
    code, err = run(capsys, "fit", "--config", "teacher.yaml", "--trainer.max_epochs", "10", "--trainer.callbacks+",
                    "lightning.pytorch.callbacks.EarlyStopping", "--trainer.callbacks.monitor", "val/acc",
                    "--trainer.callbacks.mode", "max", "--trainer.callbacks.patience", "1",
                    "--trainer.callbacks.min_delta", "1.0")
    assert code == 0, err[-2000:]
    assert "fit stopped after 2 epochs (step 2): early stopping: val/acc did not improve for 1 validation checks" in err


def test_a_missing_photo_leaves_no_log_folder(capsys, folder, shared_assets):
    assert_refused(capsys, folder, ["predict", "--config", str(CONFIGS / "gantex_demo.yaml"), "--model.init_args.assets",
                                    str(shared_assets), "--data.init_args.path", "no_such_photo.png"],
                   "no_such_photo.png", "does not exist")


def test_a_full_checkpoint_folder_is_one_line_and_leaves_no_partial_file(capsys, folder, monkeypatch):
    save = torch.save

    def half_then_full(checkpoint: dict, file: BinaryIO, *args: object, **kwargs: object) -> None:
        if not hasattr(file, "name"):  # the callback counting the checkpoint's size, not writing it
            return save(checkpoint, file, *args, **kwargs)
        file.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", half_then_full)
    before = files(folder)
    code, err = run(capsys, "fit", "--config", "teacher.yaml")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err[-3000:]
    assert f"no space left on the file system of {folder / 'checkpoints' / 'run' / 'version_0'} for checkpoint best.ckpt (" in errors[0]
    assert "needed" in errors[0] and "set checkpoint.dirpath to another folder" in errors[0]
    assert not [name for name in files(folder) - before if name.startswith("checkpoints")]  # no .part, no empty folder


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs at ``tmp_path/full``, nearly filled."""
    with mounted_tmpfs(tmp_path / "full", "64k") as mount:
        (mount / "filler").write_bytes(b"\0" * 56 * 1024)
        yield mount


@pytest.mark.parametrize("option", ["--checkpoint.dirpath", "--trainer.logger.init_args.save_dir"])
def test_a_real_full_file_system(capsys, folder, full_tmpfs, option):
    code, err = run(capsys, "fit", "--config", "teacher.yaml", option, str(full_tmpfs / "out"))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err[-3000:]
    assert f"no space left on the file system of {full_tmpfs / 'out'}" in errors[0] and "free" in errors[0]
    left = sorted((str(p.relative_to(full_tmpfs)), p.stat().st_size) for p in full_tmpfs.rglob("*"))
    assert left == [("filler", 56 * 1024)], left  # nothing left
