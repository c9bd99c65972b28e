"""The distillation module: frozen teacher untouched, computed once and referenced by its checkpoints, clear
errors for unusable teachers."""
from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.ogb import SyntheticMAGDataModule
from graphkd.distill import ABKD, FitNet, LogitKD, NoKD
from graphkd.models import count_parameters
from graphkd.node_batch import NodeBatch
from lightning_modules.distillation import (
    TEACHER_REFERENCE_KEY,
    DistillationModule,
    TeacherCheckpointError,
    TeacherOptionError,
)
from lightning_modules.node_classifier import NodeClassifier
from tests.graph_fixtures import TINY_MAG


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return SyntheticMAGDataModule(TINY_MAG, root=str(tmp_path_factory.mktemp("mag")), hetero=False)


def trainer(tmp_path, epochs=2):
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path)


def facts(dm):
    return {"num_features": dm.num_features, "num_classes": dm.num_classes, "graph_info": dm.graph_info}


@pytest.fixture(scope="module")
def teacher_ckpt(datamodule, tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    teacher = NodeClassifier(**facts(datamodule), arch="sage", hidden_channels=32, num_layers=3)
    t = trainer(folder, epochs=3)
    t.fit(teacher, datamodule)
    path = folder / "teacher.ckpt"
    t.save_checkpoint(path)
    return path


@pytest.mark.parametrize("distiller", [LogitKD, ABKD, FitNet])
def test_frozen_teacher_is_untouched_and_student_learns(datamodule, teacher_ckpt, tmp_path, distiller):
    module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), distiller=distiller,
                                arch="gcn", hidden_channels=8, num_layers=2)
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer(tmp_path).fit(module, datamodule)
    assert all(torch.equal(teacher_before[k], v) for k, v in module.teacher.state_dict().items())
    assert any(not torch.equal(student_before[k], v) for k, v in module.model.state_dict().items())
    assert not module.teacher.training  # frozen teacher stays in eval mode


def test_joint_teacher_training_updates_teacher(datamodule, teacher_ckpt, tmp_path):
    module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), train_teacher=True,
                                arch="gcn", hidden_channels=8, num_layers=2)
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    trainer(tmp_path, epochs=1).fit(module, datamodule)
    assert any(not torch.equal(before[k], v) for k, v in module.teacher.state_dict().items())


@pytest.mark.parametrize("arch", ["gcn", "mlp"])
def test_compression_sizes_the_widest_student_within_the_ratio(datamodule, teacher_ckpt, tmp_path, arch):
    module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), compression=8, arch=arch,
                                num_layers=2)
    width, budget = module.hparams.hidden_channels, count_parameters(module.teacher) // 8
    wider = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), arch=arch, num_layers=2,
                               hidden_channels=width + 1)
    assert count_parameters(module.model) <= budget < count_parameters(wider.model)
    trainer(tmp_path, epochs=1).fit(module, datamodule)
    path = tmp_path / "student.ckpt"
    module.trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["hyper_parameters"]
    assert (saved["hidden_channels"], saved["compression"]) == (width, 8)  # the width a reader rebuilds


def test_a_joint_teacher_trains_on_its_own_loss_and_is_never_pushed_by_kd(datamodule, teacher_ckpt, tmp_path):
    """The teacher's updates are the same with no KD and with a KD term of weight 100 (kd_objective detaches it)."""
    teachers = []
    for distiller in (NoKD, lambda s, t: LogitKD(s, t, weight=100.0)):
        L.seed_everything(2)
        module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), train_teacher=True,
                                    distiller=distiller, arch="gcn", hidden_channels=8, num_layers=2, dropout=0.0)
        before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
        trainer(tmp_path, epochs=3).fit(module, datamodule)
        teachers.append(module.teacher.state_dict())
    assert any(not torch.equal(before[k], teachers[0][k]) for k in before)  # it trained
    for key in before:
        torch.testing.assert_close(teachers[0][key], teachers[1][key])


def test_student_deeper_than_teacher_is_refused(datamodule, teacher_ckpt):
    with pytest.raises(ValueError, match="student has 4 layers but the teacher only 3"):
        DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), num_layers=4)


