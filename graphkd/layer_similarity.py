"""How alike a teacher's layers are, i.e. how much ABKD's attention over them has to choose from."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def linear_cka(a: Tensor, b: Tensor) -> float:
    """Linear centred kernel alignment of two ``(n, d)`` representations (1: equal up to rotation and scale)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a.T @ b).norm() ** 2 / ((a.T @ a).norm() * (b.T @ b).norm()))


def layer_similarity(hidden: list[Tensor]) -> dict[str, float]:
    """Similarities of the layers ``hidden`` (each ``(n, d_l)``).

    ``pooled_cos_min``: the smallest cosine between two layers' mean vectors (what pooled alignment compares);
    ``node_cos_first_last`` / ``node_cos_middle_last``: mean per-node cosine of the first / middle layer with the
    last; ``cka_first_last`` / ``cka_middle_last``: linear CKA of the same pairs. Pooled and per-node cosines
    need layers of one width; CKA does not.
    """
    pooled = F.normalize(torch.stack([h.mean(0) for h in hidden]), dim=-1)
    middle = hidden[len(hidden) // 2]
    return {
        "pooled_cos_min": float((pooled @ pooled.T).min()),
        "node_cos_first_last": float(F.cosine_similarity(hidden[0], hidden[-1], dim=-1).mean()),
        "node_cos_middle_last": float(F.cosine_similarity(middle, hidden[-1], dim=-1).mean()),
        "cka_first_last": linear_cka(hidden[0], hidden[-1]),
        "cka_middle_last": linear_cka(middle, hidden[-1]),
    }
