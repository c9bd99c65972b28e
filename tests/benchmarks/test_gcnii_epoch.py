"""``benchmarks.gcnii_epoch`` in one round: every case is reported with its known size (no timing asserts)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import gcnii_epoch


def test_one_round_reports_every_case(shared_assets: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "gcnii_epoch.json"
    gcnii_epoch.main(["--runs", "1", "--warmup", "0", "--planetoid", str(shared_assets / "graphs" / "planetoid"),
                      "--out", str(out)])
    cases = json.loads(out.read_text())["cases"]
    assert list(cases) == list(gcnii_epoch.CASES)
    assert cases["GCNII 64 x 64 (Cora)"]["parameters"] == 354_375  # as tests/graphkd/test_gcnii.py counts by hand
    assert cases[gcnii_epoch.PEER]["ratio_to_peer"] == 1.0
    assert all(row["epoch_s"] > 0 and row["epoch_cpu_s"] > 0 for row in cases.values())
    printed = capsys.readouterr().out
    assert all(f"| {name} |" in printed for name in cases)
