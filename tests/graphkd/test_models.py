"""Every architecture exposes its layers; parameter counts match the G-CRD MAG setting."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from graphkd.feature_dropout import feature_dropout
from graphkd.graph_info import HeteroSchema
from graphkd.models import RGCN, build_gnn, count_parameters, widest_within

MAG_SCHEMA = HeteroSchema(
    node_types=("author", "field_of_study", "institution", "paper"),
    edge_types=(("author", "affiliated_with", "institution"), ("author", "writes", "paper"),
                ("paper", "cites", "paper"), ("paper", "has_topic", "field_of_study"),
                ("institution", "rev_affiliated_with", "author"), ("paper", "rev_writes", "author"),
                ("field_of_study", "rev_has_topic", "paper")),
    featureless_num_nodes={"author": 1134649, "field_of_study": 59965, "institution": 8740},
    target="paper",
)


@pytest.mark.parametrize("arch", ["gcn", "sage", "gat", "mlp"])
@pytest.mark.parametrize("num_layers", [1, 2, 4])
def test_hidden_outputs_and_widths(arch, num_layers):
    model = build_gnn(arch, 8, 6, 3, num_layers, dropout=0.0, heads=2)
    x, edge_index = torch.randn(10, 8), torch.randint(0, 10, (2, 30))
    out = model(x, edge_index)
    assert out.logits.shape == (10, 3) and len(out.hidden) == num_layers - 1
    assert [h.shape[1] for h in out.layers] == model.layer_dims
    assert all((h >= 0).all() for h in out.hidden)  # post-ReLU


def test_mlp_ignores_edges_and_gcn_does_not():
    torch.manual_seed(0)
    x, edges = torch.randn(6, 4), torch.tensor([[0, 1, 2], [1, 2, 3]])
    for arch, same in (("mlp", True), ("gcn", False)):
        model = build_gnn(arch, 4, 5, 2, 2, dropout=0.0).eval()
        empty = model(x, torch.empty(2, 0, dtype=torch.long)).logits
        assert torch.allclose(model(x, edges).logits, empty) is same


def test_rgcn_compression_ratio_of_the_gcrd_mag_setting():
    """Teacher 3 x 512, student 2 x 32 on ogbn-mag's schema: ~5.58M vs ~169k parameters (embeddings excluded)."""
    small = replace(MAG_SCHEMA, featureless_num_nodes={"author": 5, "field_of_study": 5, "institution": 5})
    teacher = build_gnn("rgcn", 128, 512, 349, 3, hetero=small)
    student = build_gnn("rgcn", 128, 32, 349, 2, hetero=small)
    assert count_parameters(teacher) == 5_575_540
    assert count_parameters(student) == 169_428
    assert count_parameters(teacher) / count_parameters(student) == pytest.approx(32.9, abs=0.05)


def test_rgcn_full_batch_equals_sampled_ids():
    schema = replace(MAG_SCHEMA, featureless_num_nodes={"author": 4, "field_of_study": 3, "institution": 2})
    model = RGCN(5, 8, 3, 2, list(schema.node_types), list(schema.edge_types), schema.featureless_num_nodes, "paper", 0.0)
    x_dict = {"paper": torch.randn(6, 5)}
    edges = {("author", "writes", "paper"): torch.tensor([[0, 1, 3], [0, 2, 5]])}
    num_nodes = {"paper": 6, "author": 4, "field_of_study": 3, "institution": 2}
    full = model(x_dict, edges, num_nodes=num_nodes)
    ids = {t: torch.arange(n) for t, n in num_nodes.items()}
    assert torch.allclose(full.logits, model(x_dict, edges, node_ids=ids).logits)
    assert len(full.hidden) == 1 and full.hidden[0].shape == (6, 8)


def test_unknown_architecture_and_hetero_mismatch():
    with pytest.raises(ValueError, match="unknown arch 'gin'"):
        build_gnn("gin", 4, 4, 2, 2)
    with pytest.raises(ValueError, match="needs a heterogeneous graph"):
        build_gnn("rgcn", 4, 4, 2, 2)
    with pytest.raises(ValueError, match="homogeneous but the data is heterogeneous"):
        build_gnn("gcn", 4, 4, 2, 2, hetero=MAG_SCHEMA)


def test_sparse_csr_features_give_the_dense_result():
    torch.manual_seed(0)
    x = (torch.rand(12, 30) < 0.2).float()
    edge_index = torch.randint(0, 12, (2, 40))
    for arch in ("gcn", "mlp", "gat"):
        model = build_gnn(arch, 30, 8, 3, 2, dropout=0.0).eval()
        torch.testing.assert_close(model(x.to_sparse_csr(), edge_index).logits, model(x, edge_index).logits)
    dropped = feature_dropout(x.to_sparse_csr(), 0.5, training=True).to_dense()
    assert set(torch.unique(dropped).tolist()) <= {0.0, 2.0}  # kept entries rescaled by 1 / (1 - p), zeros stay zero
    assert ((dropped != 0) <= (x != 0)).all()


@pytest.mark.parametrize("options, named", [({"dropout": 1.5}, "dropout must be in"), ({"dropout": -0.1}, "dropout must be in"),
                                             ({"num_layers": 0}, "at least 1")])
def test_out_of_range_options_are_refused(options, named):
    arguments = {"arch": "gcn", "in_channels": 4, "hidden_channels": 8, "out_channels": 3, "num_layers": 2} | options
    with pytest.raises(ValueError, match=named):
        build_gnn(**arguments)


def test_widest_within_finds_the_largest_width_of_a_budget():
    """A 2-layer MLP 10 -> h -> 3 has 10h + h + 3h + 3 = 14h + 3 parameters: budget 1000 admits h = 71 exactly."""
    probed: list[int] = []
    build = lambda h: probed.append(h) or build_gnn("mlp", 10, h, 3, 2)
    assert count_parameters(build(71)) == 997 and widest_within(1000, build) == 71
    assert max(probed) <= 2 * 71 + 2  # never a model much larger than the budget on the way
    assert widest_within(997, build) == 71 and widest_within(996, build) == 70
    with pytest.raises(ValueError, match="no width fits in 10 parameters"):
        widest_within(10, build)
