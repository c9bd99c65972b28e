"""Known answers and properties of the baseline KD losses (logit KD, FitNet, LSP, G-CRD)."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import softmax

from graphkd.distill import ABKD, GCRD, LSP, DistillContext, FitNet, LogitKD, NoKD
from graphkd.distill.gcrd import contrastive_loss
from graphkd.distill.lsp import KERNELS, edge_scores, local_structure_log_prob
from graphkd.outputs import GNNOutput


def context(num_rows: int, edge_index: torch.Tensor | None = None, mask: torch.Tensor | None = None,
            multilabel: bool = False) -> DistillContext:
    """A context over ``num_rows`` rows, all masked unless told."""
    return DistillContext(
        mask=torch.ones(num_rows, dtype=torch.bool) if mask is None else mask,
        edge_index=torch.empty(2, 0, dtype=torch.long) if edge_index is None else edge_index,
        labels=torch.zeros(num_rows, dtype=torch.long),
        multilabel=multilabel,
    )


def random_output(num_rows: int, dims: list[int], seed: int) -> GNNOutput:
    """A GNNOutput with layer widths ``dims`` (last = classes) filled with seeded noise."""
    g = torch.Generator().manual_seed(seed)
    layers = [torch.randn(num_rows, d, generator=g) for d in dims]
    return GNNOutput(logits=layers[-1], hidden=layers[:-1])


@pytest.mark.parametrize("cls", [NoKD, LogitKD, FitNet, LSP, GCRD, ABKD])
def test_every_hyper_parameter_has_a_default_and_a_docstring_line(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[3:]
    assert [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:3]] == [
        "student_dims", "teacher_dims"]
    for p in params:
        assert p.default is not inspect.Parameter.empty, f"{cls.__name__}.{p.name} has no default"
        assert f"{p.name}:" in cls.__doc__, f"{cls.__name__} docstring does not describe {p.name}"


def test_no_kd_adds_no_term():
    out = random_output(4, [5, 3], seed=0)
    assert NoKD([5, 3], [5, 3])(out, out, context(4)) == {}


# ---------------------------------------------------------------- logit KD
def test_logit_kd_is_zero_for_equal_logits():
    out = random_output(6, [4, 5], seed=1)
    loss = LogitKD([4, 5], [4, 5])(out, out, context(6))["kd_logit"]
    assert loss.abs().item() < 1e-6


def test_logit_kd_hand_computed_two_nodes_three_classes():
    ln2 = math.log(2.0)
    student = GNNOutput(torch.tensor([[0.0, 0.0, 0.0], [ln2, 0.0, 0.0]]), [])
    teacher = GNNOutput(torch.tensor([[ln2, 0.0, 0.0], [0.0, 0.0, 0.0]]), [])
    # node 0: KL([1/2, 1/4, 1/4] || uniform); node 1: KL(uniform || [1/2, 1/4, 1/4])
    kl0 = 0.5 * math.log(0.5 * 3) + 2 * 0.25 * math.log(0.25 * 3)
    kl1 = (1 / 3) * math.log((1 / 3) / 0.5) + (2 / 3) * math.log((1 / 3) / 0.25)
    loss = LogitKD([3], [3], weight=2.0, temperature=1.0)(student, teacher, context(2))["kd_logit"]
    assert loss.item() == pytest.approx(2.0 * (kl0 + kl1) / 2, rel=1e-5)


def test_logit_kd_scales_with_temperature_squared():
    out_s, out_t = random_output(5, [3, 4], seed=2), random_output(5, [3, 4], seed=3)
    base = LogitKD([3, 4], [3, 4], temperature=1.0)(out_s, out_t, context(5))["kd_logit"]
    T = 3.0
    scaled_s, scaled_t = GNNOutput(out_s.logits * T, []), GNNOutput(out_t.logits * T, [])
    hot = LogitKD([3, 4], [3, 4], temperature=T)(scaled_s, scaled_t, context(5))["kd_logit"]
    assert hot.item() == pytest.approx(T**2 * base.item(), rel=1e-5)


def test_logit_kd_is_efficient_gnns_value_times_num_classes():
    out_s, out_t = random_output(7, [6], seed=4), random_output(7, [6], seed=5)
    ours = LogitKD([6], [6], temperature=4.0)(out_s, out_t, context(7))["kd_logit"]
    # their F.kl_div default: the sum over all N * C elements divided by N * C
    kl_sum = F.kl_div(F.log_softmax(out_s.logits / 4, 1), F.softmax(out_t.logits / 4, 1), reduction="sum")
    theirs = 16.0 * kl_sum / out_s.logits.numel()
    assert ours.item() == pytest.approx(6 * theirs.item(), rel=1e-5)


def test_logit_kd_multilabel_hand_value_and_mask():
    student = GNNOutput(torch.tensor([[math.log(3.0)], [5.0]]), [])
    teacher = GNNOutput(torch.tensor([[0.0], [-5.0]]), [])
    mask = torch.tensor([True, False])  # the second row must be ignored
    loss = LogitKD([1], [1], temperature=1.0)(student, teacher, context(2, mask=mask, multilabel=True))["kd_logit"]
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_logit_kd_sends_no_gradient_to_the_teacher():
    student, teacher = random_output(4, [3], seed=6), random_output(4, [3], seed=7)
    student.logits.requires_grad_(True)
    teacher.logits.requires_grad_(True)
    LogitKD([3], [3])(student, teacher, context(4))["kd_logit"].backward()
    assert student.logits.grad is not None and student.logits.grad.abs().sum() > 0
    assert teacher.logits.grad is None


def test_bad_mask_raises_a_clear_error():
    out = random_output(4, [3], seed=8)
    with pytest.raises(ValueError, match="same rows"):
        LogitKD([3], [3])(out, out, context(4, mask=torch.ones(5, dtype=torch.bool)))
    with pytest.raises(ValueError, match="selects no row"):
        LogitKD([3], [3])(out, out, context(4, mask=torch.zeros(4, dtype=torch.bool)))


# ---------------------------------------------------------------- FitNet
def test_fitnet_is_zero_with_identity_regressor_and_equal_features():
    out = random_output(5, [4, 3], seed=9)
    fitnet = FitNet([4, 3], [4, 3])
    with torch.no_grad():
        fitnet.regressor.weight.copy_(torch.eye(4))
        fitnet.regressor.bias.zero_()
    assert fitnet(out, out, context(5))["kd_hint"].item() == pytest.approx(0.0, abs=1e-7)


def test_fitnet_hand_value():
    student = GNNOutput(torch.zeros(2, 3), [torch.eye(2)])
    teacher = GNNOutput(torch.zeros(2, 3), [torch.zeros(2, 2)])
    fitnet = FitNet([2, 3], [2, 3], weight=0.5)
    with torch.no_grad():
        fitnet.regressor.weight.copy_(2 * torch.eye(2))
        fitnet.regressor.bias.fill_(1.0)
    # regressed rows [[3, 1], [1, 3]] against zeros: mean of 9, 1, 1, 9
    assert fitnet(student, teacher, context(2))["kd_hint"].item() == pytest.approx(0.5 * 5.0)


def test_fitnet_picks_the_asked_layers_and_rejects_missing_ones():
    fitnet = FitNet([4, 6, 3], [8, 5, 3], student_layer=0, teacher_layer=-1)
    assert (fitnet.regressor.in_features, fitnet.regressor.out_features) == (4, 5)
    with pytest.raises(ValueError, match="hidden layer 2 does not exist"):
        FitNet([4, 6, 3], [8, 5, 3], student_layer=2)
    with pytest.raises(ValueError, match="0 hidden layer"):
        FitNet([3], [8, 3])
    with pytest.raises(ValueError, match="layer widths"):
        fitnet(random_output(3, [4, 7, 3], seed=0), random_output(3, [8, 5, 3], seed=1), context(3))


# ---------------------------------------------------------------- LSP
STAR = torch.tensor([[1, 2, 0], [0, 0, 1]])  # edges 1->0, 2->0, 0->1


@pytest.mark.parametrize("kernel", KERNELS)
def test_lsp_is_zero_for_equal_features_and_positive_otherwise(kernel):
    edge_index = torch.tensor([[1, 2, 3, 0, 4, 2], [0, 0, 0, 1, 1, 4]])
    student, teacher = random_output(5, [4, 3], seed=10), random_output(5, [4, 3], seed=11)
    lsp = LSP([4, 3], [4, 3], kernel=kernel, l1_scale=1.0)
    assert lsp(student, student, context(5, edge_index))["kd_lsp"].item() == pytest.approx(0.0, abs=1e-6)
    assert lsp(student, teacher, context(5, edge_index))["kd_lsp"].item() > 1e-4


def test_lsp_hand_computed_cosine_star():
    student = GNNOutput(torch.zeros(3, 2), [torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])])
    teacher = GNNOutput(torch.zeros(3, 2), [torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])])
    # target 0: student cosines [1, 0] -> softmax; teacher cosines [0, 0] -> [1/2, 1/2]
    e = math.e
    expected = 0.5 * math.log(0.5 / (e / (e + 1))) + 0.5 * math.log(0.5 / (1 / (e + 1)))
    mask = torch.tensor([True, False, False])  # the edge 0->1 targets an unmasked node
    loss = LSP([2, 2], [2, 2], kernel="cosine")(student, teacher, context(3, STAR, mask))["kd_lsp"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_lsp_log_probabilities_are_pyg_softmax_and_survive_far_neighbours():
    edge_index = torch.tensor([[1, 2, 3, 0], [0, 0, 0, 1]])
    features = torch.randn(4, 3)
    scores = edge_scores(features, edge_index, "rbf")
    log_p = local_structure_log_prob(scores, edge_index[1], 4)
    torch.testing.assert_close(log_p.exp(), softmax(scores, edge_index[1], num_nodes=4))
    far = torch.tensor([[0.0], [0.1], [500.0], [0.0]])
    loss = LSP([1, 2], [1, 2], kernel="l2")(
        GNNOutput(torch.zeros(4, 2), [far]), GNNOutput(torch.zeros(4, 2), [far.flip(0)]), context(4, edge_index)
    )["kd_lsp"]
    assert torch.isfinite(loss) and loss > 0


def test_lsp_rejects_unknown_kernel_and_edgeless_masks():
    with pytest.raises(ValueError, match="unknown LSP kernel"):
        LSP([2, 2], [2, 2], kernel="gauss")
    out = random_output(3, [2, 2], seed=12)
    with pytest.raises(ValueError, match="no edge"):
        LSP([2, 2], [2, 2])(out, out, context(3, STAR, torch.tensor([False, False, True])))


def test_lsp_sends_no_gradient_to_the_teacher():
    student, teacher = random_output(3, [2, 2], seed=13), random_output(3, [2, 2], seed=14)
    student.hidden[0].requires_grad_(True)
    teacher.hidden[0].requires_grad_(True)
    LSP([2, 2], [2, 2])(student, teacher, context(3, STAR))["kd_lsp"].backward()
    assert student.hidden[0].grad.abs().sum() > 0 and teacher.hidden[0].grad is None


# ---------------------------------------------------------------- G-CRD
def test_contrastive_loss_two_node_known_value():
    z = torch.eye(2)
    for tau in (1.0, 0.5):
        assert contrastive_loss(z, z, tau).item() == pytest.approx(math.log1p(math.exp(-1 / tau)), rel=1e-5)


def test_contrastive_loss_prefers_aligned_over_shuffled():
    z = torch.eye(8) * 3.0
    aligned = contrastive_loss(z, z, 0.075)
    shuffled = contrastive_loss(z, z[torch.roll(torch.arange(8), 1)], 0.075)
    assert aligned.item() < 1e-3 < shuffled.item()


def test_gcrd_samples_at_most_max_nodes_and_trains_only_its_heads():
    student, teacher = random_output(20, [4, 3], seed=15), random_output(20, [6, 3], seed=16)
    student.hidden[0].requires_grad_(True)
    teacher.hidden[0].requires_grad_(True)
    gcrd = GCRD([4, 3], [6, 3], proj_dim=8, max_nodes=5)
    seen: list[int] = []
    gcrd.student_head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    loss = gcrd(student, teacher, context(20))["kd_crd"]
    loss.backward()
    assert seen == [5] and torch.isfinite(loss)
    assert teacher.hidden[0].grad is None
    assert gcrd.teacher_head[0].weight.grad is not None and student.hidden[0].grad is not None
    with pytest.raises(ValueError, match="at least 2 masked rows"):
        gcrd(student, teacher, context(20, mask=torch.arange(20) == 0))


# ---------------------------------------------------------------- bf16 autocast
@pytest.mark.parametrize("cls", [LogitKD, FitNet, LSP, GCRD])
def test_bf16_autocast_is_finite_and_close_to_fp32(cls):
    torch.manual_seed(0)
    edge_index = torch.randint(0, 12, (2, 40))
    student, teacher = random_output(12, [8, 4], seed=17), random_output(12, [8, 4], seed=18)
    distiller = cls([8, 4], [8, 4]).eval()  # eval: G-CRD's BatchNorm uses the same statistics twice
    ref = sum(distiller(student, teacher, context(12, edge_index)).values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = sum(distiller(student, teacher, context(12, edge_index)).values())
    assert torch.isfinite(low)
    assert low.float().item() == pytest.approx(ref.item(), rel=5e-2, abs=1e-3)
