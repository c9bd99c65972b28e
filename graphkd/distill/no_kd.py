"""The no-distillation baseline: the student trains on its task loss alone."""
from __future__ import annotations

from torch import Tensor

from graphkd.distill.base import DistillContext, Distiller
from graphkd.outputs import GNNOutput


class NoKD(Distiller):
    """Adds no term, so the same training loop gives the plain student baseline.

    Args:
        student_dims: width of each student layer (filled in by the training module).
        teacher_dims: width of each teacher layer (filled in by the training module).
    """

    def forward(self, student: GNNOutput, teacher: GNNOutput, context: DistillContext) -> dict[str, Tensor]:
        return {}
