"""Stage 2: a student GNN trained with the task loss plus a KD method, from a teacher checkpoint."""
from __future__ import annotations

import inspect
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData

from graphkd.distill import DistillContext, DistillerFactory, LogitKD
from graphkd.models import count_parameters
from graphkd.outputs import GNNOutput
from lightning_modules.node_classifier import NodeClassifier, freeze_unreachable, run_gnn, target_store
from foundation.errors import InputError


class TeacherCheckpointError(InputError, ValueError):
    """The teacher checkpoint cannot serve this student: the message says why and what to do."""


def load_teacher(path: str, num_features: int, num_classes: int, graph_info: dict[str, Any]) -> NodeClassifier:
    """Rebuild a :class:`NodeClassifier` from its Lightning checkpoint, checking it fits this dataset."""
    if not path:
        raise TeacherCheckpointError(
            "teacher_checkpoint is empty: train a teacher first (e.g. python main.py fit --config configs/abkd_demo_teacher.yaml) "
            "and pass its .ckpt file as model.init_args.teacher_checkpoint"
        )
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"teacher checkpoint {file} does not exist; train a teacher first or fix the path")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)  # tensors and plain types: no code runs
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise TeacherCheckpointError(f"{file} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from error
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    init_names = [n for n in inspect.signature(NodeClassifier.__init__).parameters if n != "self"]
    if "state_dict" not in checkpoint or "arch" not in hparams or "teacher_checkpoint" in hparams:
        raise TeacherCheckpointError(
            f"{file} is not a teacher (NodeClassifier) checkpoint: it lacks its architecture hyper-parameters "
            "or is a distilled student; pass the .ckpt written by a teacher run"
        )
    if hparams["num_features"] != num_features or hparams["num_classes"] != num_classes:
        raise TeacherCheckpointError(
            f"teacher {file} was trained on {hparams['graph_info'].get('dataset')} with {hparams['num_features']} features "
            f"and {hparams['num_classes']} classes, but this data has {num_features} features and {num_classes} classes"
        )
    if bool(hparams["graph_info"]["hetero"]) != bool(graph_info["hetero"]):
        raise TeacherCheckpointError(f"teacher {file} and the data disagree on heterogeneity (hetero graph vs homogeneous)")
    teacher = NodeClassifier(**{k: hparams[k] for k in init_names if k in hparams})
    try:
        teacher.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise TeacherCheckpointError(
            f"the weights in {file} do not match the architecture its hyper-parameters describe "
            f"({hparams['arch']}, {hparams['num_layers']} layers x {hparams['hidden_channels']}): {str(error)[:400]}"
        ) from error
    return teacher


class DistillationModule(NodeClassifier):
    """A student trained with ``ce_weight * CE + sum(KD terms)`` against a teacher.

    The student's architecture arguments are those of :class:`NodeClassifier`;
    the teacher's come from its checkpoint.

    Args:
        num_features: input feature width (linked from the datamodule).
        num_classes: classes or tasks (linked from the datamodule).
        graph_info: dataset facts (linked from the datamodule).
        teacher_checkpoint: path of the teacher's Lightning ``.ckpt`` (stage 1).
        distiller: the KD method (class_path/init_args); ``NoKD`` for the plain student.
        ce_weight: weight of the student's task loss.
        train_teacher: train the teacher jointly (its own task loss added) instead of freezing it.
        distill_nodes: ``train`` distils on labelled training rows only; ``all`` on every row in the batch.
        arch: student architecture.
        hidden_channels: student hidden width.
        num_layers: student depth; at most the teacher's.
        dropout: student dropout.
        heads: student GAT heads.
        norm: student BatchNorm.
        lr: Adam learning rate (student, KD parameters and a jointly trained teacher).
        weight_decay: Adam weight decay.
        arch_options: further keyword arguments of the student architecture.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        graph_info: dict[str, Any],
        teacher_checkpoint: str = "",
        distiller: DistillerFactory = LogitKD,
        ce_weight: float = 1.0,
        train_teacher: bool = False,
        distill_nodes: str = "train",
        arch: str = "gcn",
        hidden_channels: int = 16,
        num_layers: int = 2,
        dropout: float = 0.5,
        heads: int = 4,
        norm: bool = False,
        lr: float = 0.01,
        weight_decay: float = 5e-4,
        arch_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_features, num_classes, graph_info, arch, hidden_channels, num_layers, dropout, heads, norm,
                         lr, weight_decay, arch_options)
        self.save_hyperparameters(ignore=["distiller"])
        if distill_nodes not in ("train", "all"):
            raise ValueError(f"distill_nodes must be 'train' or 'all', got {distill_nodes!r}")
        teacher = load_teacher(teacher_checkpoint, num_features, num_classes, graph_info)
        if num_layers > teacher.model.num_layers:
            raise ValueError(
                f"the student has {num_layers} layers but the teacher only {teacher.model.num_layers}: "
                "a student must not be deeper than its teacher; lower model.init_args.num_layers"
            )
        self.teacher = teacher.model
        self.teacher.requires_grad_(train_teacher)
        freeze_unreachable(self.teacher, graph_info)
        self.teacher.train(train_teacher)
        self.distiller = distiller(list(self.model.layer_dims), list(self.teacher.layer_dims))

    def train(self, mode: bool = True) -> "DistillationModule":
        """Keep a frozen teacher in eval mode (no dropout, fixed BatchNorm) while the student trains."""
        super().train(mode)
        if not self.hparams.train_teacher:
            self.teacher.eval()
        return self

    def teacher_output(self, batch: Data | HeteroData) -> GNNOutput:
        if self.hparams.train_teacher:
            return run_gnn(self.teacher, batch, self.graph_info)
        with torch.no_grad():
            return run_gnn(self.teacher, batch, self.graph_info)

    def target_edges(self, batch: Data | HeteroData) -> Tensor:
        """Edges between target rows (for structure-preserving KD): homogeneous edges or target->target relations."""
        hetero = self.graph_info["hetero"]
        if not hetero:
            return batch.edge_index
        target = hetero["target"]
        edges = [batch[e].edge_index for e in batch.edge_types if e[0] == target and e[2] == target]
        return torch.cat(edges, dim=1) if edges else torch.empty(2, 0, dtype=torch.long, device=self.device)

    def loss_terms(self, batch: Data | HeteroData, output: GNNOutput, rows: Tensor) -> dict[str, Tensor]:
        terms = super().loss_terms(batch, output, rows)
        terms["ce"] = self.hparams.ce_weight * terms["ce"]
        teacher = self.teacher_output(batch)
        labels = target_store(batch, self.graph_info).y
        if self.hparams.train_teacher:
            terms["teacher_ce"] = self.task_loss(teacher.logits[rows], labels[rows])
        mask = rows if self.hparams.distill_nodes == "train" else torch.ones_like(rows)
        context = DistillContext(mask=mask, edge_index=self.target_edges(batch), labels=labels, multilabel=self.multilabel)
        terms.update(self.distiller(output, teacher, context))
        return terms

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        student, teacher = count_parameters(self.model), count_parameters(self.teacher)
        # the same on every rank; sync_dist averages equal values (see NodeClassifier.log_rank_invariant)
        self.log_dict({"params/student": float(student), "params/teacher": float(teacher),
                       "params/compression_ratio": teacher / student}, sync_dist=True)
