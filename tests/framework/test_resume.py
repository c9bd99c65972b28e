"""A ``main.py fit`` killed with SIGKILL mid-epoch and rerun with ``--ckpt_path last`` ends bit-exactly where an
uninterrupted run with the same seed ends: same final metrics, weights, optimiser state and generator states
(CPU, one thread: tolerance zero).

Each case: (1) ``main.py fit`` starts as a subprocess with a test callback that, in epoch ``KILL_EPOCH``,
writes a marker after a backward pass and waits; the test checks that ``last.ckpt`` holds epoch
``KILL_EPOCH - 1`` and SIGKILLs the process. (2) Meanwhile the uninterrupted run starts (a first submission:
no ``--ckpt_path``). (3) The killed run's folder is resumed with ``--ckpt_path last`` and the two are compared. The SLURM case does all three through
``scripts/slurm/single_node.sbatch`` (DDP, one CPU rank) with a stand-in ``srun``/``scontrol``. The negative
control resumes a copy of the killed checkpoint stripped of its RNG states: it warns and ends elsewhere, so
the comparison can fail (restoring the states later, in ``on_train_start``, fails it too: see
docs/slurm_and_resume.md).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

import main
from callbacks.rng_state import RNG_STATES_KEY
from datamodules.ogb import SyntheticMAGDataModule
from tests.graph_fixtures import TINY_MAG, require_neighbor_sampler

REPO_ROOT = Path(__file__).resolve().parents[2]
SINGLE_NODE = REPO_ROOT / "scripts" / "slurm" / "single_node.sbatch"
MAX_EPOCHS = 5
KILL_EPOCH = 3  # killed inside this epoch (0-based); last.ckpt then holds the end of epoch KILL_EPOCH - 1
RUN = "version_0"  # the checkpoint policy's folder of every run here (resumed runs continue it)
TEACHER = {"class_path": "lightning_modules.node_classifier.NodeClassifier",
           "init_args": {"arch": "rgcn", "hidden_channels": 16, "num_layers": 2, "dropout": 0.5,
                         "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01, "weight_decay": 5e-4}}}}


class PauseMidEpoch(L.Callback):
    """Test double for the run that gets killed: in epoch ``epoch``, once ``steps`` backward passes are done
    (dropout drawn, the optimiser step not yet taken), writes ``marker`` and waits for the SIGKILL."""

    def __init__(self, marker: str, epoch: int, steps: int = 1) -> None:
        self.marker, self.epoch, self.steps = Path(marker), epoch, steps
        self._done = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._done = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self._done += 1
        if trainer.current_epoch == self.epoch and self._done == self.steps:
            self.marker.write_text(str(os.getpid()))
            time.sleep(3600)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The tiny MAG written once, so that concurrent runs only read it."""
    root = tmp_path_factory.mktemp("resume_data")
    SyntheticMAGDataModule(synthetic=TINY_MAG, root=str(root)).prepare_data()
    return root


