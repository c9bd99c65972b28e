"""FrozenTeacherCache: one teacher pass while graph, weights and mode are unchanged; a recompute when any changes."""
from __future__ import annotations

import torch
from torch_geometric.data import Data

from graphkd.graph_info import GraphInfo
from graphkd.models import build_gnn
from graphkd.node_batch import NodeBatch
from graphkd.teacher_cache import FrozenTeacherCache

INFO = GraphInfo(dataset="toy", task="multiclass", num_classes=3)


def setup():
    torch.manual_seed(0)
    graph = Data(x=torch.randn(20, 5), edge_index=torch.randint(0, 20, (2, 60)), y=torch.randint(0, 3, (20,)))
    teacher = build_gnn("gcn", 5, 8, 3, 2, 0.5, 4, False, None, None).eval().requires_grad_(False)
    return graph, teacher, FrozenTeacherCache()


def cached(cache, teacher, graph):
    view = NodeBatch.of(graph, INFO)
    with torch.no_grad():
        return cache(teacher, graph, lambda: view.run(teacher))


def fresh(teacher, graph):
    with torch.no_grad():
        return NodeBatch.of(graph, INFO).run(teacher)


def test_same_graph_and_teacher_run_once_and_give_the_computed_output():
    graph, teacher, cache = setup()
    outputs = [cached(cache, teacher, graph) for _ in range(3)]
    assert cache.computed == 1
    expected = fresh(teacher, graph)
    for output in outputs:
        assert torch.equal(output.logits, expected.logits)
        assert all(torch.equal(a, b) for a, b in zip(output.hidden, expected.hidden, strict=True))


def test_any_change_recomputes():
    graph, teacher, cache = setup()
    cached(cache, teacher, graph)
    graph.x[0, 0] += 1.0  # in-place edit of the graph
    assert torch.equal(cached(cache, teacher, graph).logits, fresh(teacher, graph).logits) and cache.computed == 2
    other = Data(x=graph.x.clone(), edge_index=graph.edge_index.clone(), y=graph.y)  # equal values, another graph
    cached(cache, teacher, other)
    assert cache.computed == 3
    teacher.load_state_dict({k: v + 0.5 for k, v in teacher.state_dict().items()})  # new weights
    assert torch.equal(cached(cache, teacher, other).logits, fresh(teacher, other).logits) and cache.computed == 4
    teacher.train()
    cached(cache, teacher, other)
    assert cache.computed == 5
    teacher.eval()
    output = cached(cache, teacher, other)
    output.logits.mul_(0)  # a caller writing into the shared output
    assert not torch.equal(cached(cache, teacher, other).logits, output.logits) and cache.computed == 7
    output.hidden.append(output.logits)  # the hidden list is the caller's own
    assert len(cached(cache, teacher, other).hidden) == 1


def test_sparse_csr_features_are_fingerprinted_by_their_parts():
    """Bag-of-words features kept as CSR (``PyGDataModule(sparse_features=True)``) hit the cache; editing their
    values recomputes."""
    graph, teacher, cache = setup()
    graph.x = graph.x.relu().to_sparse_csr()
    first = cached(cache, teacher, graph)
    assert torch.equal(cached(cache, teacher, graph).logits, first.logits) and cache.computed == 1
    graph.x.values().mul_(2.0)
    assert torch.equal(cached(cache, teacher, graph).logits, fresh(teacher, graph).logits) and cache.computed == 2
