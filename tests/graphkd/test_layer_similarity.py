"""Layer similarity measures: known answers."""
from __future__ import annotations

import pytest
import torch

from graphkd.layer_similarity import layer_similarity, linear_cka


def test_layer_similarity_known_answers():
    torch.manual_seed(0)
    h = torch.rand(50, 8)
    same = layer_similarity([h, 2 * h, h @ torch.linalg.qr(torch.randn(8, 8))[0]])
    assert same["pooled_cos_min"] < 1  # the rotated layer's mean points elsewhere
    assert same["cka_first_last"] == pytest.approx(1.0, abs=1e-5)  # CKA ignores rotations
    assert same["node_cos_middle_last"] < 1 and abs(linear_cka(h, 2 * h) - 1) < 1e-5
    scaled = layer_similarity([h, 3 * h])
    assert scaled["pooled_cos_min"] == pytest.approx(1.0) and scaled["node_cos_first_last"] == pytest.approx(1.0)
    assert linear_cka(h, torch.rand(50, 8)) < 0.5  # unrelated features
