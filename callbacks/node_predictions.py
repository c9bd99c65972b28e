"""Write ``main.py predict`` node predictions to a CSV file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from foundation.files import atomic_paths
from graphkd.distributed import first_occurrences, gather_from_ranks


class NodePredictionWriter(BasePredictionWriter):
    """Collect every predict batch and write ``node_id,prediction`` rows (sorted by node id).

    Under DDP each rank predicts its share of the nodes; the shares are gathered, a node
    predicted twice (sampler padding, full-batch replicas) is written once, and rank 0 writes
    the file (through a temporary file, so a reader never sees half of it).

    Args:
        output_file: CSV path; relative paths go into the run's log dir.
    """

    def __init__(self, output_file: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        local = (torch.cat([b["node_id"] for b in batches]), torch.cat([b["prediction"] for b in batches])) if batches else None
        gathered = gather_from_ranks(local)
        path = Path(self.output_file)
        if not path.is_absolute():  # trainer.log_dir is a broadcast: every rank asks
            path = Path(trainer.log_dir or trainer.default_root_dir) / path
        if trainer.is_global_zero and gathered:
            self._write_csv(path, *(torch.cat(parts) for parts in zip(*gathered)))
        trainer.strategy.barrier()  # the file exists on every rank's return

    @staticmethod
    def _write_csv(path: Path, node_id: Tensor, prediction: Tensor) -> None:
        """One row per node in ascending id order: a class id, or one score column per task."""
        order = first_occurrences(node_id)
        columns = prediction.view(len(node_id), -1)[order]
        header = "node_id," + ",".join(["prediction"] if columns.shape[1] == 1 else [f"task_{i}" for i in range(columns.shape[1])])
        lines = [header] + [f"{n}," + ",".join(f"{v:g}" for v in row.tolist()) for n, row in zip(node_id[order].tolist(), columns)]
        with atomic_paths(path) as (temporary,):
            temporary.write_text("\n".join(lines) + "\n")
