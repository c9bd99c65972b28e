"""FitNet hints (Romero et al., 2015): regress a student hidden layer onto a teacher hidden layer.

    kd_hint = weight * mean_{i in mask, k} ( (W h^s_i + b)_k - h^t_{i,k} )^2

``W, b`` is the learned regressor from the student layer's width to the
teacher layer's. By default both sides use their last hidden layer (the
penultimate layer, as in the G-CRD harness). The features are compared as they
are; the G-CRD harness L2-normalises them first and has no regressor, which this
class does not do. The teacher is detached (see :mod:`graphkd.distill.logit_kd`).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from graphkd.distill.base import DistillContext, Distiller
from graphkd.distill.logit_kd import check_widths, masked_rows
from graphkd.outputs import GNNOutput


def hidden_width(dims: list[int], index: int, side: str) -> int:
    """Width of hidden layer ``index`` (Python indexing) of a model whose layer widths are ``dims``.

    Raises:
        ValueError: the model has no hidden layer or ``index`` is out of range.
    """
    hidden = dims[:-1]
    if not -len(hidden) <= index < len(hidden):
        raise ValueError(
            f"{side} hidden layer {index} does not exist: the {side} has {len(hidden)} hidden layer(s) "
            f"of widths {hidden} (valid indices {-len(hidden)}..{len(hidden) - 1}); "
            "choose another layer or a deeper model"
        )
    return hidden[index]


class FitNet(Distiller):
    """Hint loss between a regressed student hidden layer and a teacher hidden layer: ``{"kd_hint": ...}``.

    Args:
        student_dims: width of each student layer (filled in by the training module).
        teacher_dims: width of each teacher layer (filled in by the training module).
        weight: multiplier of the hint term.
        student_layer: index into the student's hidden layers (-1 = last hidden layer).
        teacher_layer: index into the teacher's hidden layers (-1 = last hidden layer).
    """

    def __init__(
        self,
        student_dims: list[int],
        teacher_dims: list[int],
        weight: float = 1.0,
        student_layer: int = -1,
        teacher_layer: int = -1,
    ) -> None:
        super().__init__(student_dims, teacher_dims)
        self.weight = weight
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.regressor = nn.Linear(
            hidden_width(self.student_dims, student_layer, "student"),
            hidden_width(self.teacher_dims, teacher_layer, "teacher"),
        )

    def forward(self, student: GNNOutput, teacher: GNNOutput, context: DistillContext) -> dict[str, Tensor]:
        check_widths(student, self.student_dims, "student")
        check_widths(teacher, self.teacher_dims, "teacher")
        h_s = student.hidden[self.student_layer]
        h_t = teacher.hidden[self.teacher_layer]
        mask = masked_rows(context.mask, h_s.shape[0])
        hint = self.regressor(h_s[mask]).float()
        return {"kd_hint": self.weight * F.mse_loss(hint, h_t[mask].detach().float())}
