"""Lightning sees the SLURM job that ``srun`` describes, and our templates ask for one process per GPU."""
from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning_utilities.core.rank_zero import rank_zero_only

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "scripts" / "slurm").glob("*.sbatch"))


@pytest.fixture
def srun_rank_3_of_4(monkeypatch):
    """The variables srun sets for task 3 of a 2-node x 2-task job.

    A Trainer built here sets the process-wide rank used by ``rank_zero_only`` to 3; it is restored
    afterwards, or later tests in this process would stop writing their logs.
    """
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    for name, value in {
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "gnn-face-kd", "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2",
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


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_run_one_task_per_gpu_and_resume(template):
    text = template.read_text()
    tasks = re.search(r"--ntasks-per-node=(\d+)", text).group(1)
    gpus = re.search(r"--gpus-per-node=(\d+)", text).group(1)
    assert tasks == gpus
    assert "--signal=SIGUSR1@" in text and "--requeue" in text
    assert re.search(r"^srun .*main\.py fit", text, re.MULTILINE)
    assert "--ckpt_path last" in text and '--trainer.devices "$SLURM_NTASKS_PER_NODE"' in text
