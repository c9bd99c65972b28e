"""Node-classification scores through OGB's own ``Evaluator`` where one exists."""
from __future__ import annotations

from ogb.nodeproppred import Evaluator
from torch import Tensor


class NodeEvaluator:
    """Score predictions the way the dataset's leaderboard does.

    Args:
        dataset: an OGB name (``ogbn-arxiv``, ``ogbn-mag``, ``ogbn-proteins``, ...)
            to use ``ogb.nodeproppred.Evaluator``; any other name (Planetoid)
            uses plain accuracy, which is what OGB's ``acc`` computes as well.
        task: ``multiclass`` (logits -> argmax) or ``multilabel`` (logits are scores).
    """

    def __init__(self, dataset: str, task: str = "multiclass") -> None:
        self.task = task
        self.ogb = Evaluator(dataset) if dataset.startswith("ogbn-") else None
        self.metric = self.ogb.eval_metric if self.ogb else "acc"

    def predictions(self, logits: Tensor) -> Tensor:
        """What the metric consumes: class ids ``(N, 1)`` (multi-class) or scores ``(N, T)`` (multi-label).

        Keeping these instead of logits makes an epoch's worth cheap to hold (ogbn-mag has 349 classes).
        """
        return logits.argmax(dim=-1, keepdim=True) if self.task == "multiclass" else logits.float()

    def score(self, y_true: Tensor, y_pred: Tensor) -> float:
        """``y_true (N,)`` or ``(N, T)`` against :meth:`predictions` -> the dataset's metric."""
        if self.task == "multiclass":
            y_true = y_true.view(-1, 1)
        if self.ogb is None:
            return (y_pred == y_true).float().mean().item()
        return float(self.ogb.eval({"y_true": y_true.cpu(), "y_pred": y_pred.cpu()})[self.metric])

    def __call__(self, y_true: Tensor, logits: Tensor) -> float:
        """Score logits directly."""
        return self.score(y_true, self.predictions(logits))