def test_teacher_of_wrong_architecture(datamodule, teacher_ckpt, tmp_path):
    checkpoint = torch.load(teacher_ckpt, weights_only=False)
    checkpoint["hyper_parameters"]["arch"] = "gat"  # weights are GraphSAGE
    wrong = tmp_path / "wrong_arch.ckpt"
    torch.save(checkpoint, wrong)
    with pytest.raises(TeacherCheckpointError, match="do not match the architecture"):
        DistillationModule(**facts(datamodule), teacher_checkpoint=str(wrong))


def test_teacher_of_another_dataset(datamodule, teacher_ckpt):
    other = {**facts(datamodule), "num_classes": datamodule.num_classes + 3}
    with pytest.raises(TeacherCheckpointError, match="classes, but this data has"):
        DistillationModule(**other, teacher_checkpoint=str(teacher_ckpt))


@pytest.mark.parametrize(("content", "kind"), [(b"", "an empty file"), (b"not a checkpoint at all", "a text file")])
def test_corrupt_or_missing_teacher_checkpoint(datamodule, tmp_path, content, kind):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(TeacherCheckpointError, match=f"as a Lightning checkpoint: it is {kind}"):
        DistillationModule(**facts(datamodule), teacher_checkpoint=str(bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DistillationModule(**facts(datamodule), teacher_checkpoint=str(tmp_path / "absent.ckpt"))
    with pytest.raises(TeacherCheckpointError, match="teacher_checkpoint is empty"):
        DistillationModule(**facts(datamodule))


def test_minibatch_hetero_distillation_matches_schema(tmp_path_factory, tmp_path):
    pytest.importorskip("torch_sparse", reason="NeighborLoader needs torch-sparse or pyg-lib (make setup-sampling)")
    dm = SyntheticMAGDataModule(TINY_MAG, root=str(tmp_path_factory.mktemp("hmag")), hetero=True, batch_size=64,
                                num_neighbors=[4, 4, 4])
    teacher = NodeClassifier(**facts(dm), arch="rgcn", hidden_channels=16, num_layers=3)
    t = trainer(tmp_path, epochs=1)
    t.fit(teacher, dm)
    t.save_checkpoint(tmp_path / "t.ckpt")
    student = DistillationModule(**facts(dm), teacher_checkpoint=str(tmp_path / "t.ckpt"), distiller=ABKD,
                                 arch="rgcn", hidden_channels=8, num_layers=2)
    t2 = trainer(tmp_path, epochs=1)
    t2.fit(student, dm)
    assert {"train/loss_kd_align", "val/acc", "params/compression_ratio"} <= set(t2.callback_metrics)


def test_parameter_counts_are_logged_once_per_fit(datamodule, teacher_ckpt, tmp_path):
    """``params/*`` never change during a fit: logged in its first epoch only, they stay in ``callback_metrics``;
    a second fit (e.g. a resumed one) logs them again."""
    module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), arch="gcn",
                                hidden_channels=8, num_layers=2)
    for fit in range(2):
        t = L.Trainer(max_epochs=3, logger=L.pytorch.loggers.CSVLogger(tmp_path, name=f"fit{fit}"),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1)
        t.fit(module, datamodule)
        rows = list(csv.DictReader((Path(t.logger.log_dir) / "metrics.csv").read_text().splitlines()))
        logged = [row for row in rows if row.get("params/student")]
        assert len(logged) == 1 and logged[0]["epoch"] == "0"
        assert len([row for row in rows if row.get("val/acc")]) == 3  # the epoch metrics: every epoch
        student = sum(p.numel() for p in module.model.parameters())
        assert float(logged[0]["params/student"]) == t.callback_metrics["params/student"] == student


