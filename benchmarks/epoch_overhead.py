"""What Lightning and this project's module add to a full-batch epoch: ``Trainer.fit`` of ``NodeClassifier`` vs a
hand-written loop of the same model, on real Cora and the generated MAG graph; prints a Markdown table.

    python -m benchmarks.epoch_overhead                  # Cora GCN 2 x 16 and MAG R-GCN 2 x 16, about a minute
    python -m benchmarks.epoch_overhead --rounds 1 --epochs 3          # seconds (a smoke test)

One epoch is what the configs do per epoch on a full-batch graph: a training step (dropout on, forward,
task loss on the training rows, backward, Adam step) and one evaluation forward (eval mode, no grad) scoring
validation and test. Cases, on the same data and model shape:

- ``hand loop`` (the peer): that epoch written in plain PyTorch on the ``graphkd`` core, accuracy by argmax;
- ``Trainer.fit``: ``NodeClassifier`` under ``Trainer`` with no logger, progress bar or checkpoints;
- ``Trainer.fit + checkpoints``: the same with the configs' two ``ModelCheckpoint`` (``best`` by val/acc and
  ``last`` at every epoch end), written to a temporary folder.

An epoch's time is the interval between consecutive ``on_train_epoch_start`` hooks (training, validation,
metrics and checkpoint writing included); the first epoch of every fit is a warm-up and not counted. The cases
are run in turn, round after round, so load from other processes falls on all of them alike; each number is
the median over all counted epochs. Cora: the ``ind.cora.*`` files of ``../shared/assets/graphs/planetoid``.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb would otherwise ask PyPI for a newer version

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from benchmarks.gcnii_epoch import load_cora
from benchmarks.machine import benchmark_parser, machine, machine_line, use_threads
from datamodules.graph import NodeDataModule
from datamodules.ogb import SyntheticMAGDataModule
from datamodules.pyg_dataset import PyGDataModule
from graphkd.models import build_gnn
from graphkd.node_batch import NodeBatch
from lightning_modules.node_classifier import NodeClassifier

MODEL = {"hidden_channels": 16, "num_layers": 2, "dropout": 0.5}
PEER = "hand loop"


class EpochClock(L.Callback):
    """Wall-clock seconds between consecutive training-epoch starts (and from the last one to the end of fit)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts.append(time.perf_counter())

    def epochs(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.starts[1:])]  # the first epoch is a warm-up


def lightning_epochs(datamodule: NodeDataModule, arch: str, epochs: int, folder: Path | None) -> list[float]:
    """``Trainer.fit`` of a ``NodeClassifier`` for ``epochs``; with ``folder``, best and last checkpoints written there."""
    clock = EpochClock()
    callbacks: list[L.Callback] = [clock]
    if folder is not None:
        callbacks += [ModelCheckpoint(dirpath=folder, filename="best", monitor="val/acc", mode="max",
                                      enable_version_counter=False),
                      ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)]
    module = NodeClassifier(datamodule.num_features, datamodule.num_classes, datamodule.graph_info, arch=arch, **MODEL)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=folder is not None, num_sanity_val_steps=0, callbacks=callbacks,
                        default_root_dir=folder)
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, datamodule)
    return clock.epochs()


def hand_epochs(datamodule: NodeDataModule, arch: str, epochs: int) -> list[float]:
    """The same epochs in plain PyTorch: train step, then an eval forward scoring validation and test."""
    info = datamodule.graph_info
    model = build_gnn(arch, datamodule.num_features, out_channels=datamodule.num_classes, hetero=info.hetero, **MODEL)
    if info.hetero:
        model.freeze_unreachable()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01, weight_decay=5e-4)
    view = NodeBatch.of(datamodule.graph, info)
    labels, train = view.labels, view.split_rows("train")
    starts = []
    for _ in range(epochs):
        starts.append(time.perf_counter())
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(view.run(model).logits[train], labels[train]).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            predictions = view.run(model).logits.argmax(-1)
        for split in ("val", "test"):
            rows = view.split_rows(split)
            float((predictions[rows] == labels[rows]).float().mean())
    starts.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(starts[1:])]


def measure(datamodules: dict[str, tuple[NodeDataModule, str]], rounds: int, epochs: int, root: Path) -> dict[str, dict[str, float]]:
    """Median epoch seconds of every (graph, case), the cases run in turn round after round."""
    cases: dict[str, Callable[[NodeDataModule, str], list[float]]] = {
        PEER: lambda dm, arch: hand_epochs(dm, arch, epochs),
        "Trainer.fit": lambda dm, arch: lightning_epochs(dm, arch, epochs, None),
        "Trainer.fit + checkpoints": lambda dm, arch: lightning_epochs(dm, arch, epochs, root / "checkpoints"),
    }
    samples: dict[str, dict[str, list[float]]] = {g: {c: [] for c in cases} for g in datamodules}
    for _ in range(rounds):
        for graph, (datamodule, arch) in datamodules.items():
            for case, run in cases.items():
                torch.manual_seed(0)
                samples[graph][case] += run(datamodule, arch)
    return {graph: {case: statistics.median(times) for case, times in by_case.items()}
            for graph, by_case in samples.items()}


def markdown(results: dict[str, dict[str, float]], rounds: int, epochs: int) -> str:
    lines = [machine_line(machine()), "",
             (f"One full-batch epoch (train step + validation), median over {rounds} rounds x {epochs - 1} epochs, "
              "ratio vs the hand-written loop"), "",
             "| graph, model | case | epoch ms | x hand loop |", "| --- | --- | ---: | ---: |"]
    for graph, times in results.items():
        for case, seconds in times.items():
            lines.append(f"| {graph} | {case} | {1e3 * seconds:.1f} | {seconds / times[PEER]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = benchmark_parser(__doc__, planetoid=True)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every case")
    parser.add_argument("--epochs", type=int, default=21, help="epochs per fit (the first is not counted)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.epochs < 3:
        parser.error(f"--rounds must be at least 1 and --epochs at least 3, got {args.rounds} and {args.epochs}")
    if not (args.planetoid / "ind.cora.graph").is_file():
        parser.error(f"no ind.cora.* files in {args.planetoid}; pass --planetoid")
    use_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="epoch_overhead_") as folder:
        root = Path(folder)
        load_cora(args.planetoid, root / "pyg")
        cora = PyGDataModule("Planetoid", {"name": "Cora"}, root=str(root / "pyg"), normalize_features=True)
        mag = SyntheticMAGDataModule(root=str(root / "mag"), hetero=True)
        with contextlib.redirect_stdout(sys.stderr):
            mag.setup("fit")
        results = measure({"Cora, GCN 2 x 16": (cora, "gcn"), "generated MAG, R-GCN 2 x 16": (mag, "rgcn")},
                          args.rounds, args.epochs, root)
    print(markdown(results, args.rounds, args.epochs))
    return results


if __name__ == "__main__":
    main()
