"""Lightning sees the SLURM job that ``srun`` describes, and our templates ask for one process per GPU.

The templates' whole path (SIGUSR1 -> hpc checkpoint + ``scontrol requeue``, SIGKILL, exact resume from
``last.ckpt``) runs in tests/framework/test_resume.py with a stand-in ``srun``/``scontrol``; a partitioned run
(one METIS partition per task) runs here through ``multi_node.sbatch`` with a stand-in ``srun`` that starts
every task.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
import socket
from pathlib import Path

import lightning as L
import pytest
import torch_geometric.typing
import yaml
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning_utilities.core.rank_zero import rank_zero_only

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((REPO / "scripts" / "slurm").glob("*.sbatch"))
# srun's part: start $SLURM_NTASKS copies of the task, each with its own rank variables; fail if any fails
STAND_IN_SRUN = """#!/bin/sh
pids=""
task=0
while [ "$task" -lt "$SLURM_NTASKS" ]; do
    SLURM_PROCID=$task SLURM_LOCALID=$((task % SLURM_NTASKS_PER_NODE)) SLURM_NODEID=$((task / SLURM_NTASKS_PER_NODE)) "$@" &
    pids="$pids $!"
    task=$((task + 1))
done
status=0
for pid in $pids; do wait "$pid" || status=1; done
exit $status
"""


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


@pytest.mark.slow
@pytest.mark.skipif(not torch_geometric.typing.WITH_PYG_LIB, reason="DistNeighborLoader needs pyg-lib: `make setup-sampling`")
def test_multi_node_template_starts_a_partitioned_run_one_partition_per_task(tmp_path):
    """``CONFIG=<partitioned config> sbatch --nodes=2 --ntasks-per-node=1 scripts/slurm/multi_node.sbatch``.

    bash runs the template as sbatch would; the stand-in ``srun`` starts both tasks on this machine
    with their SLURM rank variables; each loads its own partition and the job trains to the end.
    """
    from datamodules.ogb import SyntheticMAGDataModule
    from datamodules.partitioned import write_partitions
    from tests.framework.test_ddp import run_in_session
    from tests.graph_fixtures import TINY_MAG

    source = SyntheticMAGDataModule(dataclasses.replace(TINY_MAG, num_papers=200), root=str(tmp_path / "graph"))
    write_partitions(source.graph, source.graph_info, source.num_classes, tmp_path / "parts", 2)
    config = yaml.safe_load((REPO / "configs" / "abkd_mag_teacher_partitioned.yaml").read_text())
    config["checkpoint"]["dirpath"] = str(tmp_path / "ckpt")
    config["trainer"].update(max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0,
                             logger={"class_path": "lightning.pytorch.loggers.CSVLogger",
                                     "init_args": {"save_dir": str(tmp_path / "logs"), "name": "csv"}})
    config["model"]["init_args"].update(hidden_channels=8, num_layers=2)
    config["data"]["init_args"].update(root=str(tmp_path / "parts"), batch_size=64, num_neighbors=[4, 4], num_workers=0)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(STAND_IN_SRUN)
    (bin_dir / "srun").chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CONFIG": str(tmp_path / "config.yaml"),
           "SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_ID": "4243", "SLURM_JOB_NAME": "gnn-face-kd",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1",
           "SLURM_CPUS_PER_TASK": "1", "SLURM_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "OUTDATED_IGNORE": "1"}
    done = run_in_session(["bash", str(REPO / "scripts" / "slurm" / "multi_node.sbatch"), "--trainer.accelerator", "cpu",
                           "--trainer.default_root_dir", str(tmp_path / "job")], env)
    assert done.returncode == 0, done.stderr[-4000:]
    for rank in range(2):
        assert f"[rank {rank}/2] loaded and verified partition {rank} of {tmp_path / 'parts'}" in done.stderr
    rows = list(csv.DictReader((tmp_path / "logs" / "csv" / "version_0" / "metrics.csv").open()))
    assert any(row.get("val/acc") for row in rows)
    assert (tmp_path / "ckpt" / "version_0" / "last.ckpt").exists()
