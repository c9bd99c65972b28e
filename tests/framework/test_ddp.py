"""DDP on 2 CPU processes (gloo) gives the 1-process run's model and metrics.

The 2-process runs go through ``main.py fit`` in a subprocess with ``--trainer.strategy ddp``
(Lightning's launcher re-runs the script once per extra rank). With the same global batch (full
batch; or 1 x 64 seeds against 2 x 32 seeds, no shuffling, every neighbour sampled, no dropout) both
runs see the same data per optimiser step, so weights agree to float rounding and metrics exactly.
The generated graph has 35 validation papers: the sampler pads rank 1 with a repeated node, which
would move the accuracy if it were counted twice.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch_geometric.typing
import yaml
from PIL import Image
from torch.utils.data import DistributedSampler

from datamodules.ffhq import FFHQDataModule
from datamodules.graph import preparation_lock
from datamodules.ogb import SyntheticMAGDataModule, dataset_folder
from datamodules.partitioned import write_partitions
from graphkd.distributed import first_occurrences, gather_from_ranks
from graphkd.synthetic_mag import write_synthetic_mag
from lightning_modules.node_classifier import NodeClassifier
from tests.graph_fixtures import TINY_MAG, require_neighbor_sampler

REPO = Path(__file__).resolve().parents[2]
# 236 training papers (even: equal shares, no padding in the gradient), 35 validation (odd), 30 test
GRAPH = dataclasses.replace(TINY_MAG, num_papers=301)
EPOCHS = 3
WEIGHT_TOLERANCE = 1e-5  # all-reduce averaging sums the two half-batch gradients in another order
METRIC_TOLERANCE = 1e-6  # i.e. the same number of correctly classified nodes out of the same count
ADAM = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01, "weight_decay": 0.0}}


def test_first_occurrences_keeps_one_row_per_node_in_id_order():
    node_id = torch.tensor([7, 3, 7, 1, 3, 9])
    assert first_occurrences(node_id).tolist() == [3, 1, 0, 5]
    assert first_occurrences(torch.tensor([], dtype=torch.long)).numel() == 0


def test_gather_outside_distributed_returns_the_local_rows():
    rows = (torch.arange(3), torch.ones(3))
    gathered = gather_from_ranks(rows)
    assert len(gathered) == 1 and all(torch.equal(a, b) for a, b in zip(gathered[0], rows))
    assert gather_from_ranks(None) == []


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_rank_draws_a_disjoint_share_of_the_seeds(data_root, shuffle):
    """The datamodule shards mini-batch seeds itself (keeping ``shuffle``); Lightning sees a DistributedSampler."""
    require_neighbor_sampler()
    shares = []
    for rank in range(2):
        dm = SyntheticMAGDataModule(GRAPH, root=str(data_root), hetero=False, batch_size=32, shuffle=shuffle)
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        loader = dm.train_dataloader()
        assert isinstance(loader.sampler, DistributedSampler)
        loader.sampler.set_epoch(1)
        shares.append(torch.cat([batch.n_id[: batch.batch_size] for batch in loader]))
    seeds = torch.nonzero(dm.graph.train_mask).view(-1)
    assert len(shares[0]) == len(shares[1]) == len(seeds) // 2  # 236 seeds: no padding
    assert torch.equal(torch.cat(shares).sort().values, seeds)
    if not shuffle:  # rank r takes every other seed: together, step by step, the 1-process batches
        assert torch.equal(shares[0], seeds[0::2]) and torch.equal(shares[1], seeds[1::2])
    else:
        assert not torch.equal(shares[0], seeds[0::2])


def test_a_process_waits_while_another_prepares_the_dataset(tmp_path):
    """Ranks started together: loading blocks on the folder's lock, then generates and reads the graph."""
    lock = preparation_lock(dataset_folder("ogbn-mag", tmp_path))
    loaded: list = []
    waiting = threading.Thread(target=lambda: loaded.append(SyntheticMAGDataModule(GRAPH, root=str(tmp_path)).graph_info))
    with lock:
        waiting.start()
        waiting.join(timeout=2.0)
        assert waiting.is_alive() and not (tmp_path / "ogbn_mag").exists()
    waiting.join(timeout=120)
    assert loaded and loaded[0].hetero.target == "paper"
    assert (tmp_path / "ogbn_mag" / "processed" / "geometric_data_processed.pt").is_file()


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_rgcn_freezes_exactly_the_parameters_without_a_gradient(data_root, num_layers):
    """What plain DDP needs: every trainable parameter gets a gradient, and nothing frozen would have had one."""
    dm = SyntheticMAGDataModule(GRAPH, root=str(data_root), hetero=True)
    module = NodeClassifier(dm.num_features, dm.num_classes, dm.graph_info, arch="rgcn", num_layers=num_layers)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    module.requires_grad_(True)
    module.loss_terms(module.view(dm.graph), module(dm.graph), dm.target_store.train_mask)["ce"].backward()
    assert trainable == {name for name, p in module.named_parameters() if p.grad is not None}
    assert len(trainable) < len(list(module.parameters()))


