"""ABKD: attention over layer pairs, the dissimilarity matrix, and the two loss terms."""
from __future__ import annotations

import math

import pytest
import torch

from graphkd.distill import ABKD, DistillContext
from graphkd.distill.abkd import dissimilarity
from graphkd.outputs import GNNOutput


def context(num_rows: int, mask: torch.Tensor | None = None) -> DistillContext:
    """A context over ``num_rows`` rows, all masked unless told."""
    return DistillContext(
        mask=torch.ones(num_rows, dtype=torch.bool) if mask is None else mask,
        edge_index=torch.empty(2, 0, dtype=torch.long),
        labels=torch.zeros(num_rows, dtype=torch.long),
    )


def random_output(num_rows: int, dims: list[int], seed: int) -> GNNOutput:
    """A GNNOutput with layer widths ``dims`` (last = classes) filled with seeded noise."""
    g = torch.Generator().manual_seed(seed)
    layers = [torch.randn(num_rows, d, generator=g) for d in dims]
    return GNNOutput(logits=layers[-1], hidden=layers[:-1])


STUDENT_DIMS, TEACHER_DIMS = [6, 5, 3], [8, 6, 7, 3]


def test_attention_rows_are_distributions_starting_uniform():
    abkd = ABKD(STUDENT_DIMS, TEACHER_DIMS, attention_temperature=0.5)
    assert abkd.attention_scores().shape == (2, 3)
    torch.testing.assert_close(abkd.attention_scores(), torch.full((2, 3), 1 / 3))
    with torch.no_grad():
        abkd.attention_logits.normal_(std=4.0)
    scores = abkd.attention_scores()
    assert (scores >= 0).all() and not scores.requires_grad
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2))
    # softmax over teacher layers (dim 1) of logits / temperature
    torch.testing.assert_close(scores, torch.softmax(abkd.attention_logits.detach() * 2.0, dim=1))


def test_layers_all_adds_the_logits_to_both_sides():
    assert ABKD(STUDENT_DIMS, TEACHER_DIMS, layers="all").attention_scores().shape == (3, 4)


def test_dissimilarity_hand_values():
    a, b = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert dissimilarity([a], [b], "pooled").item() == pytest.approx(2.0)  # orthogonal unit vectors
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert dissimilarity([mixed], [a], "node").item() == pytest.approx(1.0)  # per-node 0 and 2
    # pooled: mean (1/2, 1/2) normalised vs (1, 0): 2 - 2 cos 45deg
    assert dissimilarity([mixed], [a], "pooled").item() == pytest.approx(2 - math.sqrt(2), rel=1e-6)
    assert dissimilarity([a * 7.0], [a], "node").item() == pytest.approx(0.0, abs=1e-6)  # scale-free


