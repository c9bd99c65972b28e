"""The deep-teacher ABKD experiment end to end on real Cora with tiny budgets, and its paired statistics."""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from benchmarks import abkd_deep, abkd_gradient_share
from benchmarks.abkd_deep_report import paired_difference
from benchmarks.kd_training import Budget, Graph, fit, teacher_outputs, trainable_copy
from graphkd.distill import LogitKD, NoKD
from graphkd.models import build_gnn, count_parameters
from tests.graph_fixtures import copy_planetoid


def test_paired_difference_known_answer():
    # differences 1, 2, 3 points: mean 2, sd 1, t(0.975, 2) = 4.3027
    d = paired_difference([0.51, 0.52, 0.53], [0.50, 0.50, 0.50])
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(2.0)
    assert (d["low"], d["high"]) == pytest.approx((2 - 4.3027 / 3**0.5, 2 + 4.3027 / 3**0.5), abs=1e-3)


def test_experiment_runs_every_cell_method_and_seed_then_resumes(shared_assets: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    copy_planetoid(shared_assets, tmp_path / "data" / "planetoid", "Cora")
    monkeypatch.setitem(abkd_deep.TEACHERS, "Cora", abkd_deep.TeacherShape(3, 32, 0.5, 0.5, max_epochs=3, patience=2))
    argv = ["--data-root", str(tmp_path / "data"), "--datasets", "Cora", "--seeds", "2", "--max-epochs", "2",
            "--out", str(tmp_path / "out"), "--methods", "no KD", "logit KD", "ABKD"]
    abkd_deep.main(argv)

    folder = tmp_path / "out" / "Cora"
    runs = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["cells"]) == 4 and len(runs) == 4 * 3 * 2
    assert {(r["cell"], r["method"], r["seed"]) for r in runs} == {
        (c, m, s) for c in summary["cells"] for m in ("no KD", "logit KD", "ABKD") for s in (0, 1)}
    teacher_params = summary["teacher"]["params"]
    for cell, shape in summary["cells"].items():  # the widest student within teacher / ratio
        ratio = 8 if ">=8x" in cell else 30
        widen = count_parameters(build_gnn(shape["arch"], 1433, shape["width"] + 1, 7, shape["layers"]))
        params = next(r["params"] for r in runs if r["cell"] == cell)
        assert params <= teacher_params // ratio < widen
    attention = [r["attention"] for r in runs if r["method"] == "ABKD" and r["seed"] == 0]
    assert len(attention) == 4 and all(len(a[0]) == 3 for a in attention)  # 3 GCNII layers attended
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for cell in summary["cells"]:
        assert results["Cora"]["paired"][cell]["ABKD - logit KD"]["n"] == 2
        assert (folder / f"attention_{re.sub(r'[^A-Za-z0-9]+', '_', cell).strip('_')}.png").is_file()
    assert "ABKD - logit KD" in (tmp_path / "out" / "report.md").read_text()

    abkd_deep.main(argv)  # resumes: nothing is run again
    assert len((folder / "runs.jsonl").read_text().splitlines()) == len(runs)


def test_layer_similarity_known_answers():
    torch.manual_seed(0)
    h = torch.rand(50, 8)
    same = abkd_deep.layer_similarity([h, 2 * h, h @ torch.linalg.qr(torch.randn(8, 8))[0]])
    assert same["pooled_cos_min"] < 1  # the rotated layer's mean points elsewhere
    assert same["cka_first_last"] == pytest.approx(1.0, abs=1e-5)  # CKA ignores rotations
    assert same["node_cos_middle_last"] < 1 and abs(abkd_deep.linear_cka(h, 2 * h) - 1) < 1e-5
    scaled = abkd_deep.layer_similarity([h, 3 * h])
    assert scaled["pooled_cos_min"] == pytest.approx(1.0) and scaled["node_cos_first_last"] == pytest.approx(1.0)
    assert abkd_deep.linear_cka(h, torch.rand(50, 8)) < 0.5  # unrelated features


