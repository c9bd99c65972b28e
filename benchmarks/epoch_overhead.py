"""What Lightning and this project's module add to a full-batch epoch: ``Trainer.fit`` of ``NodeClassifier`` vs a
hand-written loop of the same model, on real Cora and the generated MAG graph; prints a Markdown table.

    python -m benchmarks.epoch_overhead                  # Cora GCN 2 x 16 and MAG R-GCN 2 x 16, one to four minutes
    python -m benchmarks.epoch_overhead --rounds 1 --epochs 3          # seconds (a smoke test)

One epoch is what the configs do per epoch on a full-batch graph: a training step (dropout on, forward,
task loss on the training rows, backward, Adam step) and one evaluation forward (eval mode, no grad) scoring
validation and test. Cases, on the same data and model shape:

- ``hand loop`` (the peer): that epoch written in plain PyTorch on the ``graphkd`` core, accuracy by argmax;
- ``Trainer.fit``: ``NodeClassifier`` under ``Trainer`` with no logger, progress bar or checkpoints;
- ``+ checkpoints, two ModelCheckpoint (before)``: the layout ``main.py`` used before: one ``ModelCheckpoint`` for
  ``best`` by val/acc and one for ``last`` at every epoch end, so an improving epoch is written twice;
- ``+ checkpoints, one write per epoch, at once``: :class:`callbacks.best_and_last.BestAndLastCheckpoint` writing
  before training goes on (one write per epoch, ``last.ckpt`` a link to ``best.ckpt`` when they coincide): what
  :class:`cli.checkpoint_policy.CheckpointPolicy` adds on the CPU;
- ``+ checkpoints, one write per epoch, background thread``: the same files, written in a thread while the next
  epoch trains (the state copied first): what the policy adds on an accelerator;
- ``main.py fit``: the run as ``python main.py fit`` makes it (``main.main`` on a config of the same model and data):
  its TensorBoard logger (``log_every_n_steps: 1``, like the configs), progress bar and model summary, the
  checkpoint policy and every callback ``main.py`` adds.

An epoch's time is the interval between consecutive ``on_train_epoch_start`` hooks (training, validation,
metrics and checkpoint writing included), as wall time and as this process's CPU time (``time.process_time``:
load from other processes on a shared machine inflates the first much more than the second); the first epoch of every
fit is a warm-up and not counted. Checkpoint files and bytes per epoch: the files the strategy's ``CheckpointIO``
writes over the fit (in the background writer's thread too; a link writes none), divided by the fit's epochs; the time
inside the checkpoint callbacks' hooks that save or wait for a background write (``on_train_epoch_end``,
``on_validation_end``, ``on_after_backward``, ``on_train_end``) is timed too. On a machine with few cores a background
write competes with training for them: the CPU time counts the writer thread's work as well. The
cases are run in turn, round after round (many short fits), so load from other processes falls on all of them
alike; each time is the median over all counted epochs, each ratio the median over rounds of that round's ratio. Cora: the ``ind.cora.*`` files of ``../shared/assets/graphs/planetoid``.
"""
from __future__ import annotations

import contextlib
import importlib
import io
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
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from benchmarks.gcnii_epoch import load_cora
from benchmarks.machine import benchmark_parser, machine, machine_line, publish, use_threads
from callbacks.best_and_last import BestAndLastCheckpoint
from datamodules.graph import NodeDataModule
from datamodules.ogb import SyntheticMAGDataModule
from datamodules.pyg_dataset import PyGDataModule
from graphkd.models import build_gnn
from graphkd.node_batch import NodeBatch
from lightning_modules.node_classifier import NodeClassifier

MODEL = {"hidden_channels": 16, "num_layers": 2, "dropout": 0.5}
PEER = "hand loop"
BEFORE, AT_ONCE = "+ checkpoints, two ModelCheckpoint (before)", "+ checkpoints, one write per epoch, at once"
BACKGROUND = "+ checkpoints, one write per epoch, background thread"
MAIN = "main.py fit (logger, progress bar, checkpoints)"
CLOCK = "benchmarks.epoch_overhead.EpochClock"