def test_injected_optimizer_trains_the_student_and_the_kd_parameters(datamodule, teacher_ckpt):
    """The student's optimizer argument is NodeClassifier's; ABKD's attention and projections are optimised too."""
    module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), distiller=ABKD,
                                arch="gcn", hidden_channels=8, num_layers=2,
                                optimizer=lambda params: torch.optim.SGD(params, lr=0.5))
    optimizer = module.configure_optimizers()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.5
    assert {id(p) for p in [*module.model.parameters(), *module.distiller.parameters()]} <= optimised
    assert not optimised & {id(p) for p in module.teacher.parameters()}  # the frozen teacher is not
    default = NodeClassifier(**facts(datamodule)).configure_optimizers()
    assert isinstance(default, torch.optim.Adam)
    assert (default.defaults["lr"], default.defaults["weight_decay"]) == (0.01, 5e-4)


def trained_weights(datamodule, teacher_ckpt, tmp_path, epochs=3, **options):
    """A seeded ABKD student trained ``epochs`` full-batch epochs; returns the module and its state dict."""
    L.seed_everything(0, verbose=False)
    module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), distiller=ABKD,
                                arch="gcn", hidden_channels=8, num_layers=2, **options)
    trainer(tmp_path, epochs=epochs).fit(module, datamodule)
    return module, module.state_dict()


def test_cached_teacher_training_equals_uncached_bit_for_bit(datamodule, teacher_ckpt, tmp_path):
    cached, cached_weights = trained_weights(datamodule, teacher_ckpt, tmp_path / "cached")
    uncached, uncached_weights = trained_weights(datamodule, teacher_ckpt, tmp_path / "uncached", cache_teacher=False)
    assert cached.teacher_cache.computed == 1  # three full-batch steps, one teacher pass
    assert uncached.teacher_cache.computed == 0
    assert cached_weights.keys() == uncached_weights.keys()
    assert all(torch.equal(cached_weights[k], uncached_weights[k]) for k in cached_weights)


def test_cache_is_not_used_with_a_trained_or_train_mode_teacher(datamodule, teacher_ckpt, tmp_path):
    joint = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), train_teacher=True,
                               arch="gcn", hidden_channels=8, num_layers=2)
    passes = []
    joint.teacher.register_forward_hook(lambda *_: passes.append(1))
    trainer(tmp_path, epochs=2).fit(joint, datamodule)
    assert joint.teacher_cache.computed == 0 and len(passes) == 2  # one teacher pass per training step

    frozen = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), arch="gcn",
                                hidden_channels=8, num_layers=2)
    view = NodeBatch.of(datamodule.graph, datamodule.graph_info)
    frozen.teacher_output(view)
    assert frozen.teacher_cache.computed == 1
    frozen.teacher.train()  # e.g. a user's hook: dropout is live, outputs differ per call, nothing is cached
    frozen.teacher_output(view)
    frozen.teacher_output(view)
    assert frozen.teacher_cache.computed == 1
    frozen.teacher.eval()
    frozen.teacher_output(view)
    assert frozen.teacher_cache.computed == 1


def sampled_batch(graph, nodes: torch.Tensor):
    """A stand-in for a ``NeighborLoader`` batch: the subgraph of ``nodes`` (seeds first), with ``n_id`` and ``batch_size``."""
    sub = graph.subgraph(nodes)
    sub.n_id, sub.batch_size = nodes, 16
    return sub


def test_teacher_on_full_graph_gives_full_graph_rows_of_a_mini_batch(datamodule, teacher_ckpt, tmp_path):
    module = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), arch="gcn",
                                hidden_channels=8, num_layers=2, teacher_on_full_graph=True)
    trainer(tmp_path, epochs=1).fit(module, datamodule)  # attaches the datamodule
    graph, info = datamodule.graph, datamodule.graph_info
    with torch.no_grad():
        full = NodeBatch.of(graph, info).run(module.teacher)
    for seed in range(3):
        nodes = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(seed))[:80]
        output = module.teacher_output(NodeBatch.of(sampled_batch(graph, nodes), info))
        assert torch.equal(output.logits, full.logits[nodes])
        assert all(torch.equal(h, f[nodes]) for h, f in zip(output.hidden, full.hidden, strict=True))
    assert module.teacher_cache.computed == 1  # the full-batch step's pass on the same graph serves every mini-batch

    unattached = DistillationModule(**facts(datamodule), teacher_checkpoint=str(teacher_ckpt), teacher_on_full_graph=True)
    with pytest.raises(TeacherOptionError, match="needs a datamodule holding the whole graph"):
        unattached.teacher_output(NodeBatch.of(sampled_batch(graph, nodes), info))

    module.hparams.teacher_on_full_graph = False  # the default: the teacher sees the sampled subgraph only
    sampled = module.teacher_output(NodeBatch.of(sampled_batch(graph, nodes), info))
    assert not torch.allclose(sampled.logits, full.logits[nodes])


