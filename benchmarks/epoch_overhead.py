"""What Lightning and this project's module add to a full-batch epoch: ``Trainer.fit`` of ``NodeClassifier`` vs a
hand-written loop of the same model, on real Cora and the generated MAG graph; prints a Markdown table.

    python -m benchmarks.epoch_overhead                  # Cora GCN 2 x 16 and MAG R-GCN 2 x 16, about three minutes
    python -m benchmarks.epoch_overhead --rounds 1 --epochs 3          # seconds (a smoke test)

One epoch is what the configs do per epoch on a full-batch graph: a training step (dropout on, forward,
task loss on the training rows, backward, Adam step) and one evaluation forward (eval mode, no grad) scoring
validation and test. Cases, on the same data and model shape:

- ``hand loop`` (the peer): that epoch written in plain PyTorch on the ``graphkd`` core, accuracy by argmax;
- ``Trainer.fit``: ``NodeClassifier`` under ``Trainer`` with no logger, progress bar or checkpoints;
- ``+ checkpoints, two ModelCheckpoint (before)``: the layout ``main.py`` used before: one ``ModelCheckpoint`` for
  ``best`` by val/acc and one for ``last`` at every epoch end, so an improving epoch is written twice;
- ``+ checkpoints, main.py policy``: what ``main.py fit`` adds now, :class:`cli.checkpoint_policy.CheckpointPolicy`'s
  callback (one write per epoch, ``last.ckpt`` a link to ``best.ckpt`` when they coincide).

An epoch's time is the interval between consecutive ``on_train_epoch_start`` hooks (training, validation,
metrics and checkpoint writing included), as wall time and as this process's CPU time (``time.process_time``:
load from other processes on a shared machine inflates the first much more than the second); the first epoch of every
fit is a warm-up and not counted. Checkpoint bytes per epoch: the sizes of the regular files in the checkpoint
folder that are new (another inode or modification time) at each epoch start, so a link counts nothing; the
time inside the checkpoint callbacks' saving hooks (``on_train_epoch_end``, ``on_validation_end``) is timed too. The
cases are run in turn, round after round (many short fits), so load from other processes falls on all of them
alike; each time is the median over all counted epochs, each ratio the median over rounds of that round's ratio. Cora: the ``ind.cora.*`` files of ``../shared/assets/graphs/planetoid``.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb would otherwise ask PyPI for a newer version

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from benchmarks.gcnii_epoch import load_cora
from benchmarks.machine import benchmark_parser, machine, machine_line, publish, use_threads
from cli.checkpoint_policy import CheckpointPolicy
from datamodules.graph import NodeDataModule
from datamodules.ogb import SyntheticMAGDataModule
from datamodules.pyg_dataset import PyGDataModule
from graphkd.models import build_gnn
from graphkd.node_batch import NodeBatch
from lightning_modules.node_classifier import NodeClassifier

MODEL = {"hidden_channels": 16, "num_layers": 2, "dropout": 0.5}
PEER = "hand loop"
BEFORE, POLICY = "+ checkpoints, two ModelCheckpoint (before)", "+ checkpoints, main.py policy"


@dataclass
class Epochs:
    """Per counted epoch: wall seconds, CPU seconds, wall seconds inside the checkpoint callbacks' saving hooks,
    checkpoint files and bytes written."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    saving: list[float] = field(default_factory=list)
    files: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)


class EpochClock(L.Callback):
    """Wall and CPU seconds between consecutive training-epoch starts (and from the last one to the end of fit), and
    the bytes of the files that appeared in ``folder`` in between (the look at the folder is not timed)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.ticks: list[tuple[float, float, float, int, int]] = []  # wall, cpu; saving, files, bytes since the last tick
        self.saving = 0.0  # wall seconds in the checkpoint callbacks' saving hooks since the previous tick
        self.seen: set[tuple[str, int, int]] = set()
        self.paused = (0.0, 0.0)  # wall, cpu seconds spent looking at the folder since the previous tick

    def _tick(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.ticks.append((wall - self.paused[0], cpu - self.paused[1], self.saving, *self._new_files()))
        self.saving = 0.0
        self.paused = (self.paused[0] + time.perf_counter() - wall, self.paused[1] + time.process_time() - cpu)

    def _new_files(self) -> tuple[int, int]:
        """How many regular files in the folder are new since the last look, and their bytes."""
        if self.folder is None or not self.folder.is_dir():
            return 0, 0
        files = {(entry.name, stat.st_ino, stat.st_mtime_ns): stat.st_size for entry in os.scandir(self.folder)
                 if entry.is_file(follow_symlinks=False) and (stat := entry.stat(follow_symlinks=False))}
        new = [size for key, size in files.items() if key not in self.seen]
        self.seen = set(files)
        return len(new), sum(new)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick()

    def epochs(self) -> Epochs:
        counted = self.ticks[1:]  # the first epoch is a warm-up
        pairs = list(itertools.pairwise(counted))
        return Epochs([b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs],
                      *([b[k] for a, b in pairs] for k in (2, 3, 4)))

    def time_saving(self, callback: L.Callback) -> None:
        """Add the wall time of ``callback``'s hooks that save checkpoints to :attr:`saving`."""
        for hook in ("on_train_epoch_end", "on_validation_end"):
            setattr(callback, hook, self._timed(getattr(callback, hook)))

    def _timed(self, hook: Callable[[L.Trainer, L.LightningModule], None]) -> Callable[[L.Trainer, L.LightningModule], None]:
        def timed(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            start = time.perf_counter()
            hook(trainer, pl_module)
            self.saving += time.perf_counter() - start
        return timed


def lightning_epochs(datamodule: NodeDataModule, arch: str, epochs: int, checkpoints: str | None, folder: Path) -> Epochs:
    """``Trainer.fit`` of a ``NodeClassifier`` for ``epochs``; with ``checkpoints`` (a case), best and last written
    to a new folder under ``folder``."""
    run = Path(tempfile.mkdtemp(prefix="run_", dir=folder))
    clock = EpochClock(run if checkpoints else None)
    callbacks: list[L.Callback] = [clock]
    if checkpoints == BEFORE:
        callbacks += [ModelCheckpoint(dirpath=run, filename="best", monitor="val/acc", mode="max",
                                      enable_version_counter=False),
                      ModelCheckpoint(dirpath=run, filename="last", enable_version_counter=False)]
    elif checkpoints == POLICY:
        callbacks += CheckpointPolicy(dirpath=str(folder)).callbacks(run)
    for callback in callbacks[1:]:
        clock.time_saving(callback)
    module = NodeClassifier(datamodule.num_features, datamodule.num_classes, datamodule.graph_info, arch=arch, **MODEL)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=checkpoints is not None, num_sanity_val_steps=0, callbacks=callbacks,
                        default_root_dir=run)
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, datamodule)
    shutil.rmtree(run)
    return clock.epochs()


