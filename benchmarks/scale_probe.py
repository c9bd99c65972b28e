"""A callback that records what a scale benchmark reports of a ``main.py fit`` run, one JSON file per process.

Added to a run with ``--trainer.callbacks+ benchmarks.scale_probe.ScaleProbe --trainer.callbacks.out_dir DIR``
(``benchmarks/partitioned_scale.py`` does so). Each process writes ``DIR/rank<r>.json``:

- ``peak_rss_mb``: the process's peak resident memory (``getrusage``), graph loading included;
- per training epoch: wall seconds from its first to its last training batch's end (validation excluded),
  training steps, seed nodes and sampled nodes (every node of every sampled subgraph, all node types).

It imports Lightning (a callback) and nothing of the project.
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L


class ScaleProbe(L.Callback):
    """Peak memory, training-epoch time and sampled nodes of this process.

    Args:
        out_dir: folder receiving ``rank<r>.json``.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.epochs: list[dict[str, Any]] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append({"seconds": 0.0, "steps": 0, "seeds": 0, "sampled_nodes": 0})
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        epoch = self.epochs[-1]
        epoch["seconds"] = time.perf_counter() - self._start
        epoch["steps"] += 1
        epoch["sampled_nodes"] += int(batch.num_nodes)
        stores = [store for store in batch.node_stores if "batch_size" in store]
        epoch["seeds"] += int(stores[0].batch_size) if stores else int(batch.num_nodes)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size, "peak_rss_mb": peak_kb / 1024,
                  "epochs": self.epochs}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(report, indent=2))