@pytest.mark.parametrize("alignment", ["pooled", "node"])
def test_zero_loss_when_student_equals_teacher_without_projection(alignment):
    out = random_output(9, [5, 5, 4], seed=0)
    abkd = ABKD([5, 5, 4], [5, 5, 4], proj_dim=None, alignment=alignment)
    with torch.no_grad():  # each student layer attends to its own teacher layer
        abkd.attention_logits.copy_(torch.eye(2) * 100.0)
    terms = abkd(out, out, context(9))
    assert set(terms) == {"kd_logit", "kd_align"}
    assert terms["kd_logit"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["kd_align"].item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("alignment", ["pooled", "node"])
def test_projected_student_equal_to_one_teacher_layer_has_zero_distance_to_it(alignment):
    teacher = random_output(10, TEACHER_DIMS, seed=1)
    student = GNNOutput(teacher.logits, [teacher.hidden[1].clone(), torch.randn(10, 5)])
    abkd = ABKD([6, 5, 3], TEACHER_DIMS, proj_dim=4, alignment=alignment, align_weight=2.0)
    with torch.no_grad():  # the student's projection of layer 0 becomes the teacher's projection of layer 1
        abkd.student_projections[0].weight.copy_(abkd.teacher_projection_1.T)
        abkd.student_projections[0].bias.zero_()
    projected_s = [p(h) for p, h in zip(abkd.student_projections, student.hidden)]
    projected_t = [h @ getattr(abkd, f"teacher_projection_{t}") for t, h in enumerate(teacher.hidden)]
    distances = dissimilarity(projected_s, projected_t, alignment)
    assert distances[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert (distances[0, [0, 2]] > 1e-3).all()
    expected = 2.0 * (distances.sum(dim=1) / 3).mean()  # uniform attention at the start
    assert abkd(student, teacher, context(10))["kd_align"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_teacher_projection_is_a_fixed_isometry_saved_with_the_module():
    abkd = ABKD(STUDENT_DIMS, TEACHER_DIMS, proj_dim=16)
    p = abkd.teacher_projection_0
    torch.testing.assert_close(p @ p.T, torch.eye(8))  # (8, 16) rows orthonormal: distances kept
    assert "teacher_projection_0" in abkd.state_dict()
    assert all(not name.startswith("teacher_projection") for name, _ in abkd.named_parameters())


def test_gradients_reach_attention_and_projections_but_not_the_teacher():
    student, teacher = random_output(12, STUDENT_DIMS, seed=2), random_output(12, TEACHER_DIMS, seed=3)
    for tensor in [*student.layers, *teacher.layers]:
        tensor.requires_grad_(True)
    abkd = ABKD(STUDENT_DIMS, TEACHER_DIMS, proj_dim=8)
    sum(abkd(student, teacher, context(12)).values()).backward()
    assert abkd.attention_logits.grad.abs().sum() > 0
    assert all(p.weight.grad.abs().sum() > 0 for p in abkd.student_projections)
    assert all(h.grad is not None for h in student.layers)
    assert all(h.grad is None for h in teacher.layers)


@pytest.mark.parametrize("alignment", ["pooled", "node"])
def test_loss_is_invariant_to_permuting_nodes(alignment):
    student, teacher = random_output(15, STUDENT_DIMS, seed=4), random_output(15, TEACHER_DIMS, seed=5)
    mask = torch.arange(15) % 3 != 0
    perm = torch.randperm(15, generator=torch.Generator().manual_seed(6))
    abkd = ABKD(STUDENT_DIMS, TEACHER_DIMS, alignment=alignment)
    ref = abkd(student, teacher, context(15, mask))
    permuted = abkd(student.rows(perm), teacher.rows(perm), context(15, mask[perm]))
    for name in ref:
        assert permuted[name].item() == pytest.approx(ref[name].item(), rel=1e-5)


def test_attention_recovers_the_matching_teacher_layer():
    torch.manual_seed(7)
    teacher = random_output(64, [8, 8, 8, 3], seed=8)
    student = GNNOutput(teacher.logits, [teacher.hidden[2] @ torch.randn(8, 6)])  # a linear view of layer 2
    abkd = ABKD([6, 3], [8, 8, 8, 3], proj_dim=16, alignment="node")
    optimizer = torch.optim.Adam(abkd.parameters(), lr=0.1)
    for _ in range(60):
        optimizer.zero_grad()
        abkd(student, teacher, context(64))["kd_align"].backward()
        optimizer.step()
    scores = abkd.attention_scores()
    assert scores.argmax(dim=1).tolist() == [2] and scores[0, 2] > 0.9


def test_bf16_autocast_is_finite_and_close_to_fp32():
    student, teacher = random_output(20, STUDENT_DIMS, seed=9), random_output(20, TEACHER_DIMS, seed=10)
    abkd = ABKD(STUDENT_DIMS, TEACHER_DIMS, alignment="node")
    ref = abkd(student, teacher, context(20))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = abkd(student, teacher, context(20))
    for name in ref:
        assert low[name].dtype == torch.float32 and torch.isfinite(low[name])
        assert low[name].item() == pytest.approx(ref[name].item(), rel=3e-2)


def test_invalid_configurations_raise_clear_errors():
    with pytest.raises(ValueError, match="at least one hidden layer"):
        ABKD([3], TEACHER_DIMS)
    with pytest.raises(ValueError, match="proj_dim=None needs equal widths"):
        ABKD(STUDENT_DIMS, TEACHER_DIMS, proj_dim=None)
    with pytest.raises(ValueError, match="alignment"):
        ABKD(STUDENT_DIMS, TEACHER_DIMS, alignment="graph")
    with pytest.raises(ValueError, match="layers"):
        ABKD(STUDENT_DIMS, TEACHER_DIMS, layers="last")
    abkd = ABKD(STUDENT_DIMS, TEACHER_DIMS)
    with pytest.raises(ValueError, match="layer widths"):
        abkd(random_output(4, [6, 3], seed=0), random_output(4, TEACHER_DIMS, seed=1), context(4))


@pytest.mark.parametrize("attention", ["uniform", "last"])
def test_fixed_attention_is_not_learned(attention):
    distiller = ABKD([8, 8, 3], [6, 6, 6, 3], attention=attention)
    expected = torch.full((2, 3), 1 / 3) if attention == "uniform" else torch.tensor([[0.0, 0, 1], [0, 0, 1]])
    torch.testing.assert_close(distiller.attention_scores(), expected)
    assert "attention_logits" not in dict(distiller.named_parameters())
    assert "attention_logits" in distiller.state_dict()


def test_pooled_alignment_equals_projecting_every_row_then_pooling():
    torch.manual_seed(0)
    distiller = ABKD([8, 8, 3], [6, 6, 6, 3], proj_dim=5, attention="uniform", logit_weight=0.0)
    student = GNNOutput(logits=torch.randn(10, 3), hidden=[torch.randn(10, 8) for _ in range(2)])
    teacher = GNNOutput(logits=torch.randn(10, 3), hidden=[torch.randn(10, 6) for _ in range(3)])
    mask = torch.rand(10) > 0.4
    projected_s = [p(h[mask]) for p, h in zip(distiller.student_projections, student.hidden)]
    projected_t = [h[mask] @ getattr(distiller, f"teacher_projection_{t}") for t, h in enumerate(teacher.hidden)]
    expected = dissimilarity(projected_s, projected_t, "pooled").mean()  # uniform A: the mean over teacher layers x 1
    terms = distiller(student, teacher, DistillContext(mask=mask, edge_index=torch.empty(2, 0, dtype=torch.long),
                                                        labels=torch.zeros(10, dtype=torch.long)))
    torch.testing.assert_close(terms["kd_align"], expected)


def test_without_learned_projection_raw_student_layers_meet_fixed_teacher_maps():
    distiller = ABKD([8, 8, 3], [6, 6, 6, 3], learn_projection=False, attention="uniform", logit_weight=0.0)
    assert not list(distiller.parameters())  # nothing to learn: fixed maps and a fixed attention
    assert distiller.teacher_projection_0.shape == (6, 8)
    teacher = GNNOutput(logits=torch.randn(10, 3), hidden=[torch.randn(10, 6) for _ in range(3)])
    # a student whose layers are the teacher's last layer under its fixed map is at distance 0 from it
    image = teacher.hidden[2] @ distiller.teacher_projection_2
    student = GNNOutput(logits=torch.randn(10, 3), hidden=[image, image])
    context = DistillContext(mask=torch.ones(10, dtype=torch.bool), edge_index=torch.empty(2, 0, dtype=torch.long),
                             labels=torch.zeros(10, dtype=torch.long))
    distance = dissimilarity([image, image], [h @ getattr(distiller, f"teacher_projection_{t}")
                                              for t, h in enumerate(teacher.hidden)], "pooled")
    assert torch.allclose(distance[:, 2], torch.zeros(2), atol=1e-6)
    torch.testing.assert_close(distiller(student, teacher, context)["kd_align"], distance.mean())
    with pytest.raises(ValueError, match="learn_projection=False"):
        ABKD([8, 5, 3], [6, 6, 3], learn_projection=False)


@pytest.mark.parametrize("alignment", ["pooled", "node"])
def test_teacher_side_is_reused_only_while_the_same_unmodified_tensors_come_back(alignment):
    torch.manual_seed(0)
    distiller = ABKD([8, 8, 3], [6, 6, 6, 3], proj_dim=5, alignment=alignment)
    student = GNNOutput(logits=torch.randn(10, 3), hidden=[torch.randn(10, 8) for _ in range(2)])
    teacher = GNNOutput(logits=torch.randn(10, 3), hidden=[torch.randn(10, 6) for _ in range(3)])
    context = DistillContext(mask=torch.rand(10) > 0.3, edge_index=torch.empty(2, 0, dtype=torch.long),
                             labels=torch.zeros(10, dtype=torch.long))

    def fresh(output: GNNOutput) -> torch.Tensor:  # the same computation with nothing cached
        distiller._teacher_cache = None
        return distiller(student, output, context)["kd_align"]

    first = distiller(student, teacher, context)["kd_align"]
    cached_units = distiller._teacher_cache[1]
    assert distiller(student, teacher, context)["kd_align"].item() == first.item()
    assert distiller._teacher_cache[1] is cached_units  # reused, not recomputed
    teacher.hidden[1].mul_(-1.0)  # an in-place change of a teacher tensor invalidates it
    changed = distiller(student, teacher, context)["kd_align"]
    assert not torch.isclose(changed, first)
    torch.testing.assert_close(changed, fresh(teacher))
    with torch.no_grad():  # so does a change of a fixed projection (e.g. by load_state_dict)
        distiller.teacher_projection_0.mul_(-1.0)
    torch.testing.assert_close(distiller(student, teacher, context)["kd_align"], fresh(teacher))
    other = GNNOutput(logits=teacher.logits, hidden=[2 * h + 1 for h in teacher.hidden])  # new tensors
    torch.testing.assert_close(distiller(student, other, context)["kd_align"], fresh(other))
