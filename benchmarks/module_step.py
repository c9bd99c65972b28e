"""One training step of a LightningModule's own objective, for the timing scripts."""
from __future__ import annotations

from typing import Any

import torch

from lightning_modules.node_classifier import NodeClassifier


class ModuleStep:
    """One optimiser step of a module's own objective: the loss terms its ``training_step`` sums
    (:func:`graphkd.distill.kd_objective` for a student), backward, its configured optimizer. Outside a Trainer,
    so that a KD step's cost is timed without the loop around it."""

    def __init__(self, module: NodeClassifier) -> None:
        self.module = module.train()
        self.optimizer = module.configure_optimizers()

    def __call__(self, batch: Any) -> None:
        view = self.module.view(batch)
        terms = self.module.loss_terms(view, view.run(self.module.model), view.split_rows("train"))
        self.optimizer.zero_grad(set_to_none=True)
        torch.stack(list(terms.values())).sum().backward()
        self.optimizer.step()
