"""Training a GNN on node classification: the teacher stage and the no-KD student."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data, HeteroData

from graphkd.evaluation import NodeEvaluator
from graphkd.models import RGCN, build_gnn, relation_key
from graphkd.outputs import GNNOutput
from graphkd.parameter_groups import optimizer_groups

SPLITS = ("train", "val", "test")


def target_store(batch: Data | HeteroData, graph_info: dict[str, Any]) -> Any:
    """The node store being classified in ``batch``."""
    hetero = graph_info["hetero"]
    return batch[hetero["target"]] if hetero else batch


def split_rows(batch: Data | HeteroData, graph_info: dict[str, Any], split: str) -> Tensor:
    """Bool mask of the target rows that belong to ``split``.

    A NeighborLoader batch (it has ``batch_size``) holds its seed nodes first,
    all drawn from the split being iterated; a full batch carries split masks.
    """
    store = target_store(batch, graph_info)
    if hasattr(store, "batch_size"):
        rows = torch.zeros(store.num_nodes, dtype=torch.bool, device=store.x.device)
        rows[: store.batch_size] = True
        return rows
    return store[f"{split}_mask"]


def target_node_ids(batch: Data | HeteroData, graph_info: dict[str, Any], rows: Tensor) -> Tensor:
    """Global ids of the target nodes selected by ``rows``: a mini-batch's seeds carry them in ``n_id``."""
    store = target_store(batch, graph_info)
    if hasattr(store, "batch_size"):
        return store.n_id[rows]
    return torch.nonzero(rows).view(-1)


