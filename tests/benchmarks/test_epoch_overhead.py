"""``benchmarks.epoch_overhead`` in a few epochs: every graph and case is timed and compared with the hand loop, and
the checkpoint bytes it counts are those the layouts write (in the background too), ``main.py fit`` included."""
from __future__ import annotations

import math

from benchmarks import epoch_overhead


def test_epoch_overhead_times_every_case_against_the_hand_loop(shared_assets, capsys) -> None:
    results = epoch_overhead.main(["--rounds", "1", "--epochs", "4",
                                   "--planetoid", str(shared_assets / "graphs" / "planetoid")])
    table = capsys.readouterr().out
    cases = {epoch_overhead.PEER, "Trainer.fit", epoch_overhead.BEFORE, epoch_overhead.AT_ONCE, epoch_overhead.BACKGROUND,
             epoch_overhead.MAIN}
    assert set(results) == {"Cora, GCN 2 x 16", "generated MAG, R-GCN 2 x 16"}
    for graph, times in results.items():
        assert set(times) == cases
        assert all(math.isfinite(t[k]) and t[k] > 0 for t in times.values() for k in ("wall", "cpu"))
        peer = times[epoch_overhead.PEER]
        assert peer["x_wall"] == peer["x_cpu"] == 1
        assert f"| {graph} | {epoch_overhead.PEER} | {1e3 * peer['wall']:.1f} | 1.00 | {1e3 * peer['cpu']:.1f} | 1.00 | 0.0 | 0.00 | 0.0 |" in table
        assert times["Trainer.fit"]["files_per_epoch"] == times["Trainer.fit"]["bytes_per_epoch"] == 0
        assert times["Trainer.fit"]["saving"] == 0 < times[epoch_overhead.BACKGROUND]["saving"]
        assert times[epoch_overhead.AT_ONCE]["saving"] > 0
        # per epoch one checkpoint file, in the background or not; the two-callback layout one (last) or two (best too)
        before = times[epoch_overhead.BEFORE]
        for case in (epoch_overhead.AT_ONCE, epoch_overhead.BACKGROUND, epoch_overhead.MAIN):
            assert times[case]["files_per_epoch"] == 1 and 1 <= before["files_per_epoch"] <= 2
            assert 0 < times[case]["bytes_per_epoch"] < before["bytes_per_epoch"]
