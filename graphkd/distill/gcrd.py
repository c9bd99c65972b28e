"""Graph contrastive representation distillation, G-CRD (Joshi et al., TNNLS 2022).

Each side's last hidden features go through its own head
``Linear -> BatchNorm1d -> ReLU`` to a shared width ``p``; the embeddings are
L2-normalised and every sampled student node must pick out its own teacher node
among the other sampled teacher nodes (in-batch negatives, no memory bank):

    kd_crd = weight * CE( z_s z_t^T / tau, diag )

Choices (as in the G-CRD harness, chaitjo/efficient-gnns): up to ``max_nodes``
masked rows are sampled uniformly without replacement at every call; both heads
are trained by this loss, but the teacher's *features* are detached, so the
teacher model itself is never pulled toward the student. The similarity logits
and the cross-entropy are computed in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphkd.distill.base import DistillContext, Distiller
from graphkd.distill.fitnet import hidden_width
from graphkd.distill.logit_kd import check_widths, masked_rows
from graphkd.outputs import GNNOutput


def contrastive_loss(z_student: Tensor, z_teacher: Tensor, tau: float) -> Tensor:
    """InfoNCE with the diagonal as positives, in fp32 (autocast off: the logits are scaled by ``1 / tau``).

    Args:
        z_student: ``(n, p)`` student embeddings.
        z_teacher: ``(n, p)`` teacher embeddings of the same nodes, same order.
        tau: temperature of the cosine-similarity logits.

    Returns:
        Scalar mean over the ``n`` nodes of ``-log softmax(z_s z_t^T / tau)_{ii}``.
    """
    with torch.autocast(device_type=z_student.device.type, enabled=False):
        z_s = F.normalize(z_student.float(), dim=-1)
        z_t = F.normalize(z_teacher.float(), dim=-1)
        logits = z_s @ z_t.T / tau
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def projection_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """G-CRD's embedding head: ``Linear -> BatchNorm1d -> ReLU``, ``(n, in_dim) -> (n, out_dim)``."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU())


class GCRD(Distiller):
    """Contrastive distillation of the last hidden layer: ``{"kd_crd": ...}``.

    Args:
        student_dims: width of each student layer (filled in by the training module).
        teacher_dims: width of each teacher layer (filled in by the training module).
        weight: multiplier of the contrastive term (the G-CRD harness uses 0.01-0.5).
        proj_dim: width p of both embedding heads (256 on arxiv, 128 on mag in G-CRD).
        tau: temperature of the similarity logits (0.05-0.075 in G-CRD).
        max_nodes: at most this many masked rows are sampled per call (the n x n logits' side).
    """

    def __init__(
        self,
        student_dims: list[int],
        teacher_dims: list[int],
        weight: float = 1.0,
        proj_dim: int = 128,
        tau: float = 0.075,
        max_nodes: int = 8192,
    ) -> None:
        super().__init__(student_dims, teacher_dims)
        if tau <= 0 or max_nodes < 2:
            raise ValueError(f"GCRD needs tau > 0 and max_nodes >= 2, got tau={tau}, max_nodes={max_nodes}")
        self.weight = weight
        self.tau = tau
        self.max_nodes = max_nodes
        self.student_head = projection_head(hidden_width(self.student_dims, -1, "student"), proj_dim)
        self.teacher_head = projection_head(hidden_width(self.teacher_dims, -1, "teacher"), proj_dim)

    def forward(self, student: GNNOutput, teacher: GNNOutput, context: DistillContext) -> dict[str, Tensor]:
        check_widths(student, self.student_dims, "student")
        check_widths(teacher, self.teacher_dims, "teacher")
        rows = masked_rows(context.mask, student.logits.shape[0]).nonzero().squeeze(-1)
        if rows.numel() < 2:
            raise ValueError("GCRD needs at least 2 masked rows per call (in-batch negatives and BatchNorm)")
        if rows.numel() > self.max_nodes:
            rows = rows[torch.randperm(rows.numel(), device=rows.device)[: self.max_nodes]]
        z_s = self.student_head(student.hidden[-1][rows])
        z_t = self.teacher_head(teacher.hidden[-1][rows].detach())
        return {"kd_crd": self.weight * contrastive_loss(z_s, z_t, self.tau)}