def node_classifier(**init_args) -> dict:
    return {"class_path": "lightning_modules.node_classifier.NodeClassifier",
            "init_args": {"arch": "rgcn", "hidden_channels": 16, "num_layers": 2, "dropout": 0.0,
                          "optimizer": ADAM, **init_args}}


def write_config(run_dir: Path, data_root: Path, model: dict, batch_size: int | None) -> Path:
    """A ``main.py`` config: CSV metrics, last checkpoint, the generated graph (no shuffling, all neighbours)."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "max_epochs": EPOCHS, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(run_dir),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(run_dir), "name": "csv"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(run_dir / "ckpt"), "save_last": True, "save_top_k": 0}}],
        },
        "model": model,
        "data": {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
                 "init_args": {"root": str(data_root), "hetero": True, "synthetic": dataclasses.asdict(GRAPH),
                               "batch_size": batch_size, "num_neighbors": [-1, -1], "shuffle": False}},
    }
    run_dir.mkdir(parents=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_in_session(command: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``command`` in a process group of its own; on timeout kill the whole group and fail.

    Lightning starts the other ranks as subprocesses: killing only the first would leave them waiting
    for it (for gloo's 30-minute timeout) after the test has failed.
    """
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command)} did not end within {timeout} s:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_main(*args: str, processes: int) -> None:
    """``python main.py ARGS`` on ``processes`` CPU processes (DDP, gloo when more than one)."""
    strategy = ["--trainer.strategy", "ddp", "--trainer.devices", str(processes)] if processes > 1 else ["--trainer.devices", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OUTDATED_IGNORE": "1"}
    done = run_in_session([sys.executable, "main.py", *args, *strategy], env)
    assert done.returncode == 0, done.stderr[-4000:]


def fit(run_dir: Path, data_root: Path, model: dict, batch_size: int | None, processes: int) -> Path:
    run_main("fit", "--config", str(write_config(run_dir, data_root, model, batch_size)), processes=processes)
    return run_dir


def epoch_metrics(run_dir: Path) -> dict[str, list[float]]:
    """Every epoch-level metric of a run's CSV log, in epoch order (rank 0 writes the file)."""
    rows = list(csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()))
    names = {name for row in rows for name, value in row.items() if value and name.split("/")[-1] in ("acc", "loss")
             and not name.startswith("train/loss")}
    return {name: [float(row[name]) for row in rows if row[name]] for name in sorted(names)}


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_run(one: Path, two: Path, compare_loss: bool) -> None:
    """Same metrics every epoch, and final weights equal to float rounding."""
    single, double = epoch_metrics(one), epoch_metrics(two)
    assert set(single) == set(double) and {"train/acc", "val/acc", "test/acc"} <= set(single)
    for name, values in single.items():
        if name.endswith("/loss") and not compare_loss:
            continue
        assert len(values) == len(double[name]) == EPOCHS, name
        assert max(abs(a - b) for a, b in zip(values, double[name])) <= METRIC_TOLERANCE, (name, values, double[name])
    first, second = last_weights(one), last_weights(two)
    assert first.keys() == second.keys()
    gap = max((first[k].float() - second[k].float()).abs().max().item() for k in first)
    print(f"{one.name} vs {two.name}: largest weight difference {gap:.2e}")
    assert gap <= WEIGHT_TOLERANCE, gap


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp_graph")
    write_synthetic_mag(root, GRAPH)
    return root


