"""Logit knowledge distillation (Hinton et al., 2015), and the row selection every KD loss shares.

The student matches the teacher's softened class distribution:

    kd_logit = weight * T^2 * mean_{i in mask} KL( softmax(t_i / T) || softmax(s_i / T) )

The ``T^2`` factor keeps the gradient's size independent of ``T`` (the soft
targets' gradients shrink as ``1 / T^2``). The KL is summed over classes and
averaged over the distilled nodes, so it is the per-node KL. The G-CRD harness
(chaitjo/efficient-gnns) calls ``F.kl_div`` with its default mean over all
``N * C`` elements, which is this value divided by the number of classes ``C``:
their ``alpha = 0.9`` corresponds to ``weight = 0.9 / C`` here.

Multi-label tasks (``context.multilabel``) use one Bernoulli per task,
``KL(sigmoid(t/T) || sigmoid(s/T))``, averaged over tasks and nodes (each task is
its own binary problem, as in a mean BCE).

The teacher is detached: even when the training loop updates the teacher
jointly, KD must pull the student toward the teacher and never the teacher
toward the student. Everything is computed in fp32, so bf16 autocast is safe.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from graphkd.distill.base import DistillContext, Distiller
from graphkd.outputs import GNNOutput


def masked_rows(mask: Tensor, num_rows: int) -> Tensor:
    """Check ``context.mask`` against the outputs' row count and return it as bool ``(N,)``.

    Raises:
        ValueError: the mask is not one flag per output row, or selects no row.
    """
    if mask.dim() != 1 or mask.shape[0] != num_rows:
        raise ValueError(
            f"context.mask has shape {tuple(mask.shape)} but the outputs have {num_rows} rows; "
            "pass a bool mask over the same rows as the student/teacher outputs"
        )
    mask = mask.bool()
    if not bool(mask.any()):
        raise ValueError("context.mask selects no row; distil on a batch that holds at least one masked node")
    return mask


def check_widths(output: GNNOutput, dims: list[int], side: str) -> None:
    """Check that ``output``'s layers (hidden then logits) have the widths the distiller was built for.

    Raises:
        ValueError: the layer count or a width differs from ``dims``.
    """
    widths = [layer.shape[-1] for layer in output.layers]
    if widths != list(dims):
        raise ValueError(
            f"the {side} output has layer widths {widths} but the distiller was built for {list(dims)}; "
            f"build it with the {side} model's layer widths [*hidden dims, num_classes]"
        )


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float, multilabel: bool) -> Tensor:
    """Per-node ``KL(teacher || student)`` of the temperature-softened outputs, in fp32.

    Args:
        student_logits: ``(N, C)`` student logits.
        teacher_logits: ``(N, C)`` teacher logits (detached here).
        temperature: softening temperature ``T > 0``.
        multilabel: per-task Bernoulli KL (mean over tasks) instead of a softmax KL over classes.

    Returns:
        ``(N,)`` KL divergence of each node, not yet multiplied by ``T^2``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ; both models must predict the same classes for the same rows"
        )
    s = student_logits.float() / temperature
    t = teacher_logits.detach().float() / temperature
    if multilabel:
        # Bernoulli KL(p_t || p_s) with log-probabilities from logsigmoid for stability.
        log_p_t, log_q_t = F.logsigmoid(t), F.logsigmoid(-t)
        log_p_s, log_q_s = F.logsigmoid(s), F.logsigmoid(-s)
        kl = log_p_t.exp() * (log_p_t - log_p_s) + log_q_t.exp() * (log_q_t - log_q_s)
        return kl.mean(dim=-1)
    log_p_t = F.log_softmax(t, dim=-1)
    log_p_s = F.log_softmax(s, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)


class LogitKD(Distiller):
    """Hinton KD on the masked nodes: ``{"kd_logit": weight * T^2 * mean KL}``.

    Args:
        student_dims: width of each student layer (filled in by the training module).
        teacher_dims: width of each teacher layer (filled in by the training module).
        weight: multiplier of the KD term.
        temperature: softening temperature T of both distributions.
    """

    def __init__(
        self, student_dims: list[int], teacher_dims: list[int], weight: float = 1.0, temperature: float = 4.0
    ) -> None:
        super().__init__(student_dims, teacher_dims)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.weight = weight
        self.temperature = temperature

    def forward(self, student: GNNOutput, teacher: GNNOutput, context: DistillContext) -> dict[str, Tensor]:
        mask = masked_rows(context.mask, student.logits.shape[0])
        kl = distillation_kl(student.logits[mask], teacher.logits[mask], self.temperature, context.multilabel)
        return {"kd_logit": self.weight * self.temperature**2 * kl.mean()}
