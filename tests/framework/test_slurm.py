"""Lightning sees the SLURM job that ``srun`` describes, and our templates ask for one process per GPU.

The templates' whole path (SIGUSR1 -> hpc checkpoint + ``scontrol requeue``, SIGKILL, exact resume from
``last.ckpt``) runs in tests/framework/test_resume.py with a stand-in ``srun``/``scontrol``.
"""
from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning_utilities.core.rank_zero import rank_zero_only

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "scripts" / "slurm").glob("*.sbatch"))


@pytest.fixture
def srun_rank_3_of_4(monkeypatch):
    """The variables srun sets for task 3 of a 2-node x 2-task job.

    A Trainer built here sets the process-wide rank used by ``rank_zero_only`` to 3; it is restored
    afterwards, or later tests in this process would stop writing their logs. Lightning also writes
    ``MASTER_ADDR``/``MASTER_PORT`` into the environment; they are removed afterwards, or later DDP
    subprocesses would wait forever for a master at gpu07.
    """
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # recorded, so the teardown restores the value from before the test
        monkeypatch.delenv(name)
    for name, value in {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "gnn-face-kd", "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2",
        "SLURM_NODELIST": "gpu[07-08]",
    }.items():
        monkeypatch.setenv(name, value)


def test_lightning_detects_ranks_and_master_from_srun_variables(srun_rank_3_of_4):
    assert SLURMEnvironment.detect()
    trainer = L.Trainer(accelerator="cpu", devices=2, num_nodes=2, strategy="ddp", logger=False)
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert (environment.global_rank(), environment.local_rank(), environment.node_rank()) == (3, 1, 1)
    assert environment.world_size() == 4 and environment.main_address == "gpu07"
    assert trainer.global_rank == 3 and trainer.world_size == 4


def test_lightning_refuses_devices_other_than_tasks_per_node(srun_rank_3_of_4):
    """Checked when ``fit`` launches, before any process group is set up."""
    trainer = L.Trainer(accelerator="cpu", devices=4, num_nodes=2, strategy="ddp", logger=False)
    with pytest.raises(ValueError, match="ntasks-per-node=2"):
        trainer.fit(BoringModel())


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_run_one_task_per_gpu_and_resume(template):
    text = template.read_text()
    tasks = re.search(r"^#SBATCH --ntasks-per-node=(\d+)$", text, re.MULTILINE).group(1)
    gpus = re.search(r"^#SBATCH --gpus-per-node=(\d+)$", text, re.MULTILINE).group(1)
    assert tasks == gpus
    for directive in ("--signal=SIGUSR1@", "--requeue", "--open-mode=append"):  # warned before the limit; one log
        assert f"#SBATCH {directive}" in text, directive
    assert "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK" in text  # srun of SLURM 22.05+ may not inherit it
    command = re.search(r"^srun .*main\.py fit(.*\\\n)*.*$", text, re.MULTILINE).group(0)
    for argument in ('--trainer.devices "$SLURM_NTASKS_PER_NODE"', '--trainer.num_nodes "$SLURM_JOB_NUM_NODES"',
                     '--trainer.default_root_dir "checkpoints/slurm-$SLURM_JOB_ID"', '"${RESUME_ARGS[@]}"',
                     "--trainer.strategy ddp \\"):
        assert argument in command, argument
    # resume a requeued job (or on request), never a fresh submission into an old run's checkpoint folder
    assert ('if [[ -n "${SLURM_RESTART_COUNT:-}" || "${RESUME:-0}" == 1 ]]; then RESUME_ARGS=(--ckpt_path last); fi'
            in text)
