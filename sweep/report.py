"""The report of an experiment, from its run folders alone (so it can be rebuilt after a cluster run).

Per label of the ``table`` axis (e.g. each dataset) a section with, per row (e.g. each method) and column (the
other axes but the seeds): the test metric at the best validation epoch, mean ± sample standard deviation over
the seeds whose student trained, and the share that did not; the validation metric (what choices are made on);
the paired per-seed differences of the ``pairs`` over every seed both finished, with a two-sided 95%
Student-t interval; how many runs stopped at their epoch limit; and the learned attention of the ``heatmaps``
methods (first seed). ``report:`` in the experiment file::

    report: {table: dataset, rows: method, seeds: seed, pairs: [[ABKD, logit KD]], heatmaps: [ABKD],
             untrained_margin: 0.1}

A run did not train when its best validation accuracy is within ``untrained_margin`` of the validation split's
majority-class share (predicting one class), so a collapse and an accuracy gain are never read as one number.
Writes ``<out>/report.md``, ``<out>/results.json`` and ``<out>/img/*.png``; returns the report's path.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callbacks.run_record import read_record
from foundation.files import atomic_paths
from sweep.grid import Experiment

UNSAFE = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True)
class Run:
    """A finished cell: its labels and the numbers the report uses."""

    labels: dict[str, str]
    test: float
    val: float
    trained: bool
    capped: bool
    record: dict[str, Any]


def finished_runs(experiment: Experiment, margin: float) -> list[Run]:
    """Every cell of the grid whose folder holds a record."""
    runs = []
    for cell in experiment.cells():
        record = read_record(cell.folder)
        if record is None:
            continue
        monitor = record["monitor"]
        at_best = record["at_best"]
        val = at_best.get(monitor, math.nan)
        test = at_best.get(monitor.replace("val/", "test/", 1), math.nan)
        chance = record.get("majority_share")
        trained = chance is None or val > chance + margin
        runs.append(Run(cell.labels, test, val, trained, record["stopped"] == "max_epochs", record))
    return runs


def paired_difference(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of the per-seed differences ``a - b`` in points and its two-sided 95% Student-t interval."""
    from scipy import stats

    diffs = [100 * (x - y) for x, y in zip(a, b, strict=True)]
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": len(diffs)}
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def mean_std(values: list[float]) -> str:
    """``77.63 ± 1.20`` (points; sample std) or ``77.63`` for one value."""
    if not values:
        return "n/a"
    mean = 100 * statistics.mean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def column_name(runs: list[Run]) -> str:
    """The column's student size from its first record: ``(width 23, 8.3x)``."""
    parameters = runs[0].record.get("parameters") or {}
    ratio = parameters.get("compression_ratio")
    student = parameters.get("student")
    return f" ({int(student):,} params, {ratio:.1f}x)" if student and ratio else ""


def heatmap(attention: list[list[float]], title: str, path: Path) -> None:
    """The learned ``(student layers, teacher layers)`` attention as an annotated image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from callbacks.attention_heatmap import attention_figure

    figure = attention_figure(torch.tensor(attention), title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def teacher_lines(experiment: Experiment, table: str | None, label: str) -> list[str]:
    """The teachers of the needed experiments that share this section's label: test metric at their best epoch."""
    lines = []
    for path in experiment.needs:
        need = Experiment.load(path)
        for cell in need.cells():
            record = read_record(cell.folder)
            if record is None or (table is not None and cell.labels.get(table) != label):
                continue
            monitor, at_best = record["monitor"], record["at_best"]
            test = at_best.get(monitor.replace("val/", "test/", 1), math.nan)
            params = (record.get("parameters") or {}).get("student") or record.get("parameters", {}).get("model")
            lines.append(f"Teacher {cell.folder}: test {100 * test:.2f}, validation {100 * at_best.get(monitor, math.nan):.2f} "
                         f"(best epoch {record['best_epoch']} of {record['epochs']}){'' if params is None else f', {int(params):,} params'}.")
    return lines


