"""Write ``main.py predict`` node predictions to a CSV file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class NodePredictionWriter(BasePredictionWriter):
    """Collect every predict batch and write ``node_id,prediction`` rows (sorted by node id).

    Args:
        output_file: CSV path; relative paths go into the run's log dir.
    """

    def __init__(self, output_file: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        node_id = torch.cat([b["node_id"] for b in batches]).cpu()
        prediction = torch.cat([b["prediction"] for b in batches]).cpu()
        order = torch.argsort(node_id)
        path = Path(self.output_file)
        if not path.is_absolute():
            path = Path(trainer.log_dir or trainer.default_root_dir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = prediction.view(len(node_id), -1)[order]
        header = "node_id," + ",".join(["prediction"] if columns.shape[1] == 1 else [f"task_{i}" for i in range(columns.shape[1])])
        lines = [header] + [f"{n}," + ",".join(f"{v:g}" for v in row.tolist()) for n, row in zip(node_id[order].tolist(), columns)]
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)
