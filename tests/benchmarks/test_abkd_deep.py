"""The deep-teacher ABKD experiment end to end on real Cora with tiny budgets, and its paired statistics."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import abkd_deep
from benchmarks.abkd_deep_report import paired_difference
from graphkd.models import build_gnn, count_parameters

PLANETOID = Path(__file__).resolve().parents[2] / ".." / "shared" / "assets" / "graphs" / "planetoid"


def test_paired_difference_known_answer():
    # differences 1, 2, 3 points: mean 2, sd 1, t(0.975, 2) = 4.3027
    d = paired_difference([0.51, 0.52, 0.53], [0.50, 0.50, 0.50])
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(2.0)
    assert (d["low"], d["high"]) == pytest.approx((2 - 4.3027 / 3**0.5, 2 + 4.3027 / 3**0.5), abs=1e-3)


@pytest.mark.skipif(not any(PLANETOID.glob("ind.cora.*")), reason="needs ../shared/assets/graphs/planetoid (Cora)")
def test_experiment_runs_every_cell_method_and_seed_then_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    raw = tmp_path / "data" / "planetoid" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for file in PLANETOID.glob("ind.cora.*"):
        shutil.copy(file, raw)
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
