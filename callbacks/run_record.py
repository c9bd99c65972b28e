"""``record.json``: what a fit did, in one small file a report can read without TensorBoard or the checkpoints.

Per validation epoch the monitored and the other scalar metrics (``val/acc``, ``test/acc``, losses), the epoch
the monitored metric was best at (the first such epoch, as ``ModelCheckpoint`` keeps it), the metrics there, the
learned attention there (for distillers that have one), the parameter counts, why the fit stopped, its wall time,
and the validation split's majority-class share (what "did not train" is judged against). Written once, at the
end of a fit that ran to its stopping rule, by rank zero and atomically: a run folder holding ``record.json``
holds a finished run.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from foundation.files import atomic_paths

RECORD_FILE = "record.json"


class RunRecord(L.Callback):
    """Writes ``dirpath/record.json`` when a fit ends.

    Args:
        dirpath: the run folder.
        monitor: the metric the best epoch is chosen by (the checkpoint policy's).
        mode: ``max`` or ``min``.
    """

    def __init__(self, dirpath: str, monitor: str = "val/acc", mode: Literal["max", "min"] = "max") -> None:
        self.path = Path(dirpath) / RECORD_FILE
        self.monitor = monitor
        self.mode = mode
        self.history: dict[str, list[float]] = {}
        self.best_epoch: int | None = None
        self.attention: list[list[float]] | None = None
        self.parameters: dict[str, float] = {}
        self.started = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
                   if isinstance(value, torch.Tensor) and value.numel() == 1 and not name.startswith("params/")}
        epoch = len(next(iter(self.history.values()), []))
        for name, value in metrics.items():
            self.history.setdefault(name, [math.nan] * epoch).append(value)
        for name in set(self.history) - set(metrics):
            self.history[name].append(math.nan)
        score = metrics.get(self.monitor)
        if score is not None and (self.best_epoch is None or self._better(score, self.history[self.monitor][self.best_epoch])):
            self.best_epoch = epoch
            scores = getattr(getattr(pl_module, "distiller", None), "attention_scores", lambda: None)()
            self.attention = scores.detach().float().cpu().tolist() if scores is not None else None

    def _better(self, score: float, best: float) -> bool:
        return score > best if self.mode == "max" else score < best

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.parameters |= {name.removeprefix("params/"): float(value) for name, value in trainer.callback_metrics.items()
                            if name.startswith("params/")}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.interrupted or not trainer.is_global_zero:
            return
        record = {
            "monitor": self.monitor, "mode": self.mode, "best_epoch": self.best_epoch,
            "at_best": {name: values[self.best_epoch] for name, values in self.history.items()}
            if self.best_epoch is not None else {},
            "epochs": trainer.current_epoch, "max_epochs": trainer.max_epochs, "stopped": stop_reason(trainer),
            "seconds": time.perf_counter() - self.started, "parameters": self.parameters,
            "majority_share": majority_share(trainer), "attention": self.attention, "history": self.history,
        }
        with atomic_paths(self.path) as (temporary,):
            temporary.write_text(json.dumps(record, indent=1))


def stop_reason(trainer: L.Trainer) -> str:
    """``early_stopping`` (a stopping callback ended the fit), ``max_epochs``, ``max_steps`` or ``other``."""
    if any(getattr(callback, "stopped_epoch", 0) > 0 for callback in trainer.early_stopping_callbacks):
        return "early_stopping"
    if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch:
        return "max_epochs"
    if 0 <= trainer.max_steps <= trainer.global_step:
        return "max_steps"
    return "other"


def majority_share(trainer: L.Trainer) -> float | None:
    """The share of the validation split's most frequent class (None for multi-label or unknown data)."""
    store = getattr(getattr(trainer, "datamodule", None), "target_store", None)
    labels, mask = getattr(store, "y", None), getattr(store, "val_mask", None)
    if labels is None or mask is None or labels.dim() != 1 or not bool(mask.any()):
        return None
    return float(torch.bincount(labels[mask]).max()) / int(mask.sum())


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The run folder's record, or None when the run has not finished."""
    path = Path(folder) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None
