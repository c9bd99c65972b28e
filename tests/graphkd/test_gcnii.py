"""GCNII against its equations computed by hand, its parameter count, depth 64, and ABKD to an MLP."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from graphkd.distill import ABKD, DistillContext
from graphkd.gcnii import GCNII
from graphkd.models import build_gnn, count_parameters
from graphkd.parameter_groups import optimizer_groups

# a path 0-1-2-3 plus the chord 0-2, both directions
EDGES = torch.tensor([[0, 1, 1, 2, 2, 3, 0, 2], [1, 0, 2, 1, 3, 2, 2, 0]])


def propagation_matrix(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Dense ``P = D^-1/2 (A + I) D^-1/2`` of an undirected edge list."""
    a = torch.eye(num_nodes, dtype=torch.float64)
    a[edge_index[1], edge_index[0]] = 1.0
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


def test_layer_outputs_match_the_gcnii_equations_by_hand():
    torch.manual_seed(0)
    alpha, lamda = 0.2, 0.7
    model = GCNII(3, 5, 2, num_layers=3, dropout=0.0, alpha=alpha, lamda=lamda).double().eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    out = model(x, EDGES)

    p = propagation_matrix(EDGES, 4)
    x_0 = torch.relu(x @ model.lins[0].weight.T + model.lins[0].bias)
    h = x_0
    for layer, conv in enumerate(model.convs, start=1):
        beta = math.log(lamda / layer + 1)
        support = (1 - alpha) * p @ h + alpha * x_0
        h = torch.relu(support @ ((1 - beta) * torch.eye(5, dtype=torch.float64) + beta * conv.weight1))
        assert conv.beta == pytest.approx(beta)
        torch.testing.assert_close(out.hidden[layer - 1], h)
    torch.testing.assert_close(out.logits, h @ model.lins[1].weight.T + model.lins[1].bias)
    assert len(out.hidden) == 3 and model.layer_dims == [5, 5, 5, 2]


def test_parameter_count_of_the_cora_64_layer_model():
    model = build_gnn("gcnii", 1433, 64, 7, 64, dropout=0.6, arch_options={"alpha": 0.1, "lamda": 0.5})
    # input Linear(1433, 64) + 64 shared 64x64 GCNII weights (no bias) + output Linear(64, 7)
    assert count_parameters(model) == (1433 * 64 + 64) + 64 * 64 * 64 + (64 * 7 + 7) == 354_375
    star = GCNII(1433, 64, 7, 64, shared_weights=False)  # GCNII*: two weights per layer
    assert count_parameters(star) == count_parameters(model) + 64 * 64 * 64


def test_64_layer_model_trains_without_nan():
    torch.manual_seed(0)
    n, classes = 120, 3
    y = torch.randint(0, classes, (n,))
    x = F.one_hot(y, classes).float() + 0.3 * torch.randn(n, classes)
    order = torch.argsort(y)  # homophilous: one ring through the nodes sorted by class
    edge_index = torch.stack([order, order.roll(1)])
    model = GCNII(classes, 16, classes, num_layers=64, dropout=0.1)
    optimizer = torch.optim.Adam(optimizer_groups(model), lr=0.01)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x, edge_index).logits, y)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5  # it learns, not just stays finite


def test_conv_weight_decay_is_its_own_optimizer_group():
    model = GCNII(6, 4, 2, num_layers=3, conv_weight_decay=0.01)
    groups = optimizer_groups(model)
    assert [g.get("weight_decay") for g in groups] == [0.01, None]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.convs.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.lins.parameters()}
    plain = GCNII(6, 4, 2, num_layers=3)  # no split: the optimizer's default for both groups
    assert all("weight_decay" not in g for g in optimizer_groups(plain))


def test_groups_of_a_wrapper_skip_frozen_parameters_and_list_each_parameter_once():
    wrapper = torch.nn.ModuleDict({
        "student": GCNII(6, 4, 2, num_layers=2, conv_weight_decay=0.01),
        "teacher": GCNII(6, 4, 2, num_layers=5, conv_weight_decay=0.01).requires_grad_(False),
        "head": torch.nn.Linear(2, 2),
    })
    groups = optimizer_groups(wrapper)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in wrapper.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert [g.get("weight_decay") for g in groups] == [0.01, None, None]


@pytest.mark.parametrize("kwargs, message", [
    ({"norm": True}, "no norm option"), ({"num_layers": 0}, "num_layers must be >= 1"),
    ({"alpha": 1.5}, r"alpha must lie in \[0, 1\]"), ({"lamda": 0.0}, "lamda must be > 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GCNII(**{"in_channels": 3, "hidden_channels": 4, "out_channels": 2, "num_layers": 2, **kwargs})


def test_abkd_from_a_gcnii_teacher_to_an_mlp_student():
    """GLNN setting: the attention pairs the MLP's hidden layers with every GCNII layer."""
    torch.manual_seed(0)
    n = 30
    x, edge_index, y = torch.randn(n, 8), torch.randint(0, n, (2, 90)), torch.randint(0, 3, (n,))
    teacher = GCNII(8, 16, 3, num_layers=16).eval()
    student = build_gnn("mlp", 8, 12, 3, 4, dropout=0.5)
    abkd = ABKD(list(student.layer_dims), list(teacher.layer_dims))
    with torch.no_grad():
        teacher_out = teacher(x, edge_index)
    context = DistillContext(mask=torch.ones(n, dtype=torch.bool), edge_index=edge_index, labels=y)
    terms = abkd(student(x, None), teacher_out, context)  # the student never sees the graph
    assert abkd.attention().shape == (3, 16)  # (student hidden layers, teacher GCNII layers)
    sum(terms.values()).backward()
    grads = [abkd.attention_logits.grad, *(p.grad for p in student.parameters())]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert abkd.attention_logits.grad.abs().sum() > 0


def test_sparse_adjacency_and_sparse_features_give_the_edge_list_outputs():
    torch.manual_seed(0)
    model = GCNII(3, 5, 2, num_layers=4, dropout=0.0).double().eval()
    x = torch.rand(4, 3, dtype=torch.float64) * (torch.rand(4, 3) > 0.5)
    adj_t = torch.sparse_coo_tensor(EDGES.flip(0), torch.ones(EDGES.shape[1]), (4, 4)).coalesce().to_sparse_csr()
    reference = model(x, EDGES)
    for out in (model(x, adj_t), model(x.to_sparse_csr(), EDGES)):
        torch.testing.assert_close(out.logits, reference.logits)
        for h, h_ref in zip(out.hidden, reference.hidden, strict=True):
            torch.testing.assert_close(h, h_ref)
