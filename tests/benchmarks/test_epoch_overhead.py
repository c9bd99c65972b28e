"""``benchmarks.epoch_overhead`` in a few epochs: every graph and case is timed and compared with the hand loop."""
from __future__ import annotations

import math

from benchmarks import epoch_overhead


def test_epoch_overhead_times_every_case_against_the_hand_loop(shared_assets, capsys) -> None:
    results = epoch_overhead.main(["--rounds", "1", "--epochs", "3",
                                   "--planetoid", str(shared_assets / "graphs" / "planetoid")])
    table = capsys.readouterr().out
    cases = {epoch_overhead.PEER, "Trainer.fit", "Trainer.fit + checkpoints"}
    assert set(results) == {"Cora, GCN 2 x 16", "generated MAG, R-GCN 2 x 16"}
    for graph, times in results.items():
        assert set(times) == cases and all(math.isfinite(s) and s > 0 for s in times.values())
        assert f"| {graph} | {epoch_overhead.PEER} | {1e3 * times[epoch_overhead.PEER]:.1f} | 1.00 |" in table
