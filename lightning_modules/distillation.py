"""Stage 2: a student GNN trained with the task loss plus a KD method, from a teacher checkpoint."""
from __future__ import annotations

import copy
import hashlib
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from foundation.checkpoints import MissingFileError, load_checkpoint
from foundation.errors import InputError
from graphkd.distill import DistillContext, DistillerFactory, LogitKD, kd_objective
from graphkd.graph_info import GraphInfo
from graphkd.models import RGCN, build_gnn, count_parameters, widest_within
from graphkd.node_batch import NodeBatch
from graphkd.outputs import GNNOutput
from graphkd.teacher_cache import FrozenTeacherCache
from lightning_modules.node_classifier import NodeClassifier

TEACHER_REFERENCE_KEY = "teacher_reference"
"""Key of a student checkpoint's ``{"path", "sha256"}`` of its frozen teacher's file (stored instead of its weights)."""


class TeacherCheckpointError(InputError, ValueError):
    """The teacher checkpoint cannot serve this student: the message says why and what to do."""


class TeacherOptionError(InputError, ValueError):
    """A teacher option this run's data cannot honour (e.g. ``teacher_on_full_graph`` without a whole graph)."""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks; :class:`MissingFileError` if there is no file."""
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"teacher checkpoint {file} does not exist; restore it or fix the path")
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: str | Path, error: type[Exception] = TeacherCheckpointError) -> tuple[dict[str, Any], dict[str, Any]]:
    """A NodeClassifier's Lightning checkpoint and its hyper-parameters, read with ``weights_only=True`` (no code runs).

    Every way the file can be unusable raises ``error`` (a missing file :class:`MissingFileError`).
    """
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"checkpoint {file} does not exist; train a teacher first or fix the path")
    checkpoint = load_checkpoint(file, error, "Lightning checkpoint")
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "state_dict" not in checkpoint or not {"arch", "graph_info"} <= set(hparams):
        raise error(f"{file} is not a NodeClassifier checkpoint: it lacks its architecture hyper-parameters; "
                    "pass the .ckpt written by a teacher run")
    return checkpoint, hparams


def build_classifier(path: str | Path, checkpoint: dict[str, Any], hparams: dict[str, Any],
                     error: type[Exception] = TeacherCheckpointError) -> NodeClassifier:
    """The network a checkpoint's hyper-parameters describe, with the checkpoint's ``model.*`` weights."""
    try:
        graph_info = GraphInfo.from_dict(hparams["graph_info"])
    except (KeyError, TypeError, ValueError) as failure:
        raise error(f"{path} holds an incomplete graph_info hyper-parameter ({type(failure).__name__}: {failure}); "
                    "pass the .ckpt written by a teacher run of this framework") from failure
    names = set(inspect.signature(NodeClassifier.__init__).parameters) - {"self", "graph_info"}
    classifier = NodeClassifier(graph_info=graph_info, **{k: hparams[k] for k in names if k in hparams})
    weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        classifier.load_state_dict(weights, strict=True)
    except RuntimeError as failure:
        raise error(
            f"the weights in {path} do not match the architecture its hyper-parameters describe "
            f"({hparams['arch']}, {hparams['num_layers']} layers x {hparams['hidden_channels']}): {str(failure)[:400]}"
        ) from failure
    return classifier


def read_classifier(path: str | Path, error: type[Exception] = TeacherCheckpointError) -> tuple[NodeClassifier, dict[str, Any]]:
    """The :class:`NodeClassifier` of a teacher's (or a distilled student's) Lightning checkpoint, and its hyper-parameters.

    The network is rebuilt from the checkpoint's hyper-parameters and gets its ``model.*`` weights, so a
    student's checkpoint gives the student.
    """
    checkpoint, hparams = read_checkpoint(path, error)
    return build_classifier(path, checkpoint, hparams, error), hparams


def load_teacher(path: str, num_features: int, num_classes: int, graph_info: GraphInfo) -> NodeClassifier:
    """Rebuild a :class:`NodeClassifier` from its Lightning checkpoint, checking first that it fits this dataset."""
    if not path:
        raise TeacherCheckpointError(
            "teacher_checkpoint is empty: train a teacher first (e.g. python main.py fit --config configs/abkd_demo_teacher.yaml) "
            "and pass its .ckpt file as model.init_args.teacher_checkpoint"
        )
    checkpoint, hparams = read_checkpoint(path)
    if "teacher_checkpoint" in hparams:
        raise TeacherCheckpointError(f"{path} is a distilled student's checkpoint, not a teacher's; "
                                     "pass the .ckpt written by a teacher run")
    if hparams.get("num_features") != num_features or hparams.get("num_classes") != num_classes:
        dataset = hparams["graph_info"].get("dataset") if isinstance(hparams["graph_info"], dict) else None
        raise TeacherCheckpointError(
            f"teacher {path} was trained on {dataset} with {hparams.get('num_features')} features "
            f"and {hparams.get('num_classes')} classes, but this data has {num_features} features and {num_classes} classes"
        )
    teacher = build_classifier(path, checkpoint, hparams)
    if (teacher.graph_info.hetero is None) != (graph_info.hetero is None):
        raise TeacherCheckpointError(f"teacher {path} and the data disagree on heterogeneity (hetero graph vs homogeneous)")
    return teacher


def student_width(compression: float, teacher_parameters: int, num_features: int, num_classes: int,
                  graph_info: GraphInfo, student: dict[str, Any]) -> int:
    """The widest student of the given arguments (``NodeClassifier``'s defaults for the rest) with at most
    ``teacher_parameters / compression`` parameters."""
    if compression < 1:
        raise ValueError(f"compression must be at least 1 (teacher parameters / student parameters), got {compression}")
    options = {name: parameter.default for name, parameter in inspect.signature(NodeClassifier.__init__).parameters.items()
               if parameter.default is not inspect.Parameter.empty} | student
    return widest_within(int(teacher_parameters / compression), lambda width: build_gnn(
        options["arch"], num_features, width, num_classes, options["num_layers"], options["dropout"], options["heads"],
        options["norm"], graph_info.hetero, options["arch_options"]))


class DistillationModule(NodeClassifier):
    """A student trained with ``ce_weight * CE + sum(KD terms)`` against a teacher.

    The student is a :class:`NodeClassifier`: its arguments (``arch``, ``hidden_channels``,
    ``num_layers``, ``dropout``, ``heads``, ``norm``, ``optimizer``) are that class's, given
    beside these; the optimizer also trains the KD method's own parameters and a jointly trained
    teacher. The teacher's architecture comes from its checkpoint.

    Args:
        num_features: input feature width (linked from the datamodule).
        num_classes: classes or tasks (linked from the datamodule).
        graph_info: dataset facts (linked from the datamodule).
        teacher_checkpoint: path of the teacher's Lightning ``.ckpt`` (stage 1).
        distiller: the KD method (class_path/init_args); ``NoKD`` for the plain student.
        ce_weight: weight of the student's task loss.
        train_teacher: train the teacher jointly (its own task loss added) instead of freezing it.
        distill_nodes: ``train`` distils on labelled training rows only; ``all`` on every row in the batch.
        cache_teacher: reuse a frozen (eval-mode) teacher's outputs while the full-batch graph and the teacher's
            weights are unchanged (computed once, kept on the device); exact: training is bitwise the same as
            without it. Never used with ``train_teacher``. Off saves the outputs' memory.
        teacher_on_full_graph: for mini-batches, run the frozen teacher once on the whole graph (where it fits)
            and give each batch the rows of its nodes (``n_id``). This changes what is distilled: the
            teacher's full-neighbourhood outputs instead of its outputs on the sampled subgraph.
        compression: size the student by compression ratio instead of ``hidden_channels``: its width is the
            widest whose parameter count is at most the teacher's divided by this (the paper's "32.3x"); the
            chosen width is what the checkpoint records as ``hidden_channels``. None: use ``hidden_channels``.
        student: the student's :class:`NodeClassifier` arguments; its ``num_layers`` is at most the teacher's.

    A frozen teacher is not stored in the student's checkpoints: they hold its file's path and SHA-256
    (``teacher_reference``), and loading one reads the teacher back from that file, refusing a changed file.
    """

    UNSAVED_ARGUMENTS = (*NodeClassifier.UNSAVED_ARGUMENTS, "distiller")

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        graph_info: GraphInfo,
        teacher_checkpoint: str = "",
        distiller: DistillerFactory = LogitKD,
        ce_weight: float = 1.0,
        train_teacher: bool = False,
        distill_nodes: str = "train",
        cache_teacher: bool = True,
        teacher_on_full_graph: bool = False,
        compression: float | None = None,
        **student: Any,
    ) -> None:
        if distill_nodes not in ("train", "all"):
            raise ValueError(f"distill_nodes must be 'train' or 'all', got {distill_nodes!r}")
        teacher = load_teacher(teacher_checkpoint, num_features, num_classes, graph_info)
        if compression is not None:
            student["hidden_channels"] = student_width(compression, count_parameters(teacher.model), num_features,
                                                       num_classes, graph_info, student)
        super().__init__(num_features, num_classes, graph_info, **student)
        if self.model.num_layers > teacher.model.num_layers:
            raise ValueError(
                f"the student has {self.model.num_layers} layers but the teacher only {teacher.model.num_layers}: "
                "a student must not be deeper than its teacher; lower model.init_args.num_layers"
            )
        self.teacher = teacher.model
        self.teacher.requires_grad_(train_teacher)
        if isinstance(self.teacher, RGCN):
            self.teacher.freeze_unreachable()
        self.teacher.train(train_teacher)
        self.teacher_sha256 = "" if train_teacher else file_sha256(teacher_checkpoint)
        self.teacher_cache = FrozenTeacherCache()
        self.distiller = distiller(list(self.model.layer_dims), list(self.teacher.layer_dims))
        self._parameters_logged = False  # params/* logged in this fit yet

    def train(self, mode: bool = True) -> DistillationModule:
        """Keep a frozen teacher in eval mode (no dropout, fixed BatchNorm) while the student trains."""
        super().train(mode)
        if not self.hparams.train_teacher:
            self.teacher.eval()
        return self

    def teacher_output(self, batch: NodeBatch) -> GNNOutput:
        """The teacher's output on ``batch``'s rows: computed here, or a frozen teacher's cached output.

        A trained or train-mode teacher always runs. A frozen eval-mode one is cached on the full graph
        (``cache_teacher``), and for a mini-batch either runs on the sampled subgraph or, with
        ``teacher_on_full_graph``, gives the rows of its full-graph output.
        """
        if self.hparams.train_teacher:
            return batch.run(self.teacher)
        with torch.no_grad():
            if self.teacher.training:
                return batch.run(self.teacher)
            if batch.sampled and self.hparams.teacher_on_full_graph:
                return self._full_graph_teacher().rows(batch.store.n_id)
            if batch.sampled or not self.hparams.cache_teacher:
                return batch.run(self.teacher)
            return self.teacher_cache(self.teacher, batch.graph, lambda: batch.run(self.teacher))

    def _full_graph_teacher(self) -> GNNOutput:
        """The frozen teacher's output on the datamodule's whole graph (moved to this device), computed once."""
        graph = getattr(getattr(self._trainer, "datamodule", None), "graph", None)  # no trainer: None
        if graph is None:
            raise TeacherOptionError("teacher_on_full_graph needs a datamodule holding the whole graph (its .graph); "
                             "this one has none (e.g. a partitioned graph): set teacher_on_full_graph: false")

        def compute() -> GNNOutput:
            return NodeBatch.of(copy.copy(graph).to(self.device), self.graph_info).run(self.teacher)
        return self.teacher_cache(self.teacher, graph, compute)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A frozen teacher is referenced (path + SHA-256 of its file), not stored: its weights never change."""
        if self.hparams.train_teacher:
            return
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith("teacher.")]:
            del state[key]
        checkpoint[TEACHER_REFERENCE_KEY] = {"path": str(self.hparams.teacher_checkpoint), "sha256": self.teacher_sha256}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the referenced teacher's weights back into the state dict before Lightning loads it.

        They are this module's own teacher when its file has the referenced SHA-256 (nothing is read), else
        the referenced file's, if that file still has it. A checkpoint without a reference (a jointly trained
        teacher's, or one saved with the teacher's weights inside) holds the weights itself.
        """
        reference = checkpoint.get(TEACHER_REFERENCE_KEY)
        if reference is None:
            return
        path, expected = reference["path"], reference["sha256"]
        if expected == self.teacher_sha256:
            weights = dict(self.teacher.state_dict())
        else:
            if not Path(path).is_file():
                raise MissingFileError(
                    f"this student's checkpoint references its frozen teacher {path} (SHA-256 {expected[:16]}...), "
                    "which does not exist (a relative path is taken from the working directory); put that teacher "
                    "file back there, or pass it as model.init_args.teacher_checkpoint"
                )
            actual = file_sha256(path)
            if actual != expected:
                raise TeacherCheckpointError(
                    f"the teacher file {path} has changed since this student was trained (SHA-256 {actual[:16]}..., "
                    f"the student's checkpoint references {expected[:16]}...); the checkpoint does not store the "
                    "frozen teacher, so restore the original teacher file (at that path, or pass it as "
                    "model.init_args.teacher_checkpoint)"
                )
            state = load_checkpoint(path, TeacherCheckpointError, "teacher checkpoint")["state_dict"]
            weights = {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
        checkpoint["state_dict"].update({f"teacher.{key}": value for key, value in weights.items()})

    def loss_terms(self, batch: NodeBatch, output: GNNOutput, rows: Tensor) -> dict[str, Tensor]:
        """:func:`graphkd.distill.kd_objective` on this batch: the one KD objective of the project."""
        mask = rows if self.hparams.distill_nodes == "train" else torch.ones_like(rows)
        # edges between classified rows, for structure-preserving KD
        context = DistillContext(mask=mask, edge_index=batch.target_edges(), labels=batch.labels,
                                 multilabel=self.multilabel)
        return kd_objective(output, self.teacher_output(batch), batch.labels, rows, self.distiller, context,
                            self.task_loss, self.hparams.ce_weight, self.hparams.train_teacher)

    def on_fit_start(self) -> None:
        self._parameters_logged = False  # every fit (a resumed one too) logs them in its first epoch

    def on_train_epoch_end(self) -> None:
        """The epoch's metrics; the parameter counts once per fit (they never change, and every logged name costs
        Lightning time each epoch)."""
        super().on_train_epoch_end()
        if self._parameters_logged:
            return
        student, teacher = count_parameters(self.model), count_parameters(self.teacher)
        # the same on every rank; sync_dist averages equal values (see NodeClassifier.log_rank_invariant)
        self.log_dict({"params/student": float(student), "params/teacher": float(teacher),
                       "params/compression_ratio": teacher / student}, sync_dist=True)
        self._parameters_logged = True
