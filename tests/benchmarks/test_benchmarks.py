"""The performance scripts' ``--quick`` modes: every table row and JSON number is there and sane (no timing asserts)."""
from __future__ import annotations

import json
import math
import types
from pathlib import Path

import pytest

from benchmarks import abkd_scaling, rasterizer, texture_pipeline


def positive_finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_abkd_scaling_quick_reports_every_size_method_and_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "abkd.json"
    abkd_scaling.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    table = capsys.readouterr().out

    assert [row["papers"] for row in report["sizes"]] == list(abkd_scaling.QUICK_SIZES)
    mini = ("mini_batch_epoch_ms", "sampling_only_epoch_ms", "mini_batches", "sampled_edges_per_batch")
    for row in report["sizes"]:  # without a neighbour sampler the mini-batch cases are skipped, and the table says so
        measured = ("nodes", "edges", "full_batch_epoch_ms", *(mini if abkd_scaling.SAMPLING else ()))
        assert all(positive_finite(row[key]) for key in measured)
        assert abkd_scaling.SAMPLING or not set(mini) & set(row)
        assert not abkd_scaling.SAMPLING or row["sampled_edges_per_batch"] <= row["edges"]
        assert f"| {row['papers']} | {row['nodes']} | {row['edges']} |" in table
    assert abkd_scaling.SAMPLING or table.count(abkd_scaling.NO_SAMPLING) == 2
    edges = [row["edges"] for row in report["sizes"]]
    assert edges == sorted(edges) and edges[-1] > 2 * edges[0]  # the sizes really grow

    overhead = report["kd_overhead"]
    assert set(overhead["full batch"]) == {*abkd_scaling.METHODS, abkd_scaling.CACHED, "teacher forward only"}
    assert set(overhead) == {"papers", "full batch", *(["mini-batch"] if abkd_scaling.SAMPLING else [])}
    for mode in set(overhead) - {"papers"}:
        assert all(positive_finite(ms) for ms in overhead[mode].values())
    if abkd_scaling.SAMPLING:
        assert set(overhead["mini-batch"]) == {*abkd_scaling.METHODS, "teacher forward only"}
    for method in (*abkd_scaling.METHODS, abkd_scaling.CACHED):
        assert f"| {method} | " in table

    assert set(report["inference"]) == {str(n) for n in abkd_scaling.QUICK_SIZES}
    for pair in report["inference"].values():
        for model in ("teacher", "student"):
            assert all(positive_finite(pair[model][key]) for key in ("latency_ms", "peak_bytes", "parameters"))
        # a 3 x 64 forward keeps more activations alive than a 2 x 16 one
        assert pair["teacher"]["peak_bytes"] > pair["student"]["peak_bytes"]
        assert pair["teacher"]["parameters"] > pair["student"]["parameters"]


def test_rasterizer_quick_writes_its_rows(tmp_path: Path) -> None:
    out = tmp_path / "raster.json"
    rasterizer.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert [row["case"][:3] for row in report["rows"]] == ["(a)", "(a)", "(b)", "(c)"]
    for row in report["rows"]:
        assert row["sim3dr"] is None  # no --sim3dr given
        for backend in ("ours", "torch"):
            assert positive_finite(row[backend]["wall_ms"]) and row[backend]["cpu_ms"] >= 0
    assert positive_finite(report["reference_over_default_wall"])


def test_rasterizer_sim3dr_option_names_a_missing_build(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no built Sim3DR_Cython extension"):
        rasterizer.main(["--quick", "--sim3dr", str(tmp_path)])


def test_stage_clock_counts_nested_calls_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fake clock: the outer stage gets its own 3 s, the nested one its 5 s, and wrappers are removed after."""
    now = [0.0]
    monkeypatch.setattr(texture_pipeline, "now", lambda: (now[0], 10 * now[0]))  # CPU clock: 10x the wall clock
    space = types.SimpleNamespace()

    def inner() -> None:
        now[0] += 5.0

    def outer() -> str:
        now[0] += 2.0
        space.inner()
        now[0] += 1.0
        return "done"

    space.inner, space.outer = inner, outer
    clock = texture_pipeline.StageClock()
    with clock.installed({"outer stage": [(space, "outer")], "inner stage": [(space, "inner")]}):
        assert space.outer() == "done"
    assert dict(clock.wall) == {"outer stage": 3.0, "inner stage": 5.0}
    assert dict(clock.cpu) == {"outer stage": 30.0, "inner stage": 50.0}
    assert space.inner is inner and space.outer is outer


def test_stage_clock_wraps_classmethods_and_restores_them() -> None:
    class Loader:
        @classmethod
        def build(cls) -> type:
            return cls

    original = Loader.__dict__["build"]
    clock = texture_pipeline.StageClock()
    with clock.installed({"build": [(Loader, "build")]}):
        assert Loader.build() is Loader
    assert clock.wall["build"] >= 0 and Loader.__dict__["build"] is original


def test_texture_pipeline_quick_times_every_stage(shared_assets: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "texture.json"
    texture_pipeline.main(["--quick", "--assets", str(shared_assets), "--out", str(out)])
    report = json.loads(out.read_text())
    table = capsys.readouterr().out

    size = str(texture_pipeline.QUICK_SIZE)
    stages = report["stages"][size]
    assert list(stages) == [*texture_pipeline.STAGES, texture_pipeline.OTHER, "total"]
    for stage in texture_pipeline.STAGES:  # every wrapped function ran in the real pipeline
        assert positive_finite(stages[stage]["wall_ms"]), stage
        assert f"| {stage} | " in table
    # exclusive times: the stages and the unattributed rest add up to the total, and the rest is not negative
    assert stages[texture_pipeline.OTHER]["wall_ms"] >= 0
    assert sum(stages[s]["share"] for s in [*texture_pipeline.STAGES, texture_pipeline.OTHER]) == pytest.approx(1.0)
    assert list(report["images"]) == [texture_pipeline.QUICK_PHOTO]