def gather_from_ranks(local: tuple[Tensor, ...] | None) -> list[tuple[Tensor, ...]]:
    """Every rank's tensors (ragged sizes allowed), moved to CPU; ``[local]`` when not distributed.

    ``None`` stands for a rank with nothing to send. Every rank must call this at the same point,
    since under ``torch.distributed`` it is a collective.
    """
    local = None if local is None else tuple(t.detach().cpu() for t in local)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [] if local is None else [local]
    gathered: list[tuple[Tensor, ...] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return [item for item in gathered if item is not None]


def first_occurrences(node_id: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct id, in ascending id order.

    A ``DistributedSampler`` pads every rank to the same length by repeating seeds, and under
    full-batch DDP every rank scores every node; keeping one row per node stops double counting.
    """
    unique, inverse = torch.unique(node_id, return_inverse=True)
    positions = torch.arange(node_id.numel(), device=node_id.device)
    first = torch.full((unique.numel(),), node_id.numel(), dtype=torch.long, device=node_id.device)
    return first.scatter_reduce_(0, inverse, positions, reduce="amin")


def freeze_unreachable(model: torch.nn.Module, graph_info: dict[str, Any]) -> None:
    """Freeze the R-GCN parameters that cannot reach the target type's logits (no-op for other models).

    The R-GCN updates every node type in every layer, but only the target's last output is used:
    the last layer's other types, and whatever feeds only them, never get a gradient. Training is
    the same with them frozen, and DDP then needs no ``find_unused_parameters`` (which would
    otherwise be required, at the cost of an extra autograd traversal per step).
    """
    hetero = graph_info["hetero"]
    if not isinstance(model, RGCN) or not hetero:
        return
    edge_types = [tuple(e) for e in hetero["edge_types"]]
    needed = {hetero["target"]}  # types whose output of the current layer reaches the logits
    used: set[str] = set()
    for layer in reversed(range(len(model.convs))):
        into_needed = [e for e in edge_types if e[2] in needed]
        used |= {f"convs.{layer}.root.{t}." for t in needed}
        used |= {f"convs.{layer}.relation.{relation_key(e)}." for e in into_needed}
        needed = needed | {e[0] for e in into_needed}
    used |= {f"embeddings.{t}." for t in needed}
    for name, parameter in model.named_parameters():
        if not any(name.startswith(prefix) for prefix in used):
            parameter.requires_grad_(False)


def run_gnn(model: torch.nn.Module, batch: Data | HeteroData, graph_info: dict[str, Any]) -> GNNOutput:
    """Call a homogeneous GNN or the R-GCN on a full graph or a sampled subgraph."""
    hetero = graph_info["hetero"]
    if not hetero:
        return model(batch.x, batch.edge_index)
    sampled = hasattr(batch[hetero["target"]], "batch_size")
    node_ids = {t: batch[t].n_id for t in batch.node_types} if sampled else None
    num_nodes = {t: batch[t].num_nodes for t in batch.node_types}
    return model(batch.x_dict, batch.edge_index_dict, node_ids=node_ids, num_nodes=num_nodes)


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
        lr: Adam learning rate.
        weight_decay: Adam weight decay (parts of a model may set their own, e.g. GCNII's ``conv_weight_decay``).
        arch_options: further keyword arguments of the architecture (GCNII: ``alpha``, ``lamda``, ``conv_weight_decay``).
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        graph_info: dict[str, Any],
        arch: str = "gcn",
        hidden_channels: int = 64,
        num_layers: int = 2,
        dropout: float = 0.5,
        heads: int = 4,
        norm: bool = False,
        lr: float = 0.01,
        weight_decay: float = 5e-4,
        arch_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.graph_info = graph_info
        self.model = build_gnn(arch, num_features, hidden_channels, num_classes, num_layers, dropout, heads, norm,
                               graph_info["hetero"], arch_options)
        freeze_unreachable(self.model, graph_info)
        self.evaluator = NodeEvaluator(graph_info["dataset"], graph_info["task"])
        # per split: (node ids, labels, predictions) of every step since the last metric
        self._epoch_outputs: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {s: [] for s in SPLITS}

    @property
    def multilabel(self) -> bool:
        return self.graph_info["task"] == "multilabel"

    def forward(self, batch: Data | HeteroData) -> GNNOutput:
        return run_gnn(self.model, batch, self.graph_info)

    def task_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy (multi-class) or binary cross-entropy (multi-label), in fp32."""
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def loss_terms(self, batch: Data | HeteroData, output: GNNOutput, rows: Tensor) -> dict[str, Tensor]:
        """Named loss terms summed into the training loss; distillation adds its own."""
        labels = target_store(batch, self.graph_info).y
        return {"ce": self.task_loss(output.logits[rows], labels[rows])}

    def training_step(self, batch: Data | HeteroData, batch_idx: int) -> Tensor:
        output = self(batch)
        rows = split_rows(batch, self.graph_info, "train")
        terms = self.loss_terms(batch, output, rows)
        loss = torch.stack(list(terms.values())).sum()
        batch_size = int(rows.sum())
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value, batch_size=batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self._collect("train", batch, output, rows)
        return loss

    def _collect(self, split: str, batch: Data | HeteroData, output: GNNOutput, rows: Tensor) -> None:
        labels = target_store(batch, self.graph_info).y
        self._epoch_outputs[split].append((target_node_ids(batch, self.graph_info, rows), labels[rows].detach(),
                                           self.evaluator.predictions(output.logits[rows].detach())))

    def log_rank_invariant(self, name: str, value: float | Tensor, prog_bar: bool = False) -> None:
        """Log a value that every rank computed identically (a score of gathered predictions, a parameter count).

        ``sync_dist`` only averages equal values here; it keeps every rank's copy bitwise equal for
        checkpoint and early-stopping decisions and Lightning's epoch-level DDP warning quiet.
        """
        self.log(name, value, prog_bar=prog_bar, sync_dist=True)

    def _evaluation_step(self, batch: Data | HeteroData, splits: tuple[str, ...]) -> None:
        output = self(batch)
        labels = target_store(batch, self.graph_info).y
        for split in splits:
            rows = split_rows(batch, self.graph_info, split)
            self._collect(split, batch, output, rows)
            self.log(f"{split}/loss", self.task_loss(output.logits[rows], labels[rows]), batch_size=int(rows.sum()),
                     add_dataloader_idx=False, sync_dist=True)

    def validation_step(self, batch: Data | HeteroData, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Validation rows, and test rows too so the test metric is logged every epoch (never used for selection).

        A full batch holds both splits; mini-batches come from two loaders (val, test).
        """
        full_batch = not hasattr(target_store(batch, self.graph_info), "batch_size")
        self._evaluation_step(batch, ("val", "test") if full_batch else (("val", "test")[dataloader_idx],))

    def test_step(self, batch: Data | HeteroData, batch_idx: int) -> None:
        self._evaluation_step(batch, ("test",))

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
        store = target_store(batch, self.graph_info)
        output = self(batch)
        if hasattr(store, "batch_size"):
            node_id, logits = store.n_id[: store.batch_size], output.logits[: store.batch_size]
        else:
            node_id, logits = torch.arange(store.num_nodes, device=output.logits.device), output.logits
        prediction = torch.sigmoid(logits.float()) if self.multilabel else logits.argmax(-1)
        return {"node_id": node_id, "prediction": prediction}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(optimizer_groups(self), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

