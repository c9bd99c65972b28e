"""GLNN setting: a GCNII teacher distilled by ABKD into an MLP that needs no graph at inference."""
from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch_geometric.data import Data

from datamodules.ogb import SyntheticMAGDataModule
from graphkd.distill import ABKD
from lightning_modules.distillation import DistillationModule
from lightning_modules.node_classifier import NodeClassifier
from tests.graph_fixtures import TINY_MAG

GCNII_OPTIONS = {"alpha": 0.1, "lamda": 0.5, "conv_weight_decay": 0.01}


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return SyntheticMAGDataModule(TINY_MAG, root=str(tmp_path_factory.mktemp("mag")), hetero=False)


def facts(dm):
    return {"num_features": dm.num_features, "num_classes": dm.num_classes, "graph_info": dm.graph_info}


def trainer(tmp_path, epochs):
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path)


@pytest.fixture(scope="module")
def gcnii_teacher_ckpt(datamodule, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gcnii_teacher")
    teacher = NodeClassifier(**facts(datamodule), arch="gcnii", hidden_channels=16, num_layers=8, dropout=0.6,
                             arch_options=GCNII_OPTIONS)
    t = trainer(folder, epochs=2)
    t.fit(teacher, datamodule)
    t.save_checkpoint(folder / "teacher.ckpt")
    return folder / "teacher.ckpt"


@pytest.fixture(scope="module")
def mlp_student(datamodule, gcnii_teacher_ckpt, tmp_path_factory):
    module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(gcnii_teacher_ckpt), distiller=ABKD,
                                arch="mlp", hidden_channels=12, num_layers=3)
    trainer(tmp_path_factory.mktemp("student"), epochs=2).fit(module, datamodule)
    return module.eval()


def test_teacher_optimizer_decays_gcnii_layers_more_than_dense_layers(datamodule):
    module = NodeClassifier(**facts(datamodule), arch="gcnii", hidden_channels=8, num_layers=4,
                            optimizer=partial(torch.optim.Adam, lr=0.01, weight_decay=5e-4), arch_options=GCNII_OPTIONS)
    groups = module.configure_optimizers().param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 5e-4]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in module.model.convs.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in module.model.lins.parameters()}


def test_abkd_attends_from_mlp_layers_to_every_gcnii_layer(mlp_student):
    attention = mlp_student.distiller.attention()
    assert attention.shape == (2, 8)  # (MLP hidden layers, GCNII layers) of the restored teacher
    assert torch.isfinite(attention).all() and torch.allclose(attention.sum(1), torch.ones(2))
    assert not torch.allclose(attention, torch.full_like(attention, 1 / 8))  # it was trained
    optimized = {id(p) for g in mlp_student.configure_optimizers().param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in mlp_student.teacher.parameters()}  # the frozen GCNII is left out
    assert {id(p) for p in mlp_student.distiller.parameters()} <= optimized


def test_mlp_student_predicts_without_the_graph(datamodule, mlp_student):
    """Fails if the student reads edges: absent edges and edges that would crash any gather give the same output."""
    graph = datamodule.graph
    n = graph.num_nodes
    poisoned = torch.stack([torch.arange(7) + n + 1000, torch.arange(7)])  # sources out of range: any use raises
    with torch.no_grad():
        full = mlp_student.predict_step(graph, 0)
        no_edges = mlp_student.predict_step(Data(x=graph.x, y=graph.y), 0)
        bad_edges = mlp_student.predict_step(Data(x=graph.x, y=graph.y, edge_index=poisoned), 0)
        logits = mlp_student(graph).logits
        assert torch.equal(logits, mlp_student(Data(x=graph.x, edge_index=poisoned)).logits)
    for prediction in (no_edges, bad_edges):
        assert torch.equal(prediction["prediction"], full["prediction"])
        assert torch.equal(prediction["node_id"], full["node_id"])
    with pytest.raises((IndexError, RuntimeError)):  # the poison does bite a model that reads edges
        with torch.no_grad():
            mlp_student.teacher(graph.x, poisoned)