@dataclass
class Epochs:
    """Per counted epoch: wall seconds, CPU seconds, wall seconds inside the checkpoint callbacks' hooks; checkpoint
    files and bytes written per epoch of the fit."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    saving: list[float] = field(default_factory=list)
    files: float = 0.0
    written: float = 0.0


class EpochClock(L.Callback):
    """Wall and CPU seconds between consecutive training-epoch starts (and from the last one to the end of fit), the
    wall seconds in the checkpoint callbacks' hooks, and the checkpoint files written (through the strategy's
    ``CheckpointIO``, in whichever thread: a link writes none) and their bytes. Set up by the fit it times (so it can
    be given to ``main.py`` as a callback)."""

    def __init__(self) -> None:
        self.ticks: list[tuple[float, float, float]] = []  # wall, cpu; saving since the last tick
        self.saving = 0.0  # wall seconds in the checkpoint callbacks' hooks since the previous tick
        self.files, self.written = 0, 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.count_writes(trainer)
        for callback in trainer.checkpoint_callbacks:
            self.time_saving(callback)

    def _tick(self) -> None:
        self.ticks.append((time.perf_counter(), time.process_time(), self.saving))
        self.saving = 0.0

    def count_writes(self, trainer: L.Trainer) -> None:
        """Count every file ``trainer``'s checkpoint saving writes, and its bytes: through the strategy's
        ``CheckpointIO``, or by ``torch.save`` into a file, named or open (``BestAndLastCheckpoint`` writes the stock
        ``CheckpointIO``'s format into an open file), until :meth:`teardown`."""
        checkpoint_io = trainer.strategy.checkpoint_io
        save, self._torch_save = checkpoint_io.save_checkpoint, torch.save

        def counted(checkpoint: dict[str, object], path: str, storage_options: object = None) -> None:
            save(checkpoint, path, storage_options=storage_options)
            self.files, self.written = self.files + 1, self.written + os.path.getsize(path)

        def counted_torch_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
            self._torch_save(obj, f, *args, **kwargs)  # type: ignore[arg-type]
            if isinstance(f, (str, os.PathLike)):
                self.files, self.written = self.files + 1, self.written + os.path.getsize(f)
            elif isinstance(f, io.BufferedWriter):  # an open file (not an in-memory buffer): its bytes so far
                self.files, self.written = self.files + 1, self.written + f.tell()
        checkpoint_io.save_checkpoint = counted  # type: ignore[method-assign]
        torch.save = counted_torch_save  # type: ignore[assignment]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        torch.save = self._torch_save  # type: ignore[assignment]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick()

    def epochs(self) -> Epochs:
        counted = self.ticks[1:]  # the first epoch is a warm-up
        pairs = list(itertools.pairwise(counted))
        epochs = len(self.ticks) - 1
        return Epochs([b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs], [b[2] for a, b in pairs],
                      self.files / epochs, self.written / epochs)

    def time_saving(self, callback: L.Callback) -> None:
        """Add the wall time of ``callback``'s hooks that save checkpoints or wait for a write to :attr:`saving`."""
        for hook in ("on_train_epoch_end", "on_validation_end", "on_after_backward", "on_train_end"):
            setattr(callback, hook, self._timed(getattr(callback, hook)))

    def _timed(self, hook: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: object) -> None:
            start = time.perf_counter()
            hook(*args)
            self.saving += time.perf_counter() - start
        return timed


def lightning_epochs(datamodule: NodeDataModule, arch: str, epochs: int, checkpoints: str | None, folder: Path) -> Epochs:
    """``Trainer.fit`` of a ``NodeClassifier`` for ``epochs``; with ``checkpoints`` (a case), best and last written
    to a new folder under ``folder``."""
    run = Path(tempfile.mkdtemp(prefix="run_", dir=folder))
    clock = EpochClock()
    callbacks: list[L.Callback] = [clock]
    if checkpoints == BEFORE:
        callbacks += [ModelCheckpoint(dirpath=run, filename="best", monitor="val/acc", mode="max",
                                      enable_version_counter=False),
                      ModelCheckpoint(dirpath=run, filename="last", enable_version_counter=False)]
    elif checkpoints in (AT_ONCE, BACKGROUND):
        callbacks.append(BestAndLastCheckpoint(run, monitor="val/acc", background=checkpoints == BACKGROUND))
    module = NodeClassifier(datamodule.num_features, datamodule.num_classes, datamodule.graph_info, arch=arch, **MODEL)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=checkpoints is not None, num_sanity_val_steps=0, callbacks=callbacks,
                        default_root_dir=run)
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, datamodule)
    shutil.rmtree(run)
    return clock.epochs()


def main_config(data: dict[str, object], arch: str, epochs: int, run: Path) -> dict[str, object]:
    """A ``main.py fit`` config of the cases' model on ``data`` (a config's ``data`` section) writing into ``run``, as
    the repository's configs set a run up, with :class:`EpochClock` added."""
    optimizer = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01, "weight_decay": 5e-4}}
    return {
        "seed_everything": 0,
        "checkpoint": {"dirpath": str(run / "checkpoints")},
        "trainer": {"max_epochs": epochs, "log_every_n_steps": 1, "default_root_dir": str(run),
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(run / "logs"), "name": "run"}},
                    "callbacks": [{"class_path": CLOCK}]},
        "model": {"class_path": "lightning_modules.node_classifier.NodeClassifier",
                  "init_args": {"arch": arch, **MODEL, "optimizer": optimizer}},
        "data": data,
    }


