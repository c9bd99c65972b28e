"""How much of a student's update each loss term sends, along training (why ABKD's alignment barely steers).

At the chosen epochs, before the epoch's first step, the module's loss terms (``ce``, ``kd_logit``,
``kd_align``, ...: :func:`graphkd.distill.kd_objective`) are computed on that batch and the norm of the gradient
each term alone sends to the student's parameters is measured. The extra forward runs under a forked random
state, so the training itself is bitwise what it is without this callback. The norms go to the logger
(``gradient/<term>``), to ``gradient_share.json`` in the run's log folder and, at the end, to a Markdown table
on the console.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor


def gradient_norm(term: Tensor, parameters: list[torch.nn.Parameter]) -> float:
    """``||d term / d parameters||`` over all ``parameters`` (unused ones count as zero)."""
    grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), torch.zeros(()))))


class GradientShare(L.Callback):
    """Per-term gradient norms on the student (``pl_module.model``) at ``epochs``.

    Args:
        epochs: the epochs to measure at (before their first optimiser step).
    """

    def __init__(self, epochs: list[int] = [0, 25, 50, 100, 200]) -> None:  # noqa: B006 - read only
        self.epochs = set(epochs)
        self.rows: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx != 0 or trainer.current_epoch not in self.epochs:
            return
        parameters = [p for p in pl_module.model.parameters() if p.requires_grad]
        with torch.random.fork_rng(devices=[]):
            view = pl_module.view(batch)
            terms = pl_module.loss_terms(view, view.run(pl_module.model), view.split_rows("train"))
            norms = {name: gradient_norm(term, parameters) for name, term in terms.items()}
        self.rows.append({"epoch": trainer.current_epoch, **norms})
        for name, value in norms.items():
            pl_module.log(f"gradient/{name}", value, on_step=True, on_epoch=False, batch_size=1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        if trainer.log_dir is not None:
            Path(trainer.log_dir).mkdir(parents=True, exist_ok=True)
            (Path(trainer.log_dir) / "gradient_share.json").write_text(json.dumps(self.rows, indent=1))
        print(markdown_table(self.rows))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One row per measured epoch, one column per term, and the alignment's share of the logit term's gradient."""
    terms = [name for name in rows[0] if name != "epoch"]
    share = {"kd_align", "kd_logit"} <= set(terms)
    lines = ["| epoch | " + " | ".join(terms) + (" | kd_align / kd_logit |" if share else " |"),
             "| ---: |" + " ---: |" * (len(terms) + share)]
    for row in rows:
        ratio = f" {row['kd_align'] / row['kd_logit']:.3f} |" if share else ""
        lines.append(f"| {row['epoch']} | " + " | ".join(f"{row[name]:.4f}" for name in terms) + " |" + ratio)
    return "\n".join(lines)