@pytest.mark.slow
def test_full_batch_distillation_on_two_processes_matches_one(data_root, tmp_path):
    """Full batch (each rank trains on the whole graph): an ABKD student of a 1-process teacher."""
    dm = SyntheticMAGDataModule(GRAPH, root=str(data_root), hetero=True)
    teacher = NodeClassifier(dm.num_features, dm.num_classes, dm.graph_info,
                             **{**node_classifier()["init_args"], "optimizer": partial(torch.optim.Adam, lr=0.01, weight_decay=0.0)})
    trainer = L.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(teacher, dm)
    trainer.save_checkpoint(tmp_path / "teacher.ckpt")
    student = {"class_path": "lightning_modules.distillation.DistillationModule",
               "init_args": {"teacher_checkpoint": str(tmp_path / "teacher.ckpt"), "arch": "rgcn",
                             "hidden_channels": 8, "num_layers": 2, "dropout": 0.0, "optimizer": ADAM,
                             "distiller": {"class_path": "graphkd.distill.ABKD"}}}
    student_one = fit(tmp_path / "student_one", data_root, student, None, processes=1)
    student_two = fit(tmp_path / "student_two", data_root, student, None, processes=2)
    assert_same_run(student_one, student_two, compare_loss=True)


@pytest.mark.slow
def test_neighbor_loader_on_two_processes_matches_one_with_the_same_global_batch(data_root, tmp_path):
    """1 process x 64 seeds against 2 processes x 32 seeds; then both predict every node once."""
    require_neighbor_sampler()
    one = fit(tmp_path / "one", data_root, node_classifier(), 64, processes=1)
    two = fit(tmp_path / "two", data_root, node_classifier(), 32, processes=2)
    # val/loss is a mean over each rank's rows, so the padded repeat weighs in; the metric drops it
    assert_same_run(one, two, compare_loss=False)

    output = tmp_path / "predictions.csv"
    run_main("predict", "--config", str(two / "config.yaml"), "--ckpt_path", str(two / "ckpt" / "last.ckpt"),
             "--trainer.callbacks+", "callbacks.node_predictions.NodePredictionWriter",
             "--trainer.callbacks.output_file", str(output), processes=2)
    rows = list(csv.DictReader(output.open()))
    assert [int(r["node_id"]) for r in rows] == list(range(GRAPH.num_papers))  # each node once, though 301 is odd
    assert not output.with_suffix(".csv.tmp").exists()
    # a 2-layer model over every neighbour predicts each seed as the full graph does
    dm = SyntheticMAGDataModule(GRAPH, root=str(data_root), hetero=True)
    model = NodeClassifier.load_from_checkpoint(two / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        expected = model.eval()(dm.graph).logits.argmax(-1)
    assert [int(r["prediction"]) for r in rows] == expected.tolist()


@pytest.mark.slow
@pytest.mark.skipif(not torch_geometric.typing.WITH_PYG_LIB, reason="DistNeighborLoader needs pyg-lib: `make setup-sampling`")
def test_abkd_student_on_two_partitions_scores_what_the_whole_graph_scores(data_root, tmp_path):
    """``main.py fit`` on 2 processes, each holding one METIS partition of the ogbn-mag-layout graph.

    An ABKD student (R-GCN) of a teacher trained here is fitted on ``DistNeighborLoader`` batches (gloo
    for DDP, RPC for remote neighbours, both on 127.0.0.1). Every neighbour is sampled, so the
    accuracy logged at the last epoch must be the saved student's accuracy on the whole graph: each
    seed once, its labels, its features and its neighbours' (remote ones included) all right.
    """
    dm = SyntheticMAGDataModule(GRAPH, root=str(data_root), hetero=True)
    teacher = NodeClassifier(dm.num_features, dm.num_classes, dm.graph_info,
                             **{**node_classifier()["init_args"], "optimizer": partial(torch.optim.Adam, lr=0.01, weight_decay=0.0)})
    L.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(teacher, dm)
    teacher.trainer.save_checkpoint(tmp_path / "teacher.ckpt")
    write_partitions(dm.graph, dm.graph_info, dm.num_classes, tmp_path / "parts", 2)
    run_dir = tmp_path / "student"
    student = {"arch": "rgcn", "hidden_channels": 8, "num_layers": 2, "dropout": 0.0, "optimizer": ADAM}
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "max_epochs": EPOCHS, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
            "use_distributed_sampler": False, "enable_progress_bar": False, "enable_model_summary": False,
            "default_root_dir": str(run_dir),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir), "name": "csv"}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(run_dir / "ckpt"), "save_last": True, "save_top_k": 0}}],
        },
        "model": {"class_path": "lightning_modules.distillation.DistillationModule",
                  "init_args": {"teacher_checkpoint": str(tmp_path / "teacher.ckpt"), **student,
                                "distiller": {"class_path": "graphkd.distill.ABKD"}}},
        "data": {"class_path": "datamodules.partitioned.PartitionedNodeDataModule",
                 "init_args": {"root": str(tmp_path / "parts"), "batch_size": 48, "num_neighbors": [-1, -1],
                               "concurrency": 1}},
    }
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    run_main("fit", "--config", str(run_dir / "config.yaml"), processes=2)

    logged = epoch_metrics(run_dir)
    assert len(logged["val/acc"]) == len(logged["test/acc"]) == EPOCHS
    state = last_weights(run_dir)
    model = NodeClassifier(dm.num_features, dm.num_classes, dm.graph_info, **student)
    model.model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()
                                 if key.startswith("model.")})
    with torch.no_grad():
        predicted = model.eval()(dm.graph).logits.argmax(-1)
    for split in ("val", "test"):
        mask = dm.target_store[f"{split}_mask"]
        accuracy = (predicted[mask] == dm.target_store.y[mask]).float().mean().item()
        assert abs(logged[f"{split}/acc"][-1] - accuracy) <= METRIC_TOLERANCE, (split, logged[f"{split}/acc"], accuracy)


