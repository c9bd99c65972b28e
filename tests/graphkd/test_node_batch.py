"""The batch view: the same rows, labels and ids for full graphs and sampled subgraphs; GraphInfo round trips."""
from __future__ import annotations

import json

import torch
from torch_geometric.data import Data, HeteroData

from graphkd.graph_info import GraphInfo, HeteroSchema
from graphkd.node_batch import NodeBatch

HOMOGENEOUS = GraphInfo(dataset="Cora", task="multiclass", num_classes=3)
SCHEMA = HeteroSchema(node_types=("author", "paper"),
                      edge_types=(("author", "writes", "paper"), ("paper", "cites", "paper")),
                      featureless_num_nodes={"author": 4}, target="paper")
HETERO = GraphInfo(dataset="ogbn-mag", task="multiclass", num_classes=3, hetero=SCHEMA)


def full_graph() -> Data:
    mask = torch.tensor([True, False, True, False, False])
    return Data(x=torch.randn(5, 2), y=torch.tensor([0, 1, 2, 0, 1]), edge_index=torch.tensor([[0, 1], [1, 2]]),
                train_mask=mask, val_mask=~mask)


def test_full_graph_rows_are_its_split_masks_and_ids_its_positions():
    graph = full_graph()
    view = NodeBatch.of(graph, HOMOGENEOUS)
    assert not view.sampled and view.store is graph
    assert torch.equal(view.split_rows("train"), graph.train_mask)
    assert view.node_ids(view.split_rows("val")).tolist() == [1, 3, 4]
    assert view.seed_node_ids().tolist() == [0, 1, 2, 3, 4] and view.seed_rows() == slice(None, None)
    assert torch.equal(view.labels, graph.y)


def test_sampled_batch_rows_are_its_seeds_with_their_global_ids():
    batch = full_graph()
    batch.batch_size, batch.n_id = 2, torch.tensor([40, 7, 9, 12, 3])  # what NeighborLoader attaches
    view = NodeBatch.of(batch, HOMOGENEOUS)
    assert view.sampled and view.seed_count == 2
    assert view.split_rows("val").tolist() == [True, True, False, False, False]  # seeds, whatever the masks say
    assert view.node_ids(view.split_rows("train")).tolist() == [40, 7]
    assert view.seed_node_ids().tolist() == [40, 7] and view.seed_rows() == slice(None, 2)


def test_hetero_view_classifies_the_target_type_and_finds_its_own_relations():
    graph = HeteroData()
    graph["paper"].x, graph["paper"].y = torch.randn(3, 2), torch.tensor([2, 0, 1])
    graph["author"].num_nodes = 4
    graph["author", "writes", "paper"].edge_index = torch.tensor([[0, 3], [1, 2]])
    graph["paper", "cites", "paper"].edge_index = torch.tensor([[0, 1], [2, 0]])
    view = NodeBatch.of(graph, HETERO)
    assert view.store is graph["paper"] and view.labels.tolist() == [2, 0, 1]
    assert view.target_edges().tolist() == [[0, 1], [2, 0]]


def test_graph_info_round_trips_through_json_as_plain_types():
    plain = json.loads(json.dumps(HETERO.as_dict()))
    assert plain["hetero"]["edge_types"] == [["author", "writes", "paper"], ["paper", "cites", "paper"]]
    assert GraphInfo.from_dict(plain) == HETERO
    assert GraphInfo.from_dict(HOMOGENEOUS.as_dict()) == HOMOGENEOUS
