"""The ABKD report on a tiny generated graph: real runs through main.py, numbers traced back to their logs."""
from __future__ import annotations

import json
import re
import shutil
import statistics

import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.abkd_report import ReportError, ReportSpec, Sweep, main
from benchmarks.report_output import Row, check_consistent, pareto_front
from tests.graph_fixtures import TINY_MAG

METHODS = {"NoKD": {"class_path": "graphkd.distill.NoKD"}, "ABKD": {"class_path": "graphkd.distill.ABKD"}}
HIDDEN, SEEDS = [4, 8, 16], [0, 1]


def write_yaml(path, content) -> str:
    path.write_text(yaml.safe_dump(content))
    return str(path)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A finished sweep: a GCN 3 x 32 teacher, NoKD and ABKD students of 3 widths x 2 seeds, 3 epochs each."""
    root = tmp_path_factory.mktemp("report")
    data = {"class_path": "datamodules.ogb.SyntheticMAGDataModule",
            "init_args": {"root": str(root / "data"), "hetero": False, "synthetic": dict(TINY_MAG.__dict__)}}
    teacher = write_yaml(root / "teacher.yaml", {"trainer": {"max_epochs": 3},
                                                 "model": {"class_path": "lightning_modules.node_classifier.NodeClassifier",
                                                           "init_args": {"hidden_channels": 32, "num_layers": 3}}, "data": data})
    student = write_yaml(root / "student.yaml", {
        "trainer": {"callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(root / "elsewhere")}}]},
        "model": {"class_path": "lightning_modules.distillation.DistillationModule", "init_args": {"num_layers": 2}},
        "data": data})
    spec = {"output_dir": str(root / "out"), "teacher_config": teacher, "student_config": student, "methods": METHODS,
            "hidden_sizes": HIDDEN, "seeds": SEEDS, "epochs": 3, "latency_repeats": 3}
    config = root / "spec.yaml"
    write_yaml(config, spec)
    out = main(["--config", str(config)])
    return config, out


def scalars(folder) -> dict[str, list[float]]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def model_params(checkpoint) -> int:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return sum(v.numel() for k, v in state.items() if k.startswith("model."))


def table_rows(markdown: str) -> dict[tuple[str, int], list[str]]:
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")]
    return {(cells[0].strip(), int(cells[1])): [c.strip() for c in cells] for cells in rows[2:]}


def test_outputs_exist(report):
    _, out = report
    for name in ("accuracy_vs_compression.png", "accuracy_vs_latency.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 400 and image.size[1] > 300
    assert "<table>" in (out / "report.html").read_text()
    hparam_runs = sorted(p.name for p in (out / "tensorboard").iterdir() if p.is_dir())
    assert hparam_runs == sorted(f"{m}-h{h}-s{s}" for m in METHODS for h in HIDDEN for s in SEEDS)
    logged = scalars(out / "tensorboard" / "ABKD-h8-s1")
    result = json.loads((out / "runs" / "ABKD-h8-s1" / "result.json").read_text())
    assert logged["report/test_acc"] == [pytest.approx(result["test_metric"])]
    assert logged["report/latency_ratio"] == [pytest.approx(result["latency_ratio"])]
    assert not list(out.rglob("*.tmp*"))


def test_table_equals_the_run_logs(report):
    _, out = report
    rows = table_rows((out / "report.md").read_text())
    teacher_ckpt = out / "teacher" / "checkpoints" / "best.ckpt"
    teacher_params = model_params(teacher_ckpt)
    teacher_test = scalars(out / "teacher" / "logs" / "test")["test/acc"][-1]
    assert rows[("teacher", 32)][2] == f"{100 * teacher_test:.2f}"
    assert rows[("teacher", 32)][4] == f"{teacher_params:,}"
    assert len(rows) == 1 + len(METHODS) * len(HIDDEN)
    for method in METHODS:
        for hidden in HIDDEN:
            tests = [scalars(out / "runs" / f"{method}-h{hidden}-s{s}" / "logs" / "test")["test/acc"][-1] for s in SEEDS]
            fit = scalars(out / "runs" / f"{method}-h{hidden}-s0" / "logs" / "fit")
            params = model_params(out / "runs" / f"{method}-h{hidden}-s0" / "checkpoints" / "best.ckpt")
            cells = rows[(method, hidden)]
            assert cells[2] == f"{100 * statistics.mean(tests):.2f} ± {100 * statistics.stdev(tests):.2f}"
            assert cells[4] == f"{params:,}" == f"{int(fit['params/student'][-1]):,}"
            assert cells[5] == f"{teacher_params / params:.1f}x"
    assert float(rows[("NoKD", 4)][5].rstrip("x")) > float(rows[("NoKD", 16)][5].rstrip("x")) > 1.0


def test_test_metric_is_that_of_the_best_validation_checkpoint(report):
    _, out = report
    run = out / "runs" / "NoKD-h16-s1"
    fit = scalars(run / "logs" / "fit")
    best_epoch = max(range(len(fit["val/acc"])), key=lambda i: (fit["val/acc"][i], -i))  # first best, as ModelCheckpoint keeps
    assert json.loads((run / "result.json").read_text())["test_metric"] == pytest.approx(fit["test/acc"][best_epoch])


def test_rerun_resumes_and_redoes_a_half_finished_run(report):
    config, out = report
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoints/best.ckpt")}
    spec = ReportSpec.from_yaml(config)
    assert Sweep(spec).run_all() == 0
    broken = out / "runs" / "ABKD-h4-s0"
    (broken / "result.json").unlink()
    (broken / "leftover.txt").write_text("from an interrupted run")
    assert Sweep(spec).run_all() == 1
    assert (broken / "result.json").is_file() and not (broken / "leftover.txt").exists()
    changed = {p for p, stamp in stamps.items() if p.stat().st_mtime_ns != stamp}
    assert changed == {broken / "checkpoints" / "best.ckpt"}


@pytest.mark.parametrize("field, value", [("dataset", "CiteSeer"), ("teacher_sha256", "0" * 64)])
def test_mixed_runs_are_refused(report, tmp_path, field, value):
    config, out = report
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    foreign = copy / "runs" / "NoKD-h4-s7"
    shutil.copytree(copy / "runs" / "NoKD-h4-s0", foreign)
    result = json.loads((foreign / "result.json").read_text())
    result.update({field: value, "run": "NoKD-h4-s7", "seed": 7})
    (foreign / "result.json").write_text(json.dumps(result))
    before = (copy / "report.md").read_text()
    with pytest.raises(ReportError, match=r"another dataset or teacher.*NoKD-h4-s7"):
        main(["--config", str(config), "--output-dir", str(copy), "--collect-only"])
    assert (copy / "report.md").read_text() == before


def test_collect_only_without_runs_and_bad_specs(report, tmp_path):
    config, _ = report
    with pytest.raises(ReportError, match="run the sweep first"):
        main(["--config", str(config), "--output-dir", str(tmp_path / "empty"), "--collect-only"])
    spec = yaml.safe_load(config.read_text())
    write_yaml(tmp_path / "sizes.yaml", {**spec, "hidden_sizes": [8, 8, 16]})
    with pytest.raises(ReportError, match="at least three distinct"):
        ReportSpec.from_yaml(tmp_path / "sizes.yaml")
    write_yaml(tmp_path / "typo.yaml", {**spec, "epoch": 3})
    with pytest.raises(ReportError, match=r"unknown keys \['epoch'\]"):
        ReportSpec.from_yaml(tmp_path / "typo.yaml")
    with pytest.raises(ReportError, match=r"--methods \['LSP'\] are not in"):
        ReportSpec.from_yaml(config, methods=["ABKD", "LSP"])
    shard = ReportSpec.from_yaml(config, seeds=[1], methods=["ABKD"])
    assert [k.name for k in Sweep(shard).keys] == ["ABKD-h4-s1", "ABKD-h8-s1", "ABKD-h16-s1"]


def test_pareto_front():
    rows = [Row("a", 8, [0.70], 10, 20.0, 0.3, []), Row("a", 32, [0.80], 40, 5.0, 0.5, []),
            Row("b", 8, [0.60], 10, 20.0, 0.3, []), Row("b", 16, [0.75], 20, 10.0, 0.4, []),
            Row("c", 16, [0.74], 20, 10.0, 0.4, [])]
    assert [(r.method, r.hidden) for r in pareto_front(rows)] == [("a", 32), ("b", 16), ("a", 8)]


def test_report_names_the_teacher(report):
    _, out = report
    first = (out / "report.md").read_text().splitlines()[0]
    sha = json.loads((out / "teacher" / "result.json").read_text())["teacher_sha256"]
    assert re.search(rf"teacher GCN 3 x 32 \(SHA-256 {sha[:12]}\).*12 student runs", first)


def test_reused_teacher_checkpoint_is_tested_and_pinned(report, tmp_path):
    config, out = report
    trained = json.loads((out / "teacher" / "result.json").read_text())
    spec = ReportSpec.from_yaml(config, output_dir=str(tmp_path / "reuse"))
    spec.teacher_checkpoint = trained["checkpoint"]
    reused = Sweep(spec).teacher()
    assert reused["teacher_sha256"] == trained["teacher_sha256"]
    assert reused["test_metric"] == pytest.approx(trained["test_metric"])  # same weights, same test split
    other = tmp_path / "other.ckpt"
    shutil.copy(trained["checkpoint"], other)
    spec.teacher_checkpoint = str(other)
    with pytest.raises(ReportError, match="was made with teacher .*use another output_dir"):
        Sweep(spec).teacher()


def test_runs_of_different_epochs_are_refused_by_name() -> None:
    teacher = {"dataset": "cora", "teacher_sha256": "ab" * 32, "checkpoint": "teacher.ckpt"}
    runs = [{"run": name, "dataset": "cora", "teacher_sha256": "ab" * 32, "epochs": epochs}
            for name, epochs in (("ABKD-h8-s0", 100), ("ABKD-h8-s1", 100))]
    check_consistent(teacher, runs)
    runs.append({"run": "NoKD-h8-s0", "dataset": "cora", "teacher_sha256": "ab" * 32, "epochs": 200})
    with pytest.raises(ReportError, match="different numbers of epochs.*200 epochs: NoKD-h8-s0"):
        check_consistent(teacher, runs)