class SeenImages(L.LightningModule):
    """Records which images each rank trains on (image ``i`` is the constant grey ``10 i``), per epoch.

    Args:
        out_dir: receives ``rank<R>_epoch<E>.json`` with the image indices in the order seen.
    """

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen: list[int] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        grey = (batch.mean(dim=(1, 2, 3)) + 1) / 2 * 255  # [-1, 1] -> the written grey level
        self.seen += torch.round(grey / 10).long().tolist()
        return self.scale * batch.mean()

    def on_train_epoch_end(self) -> None:
        (self.out_dir / f"rank{self.global_rank}_epoch{self.current_epoch}.json").write_text(json.dumps(self.seen))
        self.seen = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.slow
def test_ffhq_images_are_sharded_once_per_rank_by_lightning(tmp_path):
    """Lightning's DistributedSampler alone splits FFHQ: shares disjoint, whole, reshuffled per epoch."""
    images = tmp_path / "images"
    images.mkdir()
    for index in range(11):
        Image.fromarray(np.full((8, 8, 3), 10 * index, dtype=np.uint8)).save(images / f"{index:05d}.png")
    seen = tmp_path / "seen"
    seen.mkdir()
    run_main("fit", "--model", f"{__name__}.SeenImages", "--model.out_dir", str(seen),
             "--data", "datamodules.ffhq.FFHQDataModule", "--data.path", str(images), "--data.resolution", "8",
             "--data.batch_size", "2", "--data.augment", "false", "--data.val_fraction", "0.2",
             "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0", "--trainer.logger", "false",
             "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
             "--trainer.default_root_dir", str(tmp_path), processes=2)
    train = FFHQDataModule(str(images), resolution=8, val_fraction=0.2)
    train.setup("fit")
    expected = sorted(train.train_dataset.indices)  # 9 of the 11 images; image i is the i-th file
    orders = {}
    for epoch in range(2):
        shares = [json.loads((seen / f"rank{rank}_epoch{epoch}.json").read_text()) for rank in range(2)]
        assert len(shares[0]) == len(shares[1]) == 5  # ceil(9 / 2): sharded once, padded by one repeat
        assert sorted(set(shares[0] + shares[1])) == expected
        assert len(set(shares[0]) & set(shares[1])) <= 1
        orders[epoch] = shares[0] + shares[1]
    assert orders[0] != orders[1]


@pytest.mark.slow
def test_two_process_face_predict_writes_each_photo_once_and_one_gallery_of_all(tmp_path, shared_assets):
    """``main.py predict`` of the GAN-texture demo on 2 processes: each rank writes the photos of its share,
    and rank 0 builds the gallery after every rank is done, so the overview lists every photo."""
    photos = tmp_path / "photos"
    photos.mkdir()
    names = ("ffhq_00009", "jianzhu_guo")
    for name in names:
        source = next((shared_assets / "faces").glob(f"{name}.*"))
        (photos / source.name).write_bytes(source.read_bytes())
    run_main("predict", "--config", "configs/gantex_demo.yaml", "--data.init_args.path", str(photos),
             "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.accelerator", "cpu",
             processes=2)
    faces = tmp_path / "logs" / "gantex_demo" / "version_0" / "faces"
    assert sorted(p.name for p in faces.iterdir() if p.is_dir() and (p / "face.obj").is_file()) == list(names)
    overview = (faces / "index.html").read_text()
    for name in names:
        assert f'href="{name}/index.html"' in overview and (faces / name / "index.html").is_file()