def test_student_checkpoint_references_the_teacher_and_loads_it_back(datamodule, teacher_ckpt, tmp_path):
    module, weights = trained_weights(datamodule, teacher_ckpt, tmp_path, epochs=1)
    path = tmp_path / "student.ckpt"
    module.trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert not any(key.startswith("teacher.") for key in checkpoint["state_dict"])
    assert checkpoint[TEACHER_REFERENCE_KEY]["path"] == str(teacher_ckpt)
    assert len(checkpoint[TEACHER_REFERENCE_KEY]["sha256"]) == 64

    loaded = DistillationModule.load_from_checkpoint(path, graph_info=datamodule.graph_info, distiller=ABKD)
    assert loaded.state_dict().keys() == weights.keys()
    assert all(torch.equal(value, weights[key]) for key, value in loaded.state_dict().items())


def test_changed_teacher_file_is_refused_by_a_referencing_student(datamodule, teacher_ckpt, tmp_path):
    teacher = tmp_path / "teacher.ckpt"
    teacher.write_bytes(teacher_ckpt.read_bytes())
    module, weights = trained_weights(datamodule, teacher, tmp_path, epochs=1)
    path = tmp_path / "student.ckpt"
    module.trainer.save_checkpoint(path)
    moved = tmp_path / "moved" / "teacher.ckpt"  # the same teacher elsewhere, passed in the config: its hash matches
    moved.parent.mkdir()
    teacher.rename(moved)
    loaded = DistillationModule.load_from_checkpoint(path, graph_info=datamodule.graph_info, distiller=ABKD,
                                                     teacher_checkpoint=str(moved))
    assert all(torch.equal(value, weights[key]) for key, value in loaded.state_dict().items())

    checkpoint = torch.load(moved, weights_only=True)
    checkpoint["state_dict"] = {k: v + 1 for k, v in checkpoint["state_dict"].items()}  # e.g. the teacher retrained
    torch.save(checkpoint, teacher)
    torch.save(checkpoint, moved)
    with pytest.raises(TeacherCheckpointError, match="has changed since this student was trained"):
        DistillationModule.load_from_checkpoint(path, graph_info=datamodule.graph_info, distiller=ABKD)
    teacher.unlink()
    with pytest.raises(FileNotFoundError, match="references its frozen teacher .* which does not exist"):
        DistillationModule.load_from_checkpoint(path, graph_info=datamodule.graph_info, distiller=ABKD,
                                                teacher_checkpoint=str(moved))


def test_teacher_on_full_graph_runs_the_teacher_once_for_all_mini_batches(tmp_path_factory, tmp_path):
    pytest.importorskip("torch_sparse", reason="NeighborLoader needs torch-sparse or pyg-lib (make setup-sampling)")
    dm = SyntheticMAGDataModule(TINY_MAG, root=str(tmp_path_factory.mktemp("hmag_full")), hetero=True, batch_size=32,
                                num_neighbors=[4, 4])
    teacher = NodeClassifier(**facts(dm), arch="rgcn", hidden_channels=16, num_layers=2)
    t = trainer(tmp_path, epochs=1)
    t.fit(teacher, dm)
    t.save_checkpoint(tmp_path / "t.ckpt")
    for full_graph, passes in ((True, 1), (False, 0)):  # sampled batches never go through the cache
        student = DistillationModule(**facts(dm), teacher_checkpoint=str(tmp_path / "t.ckpt"), distiller=ABKD,
                                     arch="rgcn", hidden_channels=8, num_layers=2, teacher_on_full_graph=full_graph)
        trainer(tmp_path, epochs=2).fit(student, dm)
        assert len(dm.train_dataloader()) > 1 and student.teacher_cache.computed == passes