def hand_epochs(datamodule: NodeDataModule, arch: str, epochs: int) -> Epochs:
    """The same epochs in plain PyTorch: train step, then an eval forward scoring validation and test."""
    info = datamodule.graph_info
    model = build_gnn(arch, datamodule.num_features, out_channels=datamodule.num_classes, hetero=info.hetero, **MODEL)
    if info.hetero:
        model.freeze_unreachable()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01, weight_decay=5e-4)
    view = NodeBatch.of(datamodule.graph, info)
    labels, train = view.labels, view.split_rows("train")
    ticks = []
    for _ in range(epochs):
        ticks.append((time.perf_counter(), time.process_time()))
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
    ticks.append((time.perf_counter(), time.process_time()))
    pairs = list(itertools.pairwise(ticks[1:]))
    return Epochs([b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs], [0.0] * len(pairs), [0] * len(pairs),
                  [0] * len(pairs))


Result = dict[str, dict[str, dict[str, float]]]


def measure(datamodules: dict[str, tuple[NodeDataModule, str]], rounds: int, epochs: int, root: Path) -> Result:
    """Per (graph, case): median wall and CPU seconds of an epoch, their ratios to the hand loop (the median over
    rounds of each round's ratio of medians, so load that drifts between rounds cancels out), the median time in
    the checkpoint callbacks, mean checkpoint files and bytes written per epoch; the cases run in turn round after
    round."""
    cases: dict[str, Callable[[NodeDataModule, str], Epochs]] = {
        PEER: lambda dm, arch: hand_epochs(dm, arch, epochs),
        "Trainer.fit": lambda dm, arch: lightning_epochs(dm, arch, epochs, None, root),
        BEFORE: lambda dm, arch: lightning_epochs(dm, arch, epochs, BEFORE, root),
        POLICY: lambda dm, arch: lightning_epochs(dm, arch, epochs, POLICY, root),
    }
    runs: dict[str, dict[str, list[Epochs]]] = {graph: {case: [] for case in cases} for graph in datamodules}
    for _ in range(rounds):
        for graph, (datamodule, arch) in datamodules.items():
            for case, run in cases.items():
                torch.manual_seed(0)
                runs[graph][case].append(run(datamodule, arch))
    results: Result = {}
    for graph, by_case in runs.items():
        results[graph] = {}
        for case, measured in by_case.items():
            pooled = {key: [x for one in measured for x in getattr(one, key)] for key in ("wall", "cpu", "saving", "files", "written")}
            results[graph][case] = {
                "wall": statistics.median(pooled["wall"]), "cpu": statistics.median(pooled["cpu"]),
                **{f"x_{key}": statistics.median(statistics.median(getattr(one, key)) / statistics.median(getattr(peer, key))
                                                 for one, peer in zip(measured, by_case[PEER])) for key in ("wall", "cpu")},
                "saving": statistics.median(pooled["saving"]), "files_per_epoch": statistics.fmean(pooled["files"]),
                "bytes_per_epoch": statistics.fmean(pooled["written"])}
    return results


def markdown(results: Result, rounds: int, epochs: int) -> str:
    lines = [machine_line(machine()), "",
             (f"One full-batch epoch (train step + validation), median over {rounds} rounds x {epochs - 1} epochs; "
              "x hand loop: the median over rounds of each round's ratio; in checkpoint callbacks: median wall ms per "
              "epoch; files and KiB written per epoch: means"), "",
             "| graph, model | case | epoch ms (wall) | x hand loop | epoch CPU ms | x hand loop | in checkpoint callbacks ms "
             "| files written per epoch | KiB written per epoch |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for graph, times in results.items():
        for case, t in times.items():
            lines.append(f"| {graph} | {case} | {1e3 * t['wall']:.1f} | {t['x_wall']:.2f} | {1e3 * t['cpu']:.1f} | "
                         f"{t['x_cpu']:.2f} | {1e3 * t['saving']:.1f} | {t['files_per_epoch']:.2f} | "
                         f"{t['bytes_per_epoch'] / 1024:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Result:
    parser = benchmark_parser(__doc__, planetoid=True)
    parser.add_argument("--rounds", type=int, default=10, help="rounds of every case")
    parser.add_argument("--epochs", type=int, default=7, help="epochs per fit (the first is not counted)")
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
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
    publish(results, markdown(results, args.rounds, args.epochs), args.out)
    return results


if __name__ == "__main__":
    main()