def write_config(path: Path, model: dict, data_root: Path, ckpt_dir: Path, batch_size: int | None,
                 extra_callbacks: tuple[dict, ...] | list[dict] = ()) -> str:
    """A run on the tiny MAG checkpointing into ``ckpt_dir/version_0``; full batch when ``batch_size`` is None."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": MAX_EPOCHS, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
            "default_root_dir": str(ckpt_dir), "callbacks": list(extra_callbacks),
        },
        # main.py's checkpoint policy, as configs/*.yaml: best.ckpt by val/acc, last.ckpt at every epoch end (a link
        # to best.ckpt when they coincide), in ckpt_dir/version_0 (the runs here resume with --ckpt_path last)
        "checkpoint": {"dirpath": str(ckpt_dir)},
        "model": model,
        "data": {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
                 "init_args": {"root": str(data_root), "hetero": True, "synthetic": dict(TINY_MAG.__dict__),
                               "batch_size": batch_size, "num_neighbors": [4, 3]}},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def pausing_config(tmp_path: Path, model: dict, data_root: Path, batch_size: int | None, steps: int):
    """Config of the run to kill: it pauses after ``steps`` backward passes of epoch ``KILL_EPOCH``."""
    ckpt_dir, marker = tmp_path / "killed", tmp_path / "paused.marker"
    pause = {"class_path": "tests.framework.test_resume.PauseMidEpoch",
             "init_args": {"marker": str(marker), "epoch": KILL_EPOCH, "steps": steps}}
    return write_config(tmp_path / "killed.yaml", model, data_root, ckpt_dir, batch_size, [pause]), marker, ckpt_dir


def launch(config: str, log: Path, extra: tuple[str, ...] = (), slurm_env: dict[str, str] | None = None,
           job_dir: Path | None = None) -> subprocess.Popen:
    """``main.py fit --config config *extra`` in a subprocess and process group of its own, stderr to ``log``;
    with ``slurm_env`` through the single-node template (run by bash as sbatch would, on CPU, its
    ``default_root_dir`` at ``job_dir``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread, like this process
    command = [sys.executable, "main.py", "fit", "--config", config, *extra]
    if slurm_env is not None:
        env.update(slurm_env, CONFIG=config, MASTER_PORT=str(free_port()))
        command = ["bash", str(SINGLE_NODE), "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(job_dir),
                   *extra]
    with log.open("w") as stderr:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(path: Path, process: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    """Polls until ``path`` exists, failing early with the run's stderr if it ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before it was killed:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the run did not write {path} in time"
        time.sleep(0.2)


def kill_when_paused(process: subprocess.Popen, log: Path, marker: Path, ckpt_dir: Path, ranks: int = 1,
                     before_kill: Callable[[int], None] | None = None) -> None:
    """Waits for the pause, checks the epoch counter in ``last.ckpt``, runs ``before_kill(pid)``, then SIGKILLs
    the run's process group (every rank, and bash above them); the folder is copied to ``as_killed``."""
    try:
        wait_for(marker, process, log)
        checkpoint = torch.load(ckpt_dir / RUN / "last.ckpt", map_location="cpu", weights_only=True)
        assert checkpoint["epoch"] == KILL_EPOCH - 1 and len(checkpoint[RNG_STATES_KEY]) == ranks
        if before_kill is not None:
            before_kill(int(marker.read_text()))
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    shutil.copytree(ckpt_dir, ckpt_dir.parent / "as_killed", symlinks=True)  # last.ckpt may be a link to best.ckpt


def fit(config: str, resume: bool = True) -> tuple[dict, dict]:
    """``main.py fit`` (``--ckpt_path last`` when ``resume``) in this process; returns the final metrics and weights."""
    cli = main.main(["fit", "--config", config, *(["--ckpt_path", "last"] if resume else [])])
    return cli.trainer.callback_metrics, cli.model.state_dict()


def assert_equal_trees(expected: Any, actual: Any, where: str = "") -> None:
    """Nested dicts/lists/tuples of tensors and plain values, equal bit for bit."""
    if isinstance(expected, dict):
        assert expected.keys() == actual.keys(), where
        for key in expected:
            assert_equal_trees(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for index, (left, right) in enumerate(zip(expected, actual)):
            assert_equal_trees(left, right, f"{where}/{index}")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(expected, actual), (where, expected, actual)
    else:
        assert expected == actual, (where, expected, actual)


def assert_same_final_checkpoint(expected: Path, actual: Path) -> None:
    """Two runs' ``last.ckpt``: same weights, optimiser, epoch, step, generators and best val/acc."""
    expected, actual = (torch.load(path / RUN / "last.ckpt", map_location="cpu", weights_only=True) for path in (expected, actual))
    assert expected["epoch"] == MAX_EPOCHS - 1
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "epoch", "global_step", RNG_STATES_KEY):
        assert_equal_trees(expected[key], actual[key], key)
    (best_state,) = (state for name, state in expected["callbacks"].items() if "'monitor': 'val/acc'" in name)
    (resumed_best_state,) = (state for name, state in actual["callbacks"].items() if "'monitor': 'val/acc'" in name)
    assert_equal_trees(best_state["best_model_score"], resumed_best_state["best_model_score"], "best_model_score")


def kill_resume_and_compare(tmp_path: Path, model: dict, data_root: Path, batch_size: int | None,
                            steps: int = 1) -> tuple[dict, dict]:
    """Runs one case (killed run in a subprocess, the others here); returns the uninterrupted (metrics, weights)."""
    config, marker, killed_dir = pausing_config(tmp_path, model, data_root, batch_size, steps)
    log = tmp_path / "killed.log"
    process = launch(config, log)
    try:  # the uninterrupted run overlaps with the subprocess's start-up
        uninterrupted = fit(write_config(tmp_path / "whole.yaml", model, data_root, tmp_path / "whole", batch_size),
                            resume=False)
    finally:
        kill_when_paused(process, log, marker, killed_dir)
    resumed = fit(write_config(tmp_path / "resume.yaml", model, data_root, killed_dir, batch_size))
    assert_equal_trees(uninterrupted, resumed)
    assert "val/acc" in resumed[0]
    assert_same_final_checkpoint(tmp_path / "whole", killed_dir)
    return uninterrupted


def fake_slurm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """srun's variables for a 1-node x 1-task job, and a PATH whose ``srun`` runs the task and whose
    ``scontrol`` appends its arguments to the returned log."""
    bin_dir, requeue_log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {requeue_log}\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    variables = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(REPO_ROOT), "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "gnn-face-kd", "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1", "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1", "SLURM_CPUS_PER_TASK": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1",
    }
    return variables, requeue_log


def test_slurm_job_signalled_killed_and_requeued_ends_like_an_uninterrupted_job(tmp_path, data_root):
    """Through the single-node template (DDP strategy, one CPU rank), full batch.

    SIGUSR1 mid-epoch makes Lightning write ``hpc_ckpt_1.ckpt`` to ``default_root_dir`` and call ``scontrol
    requeue <job>``; after the SIGKILL the requeued job (``SLURM_RESTART_COUNT`` set) resumes with ``--ckpt_path
    last``, which takes ``last.ckpt`` (the last epoch end), and ends like a job that ran whole (also started by the template: DDP reseeds at set-up, so
    a single-device run would not be comparable).
    """
    slurm_env, requeue_log = fake_slurm(tmp_path)
    whole_log, killed_log, requeued_log = (tmp_path / f"{name}.log" for name in ("whole", "killed", "requeued"))
    whole = launch(write_config(tmp_path / "whole.yaml", TEACHER, data_root, tmp_path / "whole", None), whole_log,
                   slurm_env=slurm_env, job_dir=tmp_path / "whole_job")
    config, marker, killed_dir = pausing_config(tmp_path, TEACHER, data_root, None, steps=1)
    killed = launch(config, killed_log, slurm_env=slurm_env, job_dir=tmp_path / "job")

    def time_limit_signal(pid: int) -> None:
        os.kill(pid, signal.SIGUSR1)
        wait_for(requeue_log, killed, killed_log)
        assert requeue_log.read_text().split() == ["requeue", "4242"]
        hpc = torch.load(tmp_path / "job" / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
        assert hpc["epoch"] == KILL_EPOCH and len(hpc[RNG_STATES_KEY]) == 1  # taken mid-epoch

    try:
        kill_when_paused(killed, killed_log, marker, killed_dir, before_kill=time_limit_signal)
    finally:
        whole_code = whole.wait(timeout=600)
    assert whole_code == 0, whole_log.read_text()[-3000:]
    assert "Restoring states" not in whole_log.read_text()  # a first submission starts fresh

    requeued = launch(write_config(tmp_path / "resume.yaml", TEACHER, data_root, killed_dir, None), requeued_log,
                      slurm_env={**slurm_env, "SLURM_RESTART_COUNT": "1"}, job_dir=tmp_path / "job")
    assert requeued.wait(timeout=600) == 0, requeued_log.read_text()[-3000:]
    assert f"Restoring states from the checkpoint path at {killed_dir / RUN / 'last.ckpt'}" in requeued_log.read_text()
    assert_same_final_checkpoint(tmp_path / "whole", killed_dir)


def test_neighbor_loader_resume_is_exact_and_needs_the_rng_states(tmp_path, data_root):
    require_neighbor_sampler()
    uninterrupted = kill_resume_and_compare(tmp_path, TEACHER, data_root, batch_size=48, steps=2)

    as_killed = tmp_path / "as_killed"
    checkpoint = torch.load(as_killed / RUN / "last.ckpt", map_location="cpu", weights_only=True)
    del checkpoint[RNG_STATES_KEY]
    (as_killed / RUN / "last.ckpt").unlink()  # it may be a link: writing through it would change best.ckpt
    torch.save(checkpoint, as_killed / RUN / "last.ckpt")
    with pytest.warns(UserWarning, match="without restoring the random generators"):
        _, control_weights = fit(write_config(tmp_path / "control.yaml", TEACHER, data_root, as_killed, 48))
    assert any(not torch.equal(value, control_weights[name]) for name, value in uninterrupted[1].items())


def test_full_batch_abkd_student_resume_is_exact(tmp_path, data_root):
    teacher_config = write_config(tmp_path / "teacher.yaml", TEACHER, data_root, tmp_path / "teacher", None)
    main.main(["fit", "--config", teacher_config, "--trainer.max_epochs", "2"])
    student = {"class_path": "lightning_modules.distillation.DistillationModule",
               "init_args": {"teacher_checkpoint": str(tmp_path / "teacher" / RUN / "best.ckpt"), "arch": "rgcn",
                             "hidden_channels": 8, "num_layers": 2, "dropout": 0.5,
                             "distiller": {"class_path": "graphkd.distill.ABKD"}}}
    kill_resume_and_compare(tmp_path, student, data_root, None)
    resumed_from = torch.load(tmp_path / "as_killed" / RUN / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(key.startswith("teacher.") for key in resumed_from["state_dict"])  # the teacher is referenced
    assert resumed_from["teacher_reference"]["path"] == str(tmp_path / "teacher" / RUN / "best.ckpt")


@pytest.mark.slow
def test_two_rank_ddp_resume_is_exact_with_per_rank_states(tmp_path, data_root):
    """Two CPU ranks (gloo), NeighborLoader on each rank's share of the seeds: each rank draws its own neighbours, so
    the ranks' generators part ways and each must get its own back. All runs are subprocesses (~2 min)."""
    ddp = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    whole_log, killed_log, resumed_log = (tmp_path / f"{name}.log" for name in ("whole", "killed", "resumed"))
    whole = launch(write_config(tmp_path / "whole.yaml", TEACHER, data_root, tmp_path / "whole", 24), whole_log, ddp)
    config, marker, killed_dir = pausing_config(tmp_path, TEACHER, data_root, 24, steps=2)
    killed = launch(config, killed_log, ddp)
    try:
        kill_when_paused(killed, killed_log, marker, killed_dir, ranks=2)
    finally:
        whole_code = whole.wait(timeout=600)
    assert whole_code == 0, whole_log.read_text()[-3000:]
    states = torch.load(tmp_path / "as_killed" / RUN / "last.ckpt", map_location="cpu", weights_only=True)[RNG_STATES_KEY]
    assert not torch.equal(states[0]["torch"], states[1]["torch"])

    resumed = launch(write_config(tmp_path / "resume.yaml", TEACHER, data_root, killed_dir, 24), resumed_log,
                     (*ddp, "--ckpt_path", "last"))
    assert resumed.wait(timeout=600) == 0, resumed_log.read_text()[-3000:]
    assert_same_final_checkpoint(tmp_path / "whole", killed_dir)
