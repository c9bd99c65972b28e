"""ABKD: attention-based knowledge distillation across every (student layer, teacher layer) pair.

ABKD (arXiv 2310.15938) lets each student layer learn which teacher layers to
imitate. For the ``S`` participating student layers and ``T`` teacher layers:

    A = softmax(Lambda / tau_A, dim=teacher)          (S, T), Lambda learned
    D[s, t] = || phi_s(h^s_s) - psi_t(h^t_t) ||^2      (S, T), after projection,
                                                         pooling and normalisation
    kd_align = align_weight * mean_s sum_t A[s, t] D[s, t]
    kd_logit = logit_weight * T^2 * mean_i KL(teacher || student)   (LogitKD's maths)

The paper's body is not available; the structure above follows its ICLR 2024
reviews (see docs/abkd.md). Each unstated detail is decided here, with its reason:

- **Attention parameterisation**: a free ``(S, T)`` logit matrix ``Lambda``,
  initialised to zero, i.e. uniform rows. A query/key attention over pooled
  features would tie ``A`` to the current batch; the paper's heatmaps are one
  fixed matrix per run, which a free matrix gives directly.
- **Normalisation axis**: softmax over teacher layers for each student layer
  (rows sum to 1). Each student layer then receives a convex combination of
  teacher targets, so one student layer may attend to several teacher layers,
  every student layer is always distilled, and the term's scale does not grow
  with the teacher's depth. Normalising columns instead could leave a student
  layer with no target at all.
- **Collapse**: for a fixed ``D`` the loss is linear in ``A``, so each row drifts
  toward its smallest-``D`` teacher layer and the optimum is one-hot (as in the
  published maps). Premature collapse is avoided by the uniform start (every
  pair is trained while the projections are still random) and by
  ``attention_temperature``: a larger ``tau_A`` shrinks the logits' gradients by
  ``1 / tau_A`` and needs ``tau_A`` times larger logits for the same sharpness.
- **Projection**: each student layer has a learnable ``Linear(d_s, proj_dim)``
  (``phi_s``); each teacher layer a *fixed* semi-orthogonal ``(d_t, proj_dim)``
  map (``psi_t``, a buffer drawn once at construction). A learnable teacher-side
  map would let the two projections meet anywhere (for a pooled vector, any two
  vectors can be rotated onto each other), making ``D`` say nothing about the
  teacher; a fixed orthogonal map keeps the teacher's geometry (exactly when
  ``proj_dim >= d_t``, a random subspace otherwise). ``proj_dim=None`` compares
  the raw outputs and is allowed only when all participating widths are equal
  (the paper's Table 6 finds projection on and off close).
- **Alignment**: ``"pooled"`` (the paper's) mean-pools the masked rows of each
  projected layer into one vector; ``"node"`` keeps every masked node and
  averages the per-node distances, the finer match for node classification.
- **Normalisation of D**: every compared vector (pooled vector or node row) is
  L2-normalised first, so ``D = 2 - 2 cos`` lies in ``[0, 4]`` for every pair.
  Raw distances would grow with a layer's feature norm and bias the attention
  toward whichever teacher layer has the smallest activations.
- **Layers**: ``layers="hidden"`` (default) compares intermediate layers only,
  since the logits are already distilled by ``kd_logit``; ``"all"`` adds the
  logits of both models to the pairs.
- **Teacher**: all teacher tensors are detached, so even a jointly trained
  teacher is never pulled toward the student by KD. ``A``, ``D`` and the KL are
  computed in fp32 with autocast off, so bf16 autocast is safe.
- **Cost**: pooled alignment pools before projecting (the same vector: the maps
  are affine), and the teacher side (projected, pooled or per-node, normalised) is
  kept while the same unmodified teacher tensors, mask and projections come back
  (a frozen teacher's cached outputs), so a 64-layer teacher adds little per step.

Decisions taken on measurements (numbers and commands in docs/abkd.md, from ``experiments/abkd_deep*.yaml``):

- **Defaults stay the paper's** (learned ``A``, pooled alignment, ``align_weight=1``, frozen teacher). In GCNII
  teachers the layers are nearly one representation (the initial residual and identity mapping keep every layer
  close to ``x_0``), so ``D`` is almost constant along each row and any ``A`` does the same; in teachers whose
  layers differ the learned ``A`` turns nearly one-hot, as in the paper's maps.
- **Per-node alignment with a larger weight** (``alignment="node", align_weight=30``) is offered for GCN students:
  the pooled alignment's gradient on the student is a few percent of the logit term's
  (``callbacks.gradient_share``), and weighting the pooled form up breaks training while the per-node form holds.
- **``attention="uniform" | "last"``** and **``learn_projection=False``** exist for the ablations.
- **The logit term dominates in the transductive deep setting** (KD on all nodes, 20 labels per class): the deep
  configs use ``logit_weight=3``; the module's default stays Hinton's 1.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphkd.distill.base import DistillContext, Distiller
from graphkd.distill.logit_kd import check_widths, distillation_kl, masked_rows
from graphkd.outputs import GNNOutput

Alignment = Literal["pooled", "node"]
Layers = Literal["hidden", "all"]
Attention = Literal["learned", "uniform", "last"]


def participating_widths(dims: list[int], layers: Layers, side: str) -> list[int]:
    """Widths of the layers that take part in the alignment: hidden only, or hidden + logits.

    Raises:
        ValueError: ``layers="hidden"`` on a model without hidden layers, or an unknown ``layers``.
    """
    if layers == "all":
        return list(dims)
    if layers != "hidden":
        raise ValueError(f"layers must be 'hidden' or 'all', got {layers!r}")
    if len(dims) < 2:
        raise ValueError(
            f"ABKD with layers='hidden' needs a {side} with at least one hidden layer, but its widths are "
            f"{list(dims)} (logits only); use layers='all' or a deeper {side}"
        )
    return list(dims[:-1])


def unit_layers(layers: list[Tensor], alignment: Alignment) -> Tensor:
    """``L`` tensors ``(n, p)`` -> ``(L, m, p)`` L2-normalised rows in fp32: ``m = 1`` pooled, ``m = n`` per node."""
    u = torch.stack([h.float() for h in layers])
    if alignment == "pooled":
        u = u.mean(dim=1, keepdim=True)
    elif alignment != "node":
        raise ValueError(f"alignment must be 'pooled' or 'node', got {alignment!r}")
    return F.normalize(u, dim=-1)


def layer_distances(u_s: Tensor, u_t: Tensor) -> Tensor:
    """Mean squared Euclidean distance over rows between every student and teacher layer: ``(S, T)``."""
    # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b, averaged over rows; O((S + T) n p) memory.
    n = u_s.shape[1]
    cross = torch.einsum("snp,tnp->st", u_s, u_t) / n
    distance = u_s.pow(2).sum(-1).mean(-1)[:, None] + u_t.pow(2).sum(-1).mean(-1)[None, :] - 2 * cross
    return distance.clamp_min(0.0)  # remove round-off below zero


def dissimilarity(student_layers: list[Tensor], teacher_layers: list[Tensor], alignment: Alignment) -> Tensor:
    """Squared Euclidean distances between L2-normalised layer outputs, in fp32.

    Args:
        student_layers: ``S`` tensors ``(n, p)`` (projected student layers).
        teacher_layers: ``T`` tensors ``(n, p)`` (projected teacher layers).
        alignment: ``"pooled"`` compares the mean over the ``n`` rows; ``"node"``
            averages the per-row distances.

    Returns:
        ``D`` of shape ``(S, T)``, entries in ``[0, 4]``.
    """
    return layer_distances(unit_layers(student_layers, alignment), unit_layers(teacher_layers, alignment))


class ABKD(Distiller):
    """Attention-weighted alignment of all layer pairs plus logit KD: ``{"kd_logit", "kd_align"}``.

    Args:
        student_dims: width of each student layer (filled in by the training module).
        teacher_dims: width of each teacher layer (filled in by the training module).
        logit_weight: multiplier of the logit KD term.
        temperature: softening temperature of the logit KD term.
        align_weight: multiplier of the attention-weighted alignment term.
        attention_temperature: temperature of the row softmax over teacher layers (larger = slower sharpening).
        proj_dim: common width of the projected layers; None compares raw outputs (equal widths only).
        alignment: "pooled" (one mean vector per layer, as in the paper) or "node" (per-node distances).
        layers: "hidden" (intermediate layers only) or "all" (hidden layers and logits).
        attention: "learned" (ABKD), or a fixed ``A`` for ablations: "uniform" (every teacher layer alike)
            or "last" (each student layer aligned with the last participating teacher layer only).
        learn_projection: False drops the student's learnable maps (an ablation): the raw student layers (of
            one common width) are compared with the teacher layers under fixed orthogonal maps to that width.
    """

    def __init__(
        self,
        student_dims: list[int],
        teacher_dims: list[int],
        logit_weight: float = 1.0,
        temperature: float = 4.0,
        align_weight: float = 1.0,
        attention_temperature: float = 1.0,
        proj_dim: int | None = 128,
        alignment: Alignment = "pooled",
        layers: Layers = "hidden",
        attention: Attention = "learned",
        learn_projection: bool = True,
    ) -> None:
        super().__init__(student_dims, teacher_dims)
        if temperature <= 0 or attention_temperature <= 0:
            raise ValueError(
                f"temperatures must be > 0, got temperature={temperature}, "
                f"attention_temperature={attention_temperature}"
            )
        if alignment not in ("pooled", "node"):
            raise ValueError(f"alignment must be 'pooled' or 'node', got {alignment!r}")
        self.logit_weight = logit_weight
        self.temperature = temperature
        self.align_weight = align_weight
        self.attention_temperature = attention_temperature
        self.alignment = alignment
        self.layers = layers
        student_widths = participating_widths(self.student_dims, layers, "student")
        teacher_widths = participating_widths(self.teacher_dims, layers, "teacher")
        if proj_dim is None:
            if len(set(student_widths + teacher_widths)) != 1:
                raise ValueError(
                    f"proj_dim=None needs equal widths, but the student layers are {student_widths} and the "
                    f"teacher layers {teacher_widths}; set proj_dim to a common width"
                )
            self.student_projections = nn.ModuleList(nn.Identity() for _ in student_widths)
        else:
            if not learn_projection:
                if len(set(student_widths)) != 1:
                    raise ValueError(f"learn_projection=False compares the raw student layers, which needs equal "
                                     f"widths, but they are {student_widths}; keep learn_projection=True")
                proj_dim = student_widths[0]
            self.student_projections = nn.ModuleList(
                nn.Linear(d, proj_dim) if learn_projection else nn.Identity() for d in student_widths)
            for t, d in enumerate(teacher_widths):
                self.register_buffer(f"teacher_projection_{t}", nn.init.orthogonal_(torch.empty(d, proj_dim)))
        self.proj_dim = proj_dim
        logits = torch.zeros(len(student_widths), len(teacher_widths))
        if attention == "learned":
            self.attention_logits = nn.Parameter(logits)
        elif attention in ("uniform", "last"):
            if attention == "last":
                logits[:, :-1] = float("-inf")
            self.register_buffer("attention_logits", logits)
        else:
            raise ValueError(f"attention must be 'learned', 'uniform' or 'last', got {attention!r}")
        self.attention_mode = attention
        self._teacher_cache: tuple[list[tuple[weakref.ref[Tensor], int]], Tensor] | None = None

    def attention(self) -> Tensor:
        """Row-normalised attention ``A`` of shape ``(S, T)`` in fp32, with gradient."""
        return torch.softmax(self.attention_logits.float() / self.attention_temperature, dim=1)

    def attention_scores(self) -> Tensor:
        """Current ``(S, T)`` attention (rows: student layers, columns: teacher layers), detached."""
        return self.attention().detach()

    def _layers(self, output: GNNOutput) -> list[Tensor]:
        """The participating layers of ``output``, in order."""
        return output.layers if self.layers == "all" else output.hidden

    def _project_teacher(self, index: int, h: Tensor) -> Tensor:
        """Teacher layer ``index`` mapped by its fixed orthogonal projection: ``(n, d_t) -> (n, p)``."""
        if self.proj_dim is None:
            return h.float()
        return h.float() @ getattr(self, f"teacher_projection_{index}").float()

    def _teacher_units(self, layers: list[Tensor], mask: Tensor, rows: Callable[[Tensor], Tensor]) -> Tensor:
        """The teacher side of ``D``: projected, pooled or per-node, normalised rows ``(T, m, p)``.

        A frozen teacher hands back the same tensors at every full-batch step (the teacher cache), and its
        fixed projections do not change, so the result is kept and reused while the teacher tensors, the
        mask and the projection buffers are the same unmodified objects (checked by identity and version
        counter). For a 64-layer teacher with per-node alignment this saves 64 ``(n, d) @ (d, p)`` products
        and their normalisation per step.
        """
        buffers: list[Tensor] = [b for name, b in self.named_buffers() if name.startswith("teacher_projection_")]
        key: list[Tensor] = [*layers, mask, *buffers]
        if self._teacher_cache is not None and len(self._teacher_cache[0]) == len(key) and all(
                tensor._version == version and ref() is tensor
                for (ref, version), tensor in zip(self._teacher_cache[0], key)):
            return self._teacher_cache[1]
        u_t = unit_layers([self._project_teacher(t, rows(h.detach())) for t, h in enumerate(layers)], self.alignment)
        self._teacher_cache = ([(weakref.ref(tensor), tensor._version) for tensor in key], u_t)
        return u_t

    def forward(self, student: GNNOutput, teacher: GNNOutput, context: DistillContext) -> dict[str, Tensor]:
        check_widths(student, self.student_dims, "student")
        check_widths(teacher, self.teacher_dims, "teacher")
        mask = masked_rows(context.mask, student.logits.shape[0])
        # Pooled alignment pools before projecting: the projections are affine, so this is the same vector,
        # and a 64-layer teacher then costs 64 (n,) @ (n, d) row averages instead of 64 (n, d) @ (d, p)
        # projections (and no (n, d) copies of the masked rows) per step.
        if self.alignment == "pooled":
            weights = mask.float() / mask.sum()
            rows = lambda h: (weights.to(h.dtype) @ h)[None]  # noqa: E731
        else:
            rows = lambda h: h[mask]  # noqa: E731
        projected_student = [
            projection(rows(h)) for projection, h in zip(self.student_projections, self._layers(student))
        ]
        with torch.autocast(device_type=mask.device.type, enabled=False):
            u_t = self._teacher_units(self._layers(teacher), mask, rows)
            dissimilarities = layer_distances(unit_layers(projected_student, self.alignment), u_t)
            align = (self.attention() * dissimilarities).sum(dim=1).mean()
            kl = distillation_kl(student.logits[mask], teacher.logits[mask], self.temperature, context.multilabel)
        return {
            "kd_logit": self.logit_weight * self.temperature**2 * kl.mean(),
            "kd_align": self.align_weight * align,
        }
