"""Training a GNN on node classification: the teacher stage and the no-KD student."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torch_geometric.data import Data, HeteroData

from graphkd.distributed import first_occurrences, gather_from_ranks
from graphkd.evaluation import NodeEvaluator
from graphkd.graph_info import GraphInfo
from graphkd.models import RGCN, build_gnn
from graphkd.node_batch import NodeBatch
from graphkd.outputs import GNNOutput
from graphkd.parameter_groups import optimizer_groups

SPLITS = ("train", "val", "test")


def adam(params: Iterable[Tensor]) -> torch.optim.Optimizer:
    """The default optimizer: Adam, learning rate 0.01, weight decay 5e-4."""
    return torch.optim.Adam(params, lr=0.01, weight_decay=5e-4)


class NodeClassifier(L.LightningModule):
    """A GNN trained with the task loss alone; its checkpoint is a teacher for distillation.

    Args:
        num_features: input feature width (linked from the datamodule).
        num_classes: classes or tasks (linked from the datamodule).
        graph_info: dataset facts (linked from the datamodule): name, task, hetero schema.
        arch: ``gcn``, ``sage``, ``gat``, ``mlp``, ``gcnii`` or ``rgcn`` (heterogeneous ogbn-mag).
        hidden_channels: hidden width (per head for GAT).
        num_layers: number of message-passing layers.
        dropout: dropout on each layer's input.
        heads: attention heads of GAT hidden layers.
        norm: BatchNorm after each hidden layer.
        arch_options: further keyword arguments of the architecture (GCNII: ``alpha``, ``lamda``,
            ``conv_weight_decay``).
        optimizer: builds the optimizer from the trainable parameters, given as groups (parts of a model may set
            their own weight decay, e.g. GCNII's); in YAML ``{class_path: torch.optim.Adam, init_args: {lr: 0.01, weight_decay: 5.0e-4}}`` (the default).
    """

    UNSAVED_ARGUMENTS: tuple[str, ...] = ("graph_info", "optimizer")
    """Arguments kept out of the checkpoint's hyper-parameters, which hold plain types only (read back with
    ``weights_only=True``); ``graph_info`` is stored as :meth:`GraphInfo.as_dict` instead."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        graph_info: GraphInfo,
        arch: str = "gcn",
        hidden_channels: int = 64,
        num_layers: int = 2,
        dropout: float = 0.5,
        heads: int = 4,
        norm: bool = False,
        arch_options: dict[str, Any] | None = None,
        optimizer: OptimizerCallable = adam,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self.UNSAVED_ARGUMENTS))  # a subclass's arguments too
        self.hparams["graph_info"] = graph_info.as_dict()
        self.graph_info = graph_info
        self.build_optimizer = optimizer
        self.model = build_gnn(arch, num_features, hidden_channels, num_classes, num_layers, dropout, heads, norm,
                               graph_info.hetero, arch_options)
        if isinstance(self.model, RGCN):
            self.model.freeze_unreachable()
        self.evaluator = NodeEvaluator(graph_info.dataset, graph_info.task)
        # per split: (node ids, labels, predictions) of every step since the last metric
        self._epoch_outputs: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {s: [] for s in SPLITS}

    @property
    def multilabel(self) -> bool:
        return self.graph_info.task == "multilabel"

    def view(self, batch: Data | HeteroData) -> NodeBatch:
        """The batch's classified nodes, labels, splits and ids, resolved once per step."""
        return NodeBatch.of(batch, self.graph_info)

    def forward(self, batch: Data | HeteroData) -> GNNOutput:
        return self.view(batch).run(self.model)

    def task_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy (multi-class) or binary cross-entropy (multi-label), in fp32."""
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def loss_terms(self, batch: NodeBatch, output: GNNOutput, rows: Tensor) -> dict[str, Tensor]:
        """Named loss terms summed into the training loss; distillation adds its own."""
        return {"ce": self.task_loss(output.logits[rows], batch.labels[rows])}

    def training_step(self, batch: Data | HeteroData, batch_idx: int) -> Tensor:
        view = self.view(batch)
        output = view.run(self.model)
        rows = view.split_rows("train")
        terms = self.loss_terms(view, output, rows)
        loss = torch.stack(list(terms.values())).sum()
        batch_size = self.row_count(view, rows)
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value, batch_size=batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self._collect("train", view, output, rows)
        return loss

    @staticmethod
    def row_count(view: NodeBatch, rows: Tensor) -> int:
        """How many rows the bool mask ``rows`` selects: a sampled batch's seed count (known on the host, so no
        device sync per step), else the mask's sum."""
        return view.seed_count if view.seed_count is not None else int(rows.sum())

    def _collect(self, split: str, view: NodeBatch, output: GNNOutput, rows: Tensor) -> None:
        self._epoch_outputs[split].append((view.node_ids(rows), view.labels[rows].detach(),
                                           self.evaluator.predictions(output.logits[rows].detach())))

    def log_rank_invariant(self, name: str, value: float | Tensor, prog_bar: bool = False) -> None:
        """Log a value that every rank computed identically (a score of gathered predictions, a parameter count).

        ``sync_dist`` only averages equal values here; it keeps every rank's copy bitwise equal for
        checkpoint and early-stopping decisions and Lightning's epoch-level DDP warning quiet.
        """
        self.log(name, value, prog_bar=prog_bar, sync_dist=True)

    def _evaluation_step(self, view: NodeBatch, splits: tuple[str, ...]) -> None:
        output = view.run(self.model)
        for split in splits:
            rows = view.split_rows(split)
            self._collect(split, view, output, rows)
            self.log(f"{split}/loss", self.task_loss(output.logits[rows], view.labels[rows]), batch_size=self.row_count(view, rows),
                     add_dataloader_idx=False, sync_dist=True)

    def validation_step(self, batch: Data | HeteroData, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Validation rows, and test rows too so the test metric is logged every epoch (never used for selection).

        A full batch holds both splits; mini-batches come from two loaders (val, test).
        """
        view = self.view(batch)
        self._evaluation_step(view, (("val", "test")[dataloader_idx],) if view.sampled else ("val", "test"))

    def test_step(self, batch: Data | HeteroData, batch_idx: int) -> None:
        self._evaluation_step(self.view(batch), ("test",))

    def _log_metric(self, split: str) -> None:
        """Score the epoch's predictions of all ranks, one row per node, with the dataset's evaluator.

        Under DDP every rank gathers every rank's rows (a collective: all ranks call this together),
        drops the rows of nodes seen twice (sampler padding, full-batch replicas) and computes the
        same score, so no node is counted twice and all ranks log the same number.
        """
        outputs = self._epoch_outputs[split]
        self._epoch_outputs[split] = []
        local = tuple(torch.cat(parts) for parts in zip(*outputs)) if outputs else None
        gathered = gather_from_ranks(local)
        if not gathered:
            return
        node_id, labels, predictions = (torch.cat(parts) for parts in zip(*gathered))
        keep = first_occurrences(node_id)
        score = self.evaluator.score(labels[keep], predictions[keep])
        self.log_rank_invariant(f"{split}/{self.evaluator.metric}", score, prog_bar=split != "train")

    def on_train_epoch_end(self) -> None:
        self._log_metric("train")

    def on_validation_epoch_end(self) -> None:
        self._log_metric("val")
        self._log_metric("test")

    def on_test_epoch_end(self) -> None:
        self._log_metric("test")

    def predict_step(self, batch: Data | HeteroData, batch_idx: int) -> dict[str, Tensor]:
        """Predicted class (multi-class) or task probabilities (multi-label) of every target node, with global ids."""
        view = self.view(batch)
        logits = view.run(self.model).logits[view.seed_rows()]
        prediction = torch.sigmoid(logits.float()) if self.multilabel else logits.argmax(-1)
        return {"node_id": view.seed_node_ids(), "prediction": prediction}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The injected optimizer over every trainable parameter (the model's, and a subclass's own, e.g. KD's)."""
        return self.build_optimizer(optimizer_groups(self))
