"""Knowledge-distillation losses: one file per method, one :class:`Distiller` interface.

Every method is built from the student's and teacher's layer widths and called as
``terms = distiller(student_output, teacher_output, context)``; it returns its
weighted loss terms by name, which the training loop adds to the task loss.
"""
from graphkd.distill.abkd import ABKD
from graphkd.distill.base import DistillContext, Distiller, DistillerFactory
from graphkd.distill.fitnet import FitNet
from graphkd.distill.gcrd import GCRD
from graphkd.distill.logit_kd import LogitKD
from graphkd.distill.lsp import LSP
from graphkd.distill.no_kd import NoKD
from graphkd.distill.objective import kd_objective

__all__ = [
    "ABKD",
    "DistillContext",
    "Distiller",
    "DistillerFactory",
    "FitNet",
    "GCRD",
    "LSP",
    "LogitKD",
    "NoKD",
    "kd_objective",
]
