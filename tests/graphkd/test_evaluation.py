"""Scores agree with OGB's Evaluator and with plain accuracy."""
from __future__ import annotations

import torch

from graphkd.evaluation import NodeEvaluator


def test_accuracy_known_answer_ogb_and_plain():
    y = torch.tensor([0, 1, 2, 1])
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    assert NodeEvaluator("ogbn-arxiv")(y, logits) == 0.5
    assert NodeEvaluator("Cora")(y, logits) == 0.5


def test_proteins_rocauc_known_answer():
    y = torch.zeros(6, 112, dtype=torch.long)
    y[::2] = 1  # every task has positives and negatives
    evaluator = NodeEvaluator("ogbn-proteins", task="multilabel")
    assert evaluator.metric == "rocauc"
    assert evaluator(y, y.float() * 2 - 1) == 1.0
    assert evaluator(y, 1 - y.float() * 2) == 0.0