def section(experiment: Experiment, runs: list[Run], title: str, table: str | None, img: Path) -> tuple[list[str], dict]:
    """Markdown lines and numbers of one section (one label of the table axis)."""
    spec = experiment.report
    rows_axis, seeds_axis = spec.get("rows"), spec.get("seeds", "seed")
    other = [a.name for a in experiment.grid if a.name not in (table, rows_axis, seeds_axis)]
    column_of = lambda run: " ".join(run.labels[name] for name in other) or "all"
    row_of = lambda run: run.labels[rows_axis] if rows_axis else "/".join(run.labels[n] for n in other) or "run"
    columns = list(dict.fromkeys(column_of(run) for run in runs))
    rows = list(dict.fromkeys(row_of(run) for run in runs))
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((row_of(run), column_of(run)), []).append(run)
    heads = [column + column_name([r for r in runs if column_of(r) == column]) for column in columns]
    numbers: dict[str, Any] = {"cells": {}, "paired": {}}
    lines = [f"### {title}", "", *teacher_lines(experiment, table, title), "",
             "Test (%) at the best validation epoch, mean ± std over the seeds that trained (trained / finished):", "",
             "| | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(heads)]
    val_lines = ["", "Validation (%), what choices are made on:", "", "| | " + " | ".join(heads) + " |",
                 "| --- |" + " ---: |" * len(heads)]
    for row in rows:
        cells, val_cells = [], []
        for column in columns:
            group = groups.get((row, column), [])
            trained = [r for r in group if r.trained]
            capped = sum(r.capped for r in group)
            numbers["cells"].setdefault(column, {})[row] = {
                "test": [r.test for r in group], "val": [r.val for r in group],
                "seeds": [r.labels.get(seeds_axis) for r in group], "trained": [r.trained for r in group],
                "capped": capped, "epochs": [r.record["epochs"] for r in group]}
            note = f" ({len(trained)}/{len(group)})" if group else ""
            cap = f", {capped} at the epoch limit" if capped else ""
            cells.append(f"{mean_std([r.test for r in trained])}{note}{cap}" if group else "")
            val_cells.append(f"{mean_std([r.val for r in trained])}" if group else "")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
        val_lines.append(f"| {row} | " + " | ".join(val_cells) + " |")
    lines += val_lines
    pairs = [(a, b) for a, b in spec.get("pairs", []) if a in rows and b in rows]
    if pairs:
        lines += ["", "Paired per-seed difference (points) over every seed both finished, mean [95% CI] (n):", "",
                  "| | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(heads)]
    for a, b in pairs:
        row = []
        for column in columns:
            sa = {r.labels.get(seeds_axis): r.test for r in groups.get((a, column), [])}
            sb = {r.labels.get(seeds_axis): r.test for r in groups.get((b, column), [])}
            seeds = [s for s in sa if s in sb]
            if not seeds:
                row.append("")
                continue
            d = paired_difference([sa[s] for s in seeds], [sb[s] for s in seeds])
            numbers["paired"].setdefault(column, {})[f"{a} - {b}"] = d
            row.append(f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] ({d['n']})")
        lines.append(f"| {a} - {b} | " + " | ".join(row) + " |")
    for method in spec.get("heatmaps", []):
        for column in columns:
            first = next((r for r in groups.get((method, column), []) if r.record.get("attention")), None)
            if first is None:
                continue
            name = UNSAFE.sub("_", f"{title}_{column}_{method}").strip("_") + ".png"
            heatmap(first.record["attention"], f"{title}, {column}: {method} attention ({first.labels.get(seeds_axis)})",
                    img / name)
            lines.append(f"\n![{title} {column} {method}](img/{name})")
    return lines, numbers


def write_report(experiment: Experiment) -> Path:
    """``<out>/report.md`` and ``<out>/results.json`` from every finished cell; returns the Markdown's path."""
    spec = experiment.report
    runs = finished_runs(experiment, float(spec.get("untrained_margin", 0.1)))
    table = spec.get("table")
    titles = list(dict.fromkeys(run.labels[table] for run in runs)) if table else [experiment.path.stem]
    total = len(experiment.cells())
    lines = [f"# {experiment.path.stem}", "",
             f"`python -m sweep report {experiment.path}`: {len(runs)} of {total} cells finished, read from "
             f"{experiment.out}/. A run \"trained\" when its best validation accuracy exceeds the validation split's "
             f"majority-class share by more than {float(spec.get('untrained_margin', 0.1)):.2f}.", ""]
    numbers: dict[str, Any] = {}
    for title in titles:
        chosen = [run for run in runs if table is None or run.labels[table] == title]
        part, numbers[title] = section(experiment, chosen, title, table, experiment.out / "img")
        lines += part + [""]
    seconds = sum(run.record["seconds"] for run in runs)
    stops = [run.record["stopped"] for run in runs]
    lines.append(f"{len(runs)} runs, {seconds / 60:.1f} min of training (summed over processes); stopped by "
                 + ", ".join(f"{reason} {stops.count(reason)}" for reason in sorted(set(stops))) + ".")
    report = experiment.out / "report.md"
    with atomic_paths(report, experiment.out / "results.json") as (markdown, results):
        markdown.write_text("\n".join(lines) + "\n")
        results.write_text(json.dumps(numbers, indent=1))
    return report


