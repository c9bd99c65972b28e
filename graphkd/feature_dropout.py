"""Dropout on node features that may be stored as a sparse CSR matrix."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def feature_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout that also takes sparse CSR features (e.g. bag-of-words inputs).

    For CSR only the stored entries are dropped and rescaled, which is exactly dense
    dropout (zeros stay zero); a first layer ``x @ W`` on CSR features is many times
    cheaper than on their dense copy.
    """
    if x.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), F.dropout(x.values(), p, training), x.size())
    return F.dropout(x, p=p, training=training)
