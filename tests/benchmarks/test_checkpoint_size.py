"""``benchmarks.checkpoint_size`` on a small generated graph: the referencing student checkpoint is the smaller one."""
from __future__ import annotations

from benchmarks import checkpoint_size


def test_referenced_teacher_makes_the_student_checkpoint_smaller(capsys) -> None:
    sizes = checkpoint_size.main(["--papers", "300"])
    table = capsys.readouterr().out
    # the stored teacher costs at least its weights' bytes: 3 layers x 64 R-GCN with embedding tables
    assert sizes["referenced"] < sizes["stored"] < sizes["referenced"] + sizes["teacher"]
    assert "| student, teacher referenced (now) |" in table
