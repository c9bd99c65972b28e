"""The KD objective every student is trained with, in one place.

    loss = ce_weight * task_loss(student on the labelled rows)
           [+ task_loss(teacher on the labelled rows), when the teacher is trained jointly]
           + the distiller's weighted terms (on the rows ``context.mask`` selects)

The terms are returned by name (``ce``, ``teacher_ce``, ``kd_*``) so a training loop logs each and sums them;
:class:`lightning_modules.distillation.DistillationModule` optimises exactly this, and so does every experiment
(they train through that module). The teacher's outputs reach the distiller detached (each method detaches
them), so a jointly trained teacher learns from its own task loss only.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from graphkd.distill.base import DistillContext, Distiller
from graphkd.outputs import GNNOutput

TaskLoss = Callable[[Tensor, Tensor], Tensor]
"""``(logits (n, C), labels (n,) or (n, T)) -> scalar``: cross-entropy, or BCE for multi-label tasks."""


def kd_objective(student: GNNOutput, teacher: GNNOutput, labels: Tensor, rows: Tensor, distiller: Distiller,
                 context: DistillContext, task_loss: TaskLoss, ce_weight: float = 1.0,
                 teacher_trains: bool = False) -> dict[str, Tensor]:
    """The named, weighted loss terms of one step.

    Args:
        student, teacher: both models' outputs on the same ``N`` rows.
        labels: ``(N,)`` class ids or ``(N, T)`` multi-label targets.
        rows: bool ``(N,)`` labelled training rows (the task loss's).
        distiller: the KD method.
        context: the distiller's rows and edges.
        task_loss: the supervised loss.
        ce_weight: weight of the student's task loss.
        teacher_trains: add the teacher's own task loss (a jointly trained teacher).
    """
    terms = {"ce": ce_weight * task_loss(student.logits[rows], labels[rows])}
    if teacher_trains:
        terms["teacher_ce"] = task_loss(teacher.logits[rows], labels[rows])
    terms.update(distiller(student, teacher, context))
    return terms