def main_py_epochs(data: dict[str, object], arch: str, epochs: int, folder: Path) -> Epochs:
    """``main.main(["fit", "--config", ...])`` of the same model: what ``python main.py fit`` runs."""
    import main as framework  # the command line under test

    run = Path(tempfile.mkdtemp(prefix="main_", dir=folder))
    config = run / "config.yaml"
    config.write_text(yaml.safe_dump(main_config(data, arch, epochs, run)))
    with contextlib.redirect_stdout(sys.stderr):
        cli = framework.main(["fit", "--config", str(config)])
    module, _, name = CLOCK.rpartition(".")
    clock_class = getattr(importlib.import_module(module), name)  # the config's class (this file is __main__ under -m)
    (clock,) = [callback for callback in cli.trainer.callbacks if isinstance(callback, clock_class)]  # type: ignore[attr-defined]
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
    return Epochs([b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs], [0.0] * len(pairs))


Result = dict[str, dict[str, dict[str, float]]]


def measure(datamodules: dict[str, tuple[NodeDataModule, str, dict[str, object]]], rounds: int, epochs: int,
            root: Path) -> Result:
    """Per (graph, case): median wall and CPU seconds of an epoch, their ratios to the hand loop (the median over
    rounds of each round's ratio of medians, so load that drifts between rounds cancels out), the median time in
    the checkpoint callbacks, mean checkpoint files and bytes written per epoch; the cases run in turn round after
    round."""
    cases: dict[str, Callable[[NodeDataModule, str, dict[str, object]], Epochs]] = {
        PEER: lambda dm, arch, data: hand_epochs(dm, arch, epochs),
        "Trainer.fit": lambda dm, arch, data: lightning_epochs(dm, arch, epochs, None, root),
        BEFORE: lambda dm, arch, data: lightning_epochs(dm, arch, epochs, BEFORE, root),
        AT_ONCE: lambda dm, arch, data: lightning_epochs(dm, arch, epochs, AT_ONCE, root),
        BACKGROUND: lambda dm, arch, data: lightning_epochs(dm, arch, epochs, BACKGROUND, root),
        MAIN: lambda dm, arch, data: main_py_epochs(data, arch, epochs, root),
    }
    runs: dict[str, dict[str, list[Epochs]]] = {graph: {case: [] for case in cases} for graph in datamodules}
    for _ in range(rounds):
        for graph, (datamodule, arch, data) in datamodules.items():
            for case, run in cases.items():
                torch.manual_seed(0)
                runs[graph][case].append(run(datamodule, arch, data))
    results: Result = {}
    for graph, by_case in runs.items():
        results[graph] = {}
        for case, measured in by_case.items():
            pooled = {key: [x for one in measured for x in getattr(one, key)] for key in ("wall", "cpu", "saving")}
            results[graph][case] = {
                "wall": statistics.median(pooled["wall"]), "cpu": statistics.median(pooled["cpu"]),
                **{f"x_{key}": statistics.median(statistics.median(getattr(one, key)) / statistics.median(getattr(peer, key))
                                                 for one, peer in zip(measured, by_case[PEER])) for key in ("wall", "cpu")},
                "saving": statistics.median(pooled["saving"]),
                "files_per_epoch": statistics.fmean(one.files for one in measured),
                "bytes_per_epoch": statistics.fmean(one.written for one in measured)}
    return results


def markdown(results: Result, rounds: int, epochs: int) -> str:
    lines = [machine_line(machine()), "",
             (f"One full-batch epoch (train step + validation), median over {rounds} rounds x {epochs - 1} epochs; "
              "x hand loop: the median over rounds of each round's ratio; in checkpoint callbacks: median wall ms per "
              "epoch; files and KiB written per epoch: over each fit, mean over rounds"), "",
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
        cora_data = {"class_path": "datamodules.pyg_dataset.PyGDataModule",
                     "init_args": {"dataset": "Planetoid", "dataset_args": {"name": "Cora"}, "root": str(root / "pyg"),
                                   "normalize_features": True}}
        mag_data = {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
                    "init_args": {"root": str(root / "mag"), "hetero": True}}
        cora = PyGDataModule("Planetoid", {"name": "Cora"}, root=str(root / "pyg"), normalize_features=True)
        mag = SyntheticMAGDataModule(root=str(root / "mag"), hetero=True)
        with contextlib.redirect_stdout(sys.stderr):
            mag.setup("fit")
        results = measure({"Cora, GCN 2 x 16": (cora, "gcn", cora_data),
                           "generated MAG, R-GCN 2 x 16": (mag, "rgcn", mag_data)}, args.rounds, args.epochs, root)
    publish(results, markdown(results, args.rounds, args.epochs), args.out)
    return results


if __name__ == "__main__":
    main()
