"""The interface every knowledge-distillation method implements.

A method is an ``nn.Module`` built from the widths of the student's and the
teacher's layers (so it can own projections) and called on the two models'
outputs for the same rows. It returns its loss terms, already multiplied by
their weights, under names that are logged as they are (``kd_logit``,
``kd_align``, ...). The training loop adds them to the task loss.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from graphkd.outputs import GNNOutput


@dataclass
class DistillContext:
    """What a KD loss may need besides the two outputs.

    Attributes:
        mask: bool ``(N,)`` rows to distil on (e.g. training nodes of the batch).
        edge_index: ``(2, E)`` edges between the output rows (row ids), used by
            structure-preserving losses such as LSP.
        labels: ``(N,)`` class ids or ``(N, T)`` multi-label targets.
        multilabel: True for multi-label tasks (sigmoid instead of softmax).
    """

    mask: Tensor
    edge_index: Tensor
    labels: Tensor
    multilabel: bool = False


class Distiller(nn.Module):
    """Base class: ``forward(student, teacher, context) -> {term: weighted loss}``.

    Args:
        student_dims: width of each student layer, ``[*hidden dims, num_classes]``.
        teacher_dims: width of each teacher layer, ``[*hidden dims, num_classes]``.
    """

    def __init__(self, student_dims: list[int], teacher_dims: list[int]) -> None:
        super().__init__()
        self.student_dims = list(student_dims)
        self.teacher_dims = list(teacher_dims)

    def forward(self, student: GNNOutput, teacher: GNNOutput, context: DistillContext) -> dict[str, Tensor]:
        raise NotImplementedError

    def attention_scores(self) -> Tensor | None:
        """``(student layers, teacher layers)`` weights, for methods that learn them."""
        return None


DistillerFactory = Callable[[list[int], list[int]], Distiller]
"""Config type: a Distiller class with its hyper-parameters, given the layer widths later."""