def test_bad_input_ends_in_one_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        abkd_deep.main(["--teacher-checkpoint", "checkpoints/gcnii_cora", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "NAME=CKPT pairs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # no graph files under the data root
        abkd_deep.main(["--data-root", str(tmp_path / "empty"), "--datasets", "Cora", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "raw" in capsys.readouterr().err


def ring_graph(n: int = 40, features: int = 6, classes: int = 3) -> Graph:
    """A small ring with random features and labels, split 1/3 train, 1/3 validation, 1/3 test."""
    torch.manual_seed(0)
    source = torch.arange(n)
    edge_index = torch.cat([torch.stack([source, (source + 1) % n]), torch.stack([(source + 1) % n, source])], 1)
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(2 * n), (n, n)).coalesce().to_sparse_csr()
    split = torch.arange(n) % 3
    return Graph("ring", torch.randn(n, features), edge_index, adj_t, torch.randint(classes, (n,)),
                 split == 0, split == 1, split == 2, classes)


def test_a_joint_teacher_trains_on_its_own_loss_and_is_never_pushed_by_kd():
    graph = ring_graph()
    torch.manual_seed(1)
    teacher = build_gnn("gcn", 6, 16, 3, 3, dropout=0.0)
    trained_teachers, kept_epochs = [], []
    for distiller in (NoKD([8, 3], [16, 16, 3]), LogitKD([8, 3], [16, 16, 3], weight=100.0)):
        torch.manual_seed(2)
        student = build_gnn("gcn", 6, 8, 3, 2, dropout=0.0)
        joint = trainable_copy(teacher)
        result, _ = fit(student, graph, Budget(max_epochs=3, patience=3), distiller=distiller, joint_teacher=joint)
        trained_teachers.append(joint.state_dict())
        kept_epochs.append(result.epoch)
    assert kept_epochs[0] == kept_epochs[1]  # the teachers compared below are after the same number of updates
    before = teacher.state_dict()
    assert any(not torch.equal(before[k], trained_teachers[0][k]) for k in before)  # it trained
    for key in before:  # the same updates with and without a (large) KD term: KD never reaches the teacher
        torch.testing.assert_close(trained_teachers[0][key], trained_teachers[1][key])
    with pytest.raises(ValueError, match="not both"):
        fit(student, graph, Budget(max_epochs=1), teacher_outputs(teacher, graph), NoKD([8, 3], [16, 16, 3]),
            joint_teacher=teacher)


def test_a_plain_teacher_is_trained_kept_and_not_mistaken_for_another(shared_assets: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture):
    copy_planetoid(shared_assets, tmp_path / "data" / "planetoid", "Cora")
    argv = ["--data-root", str(tmp_path / "data"), "--datasets", "Cora", "--seeds", "1", "--max-epochs", "2",
            "--students", "MLP", "--ratios", "8", "--out", str(tmp_path / "out"), "--methods", "ABKD",
            "--teacher-arch", "gcn", "--teacher-layers", "4", "--teacher-hidden", "16", "--teacher-max-epochs", "2"]
    abkd_deep.main([*argv[:16], "logit KD joint teacher", "--ablation", *argv[16:]])  # after "ABKD" in --methods
    kept = (tmp_path / "out" / "Cora" / "teacher.pt").stat().st_mtime_ns
    summary = json.loads((tmp_path / "out" / "Cora" / "summary.json").read_text())
    assert (summary["teacher"]["arch"], summary["teacher"]["layers"], summary["teacher"]["hidden"]) == ("gcn", 4, 16)
    run, joint = map(json.loads, (tmp_path / "out" / "Cora" / "runs.jsonl").read_text().splitlines())
    assert len(run["attention"][0]) == 3  # the student's layers attend over the 3 hidden GCN layers
    assert joint["method"] == "logit KD joint teacher" and 0 <= joint["joint_teacher"]["test"] <= 1
    assert "Teacher GCN (BatchNorm) 4 x 16" in (tmp_path / "out" / "report.md").read_text()
    abkd_deep.main([*argv[:9], "GCN", *argv[10:]])  # another student family: its cell joins the first's
    cells = json.loads((tmp_path / "out" / "Cora" / "summary.json").read_text())["cells"]
    assert [c.split()[0] for c in cells] == ["MLP", "GCN"]
    assert all(f"| {c}" in (tmp_path / "out" / "report.md").read_text() for c in cells)
    assert (tmp_path / "out" / "Cora" / "teacher.pt").stat().st_mtime_ns == kept  # read back, not retrained
    with pytest.raises(SystemExit, match="another --out"):  # the kept teacher is a GCN, not the GCNII asked now
        abkd_deep.main([*argv[:-8], "--teacher-layers", "4", "--teacher-hidden", "16"])


def test_every_abkd_variant_takes_the_experiment_term_weights():
    for name, method in {**abkd_deep.methods(3.0, 7.0), **abkd_deep.ablation(3.0, 7.0)}.items():
        distiller = method.distiller([8, 8, 3], [16, 16, 16, 3])
        if name.startswith("ABKD"):
            expected_align = 30.0 if name.endswith("align 30") else 7.0
            assert (distiller.logit_weight, distiller.align_weight) == (3.0, expected_align), name
        assert method.joint_teacher == name.endswith("joint teacher")


def test_gradient_norm_known_answer():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    unused = torch.nn.Parameter(torch.ones(2))
    assert abkd_gradient_share.gradient_norm((w**2).sum(), [w, unused]) == pytest.approx(10.0)  # |(6, 8)|


def test_gradient_share_reads_an_experiment_teacher(shared_assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    copy_planetoid(shared_assets, tmp_path / "data" / "planetoid", "Cora")
    shape = abkd_deep.TeacherShape(3, 16, arch="gcn", monitor="acc")
    teacher = build_gnn("gcn", 1433, 16, 7, 3, norm=True)
    torch.save({"state_dict": teacher.state_dict(), "info": {"source": "test", **asdict(shape)}}, tmp_path / "t.pt")
    abkd_gradient_share.main(["--teacher", str(tmp_path / "t.pt"), "--data-root", str(tmp_path / "data"),
                              "--student", "gcn", "3", "8", "--epochs", "0", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| pooled", "| node"))]
    assert len(rows) == 4 and all(float(row.split("|")[-2]) > 0 for row in rows)
    with pytest.raises(SystemExit):
        abkd_gradient_share.main(["--teacher", str(tmp_path / "missing.pt")])
    assert "no teacher file" in capsys.readouterr().err
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        abkd_gradient_share.main(["--teacher", str(tmp_path / "corrupt.pt")])
    assert "is not a teacher.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no graph files under the data root
        abkd_gradient_share.main(["--teacher", str(tmp_path / "t.pt"), "--data-root", str(tmp_path / "empty")])
    assert "raw" in capsys.readouterr().err
