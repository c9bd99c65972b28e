"""Tables, paired confidence intervals and attention heatmaps of ``benchmarks.abkd_deep``'s runs.

Reads ``<out>/<dataset>/{runs.jsonl,summary.json}`` and writes ``<out>/report.md``, ``<out>/results.json``
and ``<out>/<dataset>/attention_<cell>.png``; returns the Markdown.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

PAIRS = (("ABKD", "logit KD"), ("ABKD", "no KD"), ("logit KD", "no KD"),
         ("ABKD per-node", "logit KD"), ("ABKD per-node, align 30", "logit KD"), ("ABKD last teacher layer", "logit KD"),
         ("logit KD joint teacher", "logit KD"), ("ABKD joint teacher", "ABKD"))  # rows only where both were run
ARCH_NAMES = {"gcnii": "GCNII", "gcn": "GCN", "sage": "GraphSAGE", "gat": "GAT", "mlp": "MLP"}


def teacher_name(teacher: dict[str, Any]) -> str:
    """``GCNII``, ``GCN (BatchNorm)``, ...: the teacher's family as recorded in its summary."""
    arch = teacher.get("arch", "gcnii")
    return ARCH_NAMES.get(arch, arch) + (" (BatchNorm)" if teacher.get("norm") else "")


def paired_difference(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of the per-seed differences ``a - b`` (points) and its two-sided 95% Student-t interval."""
    diffs = [100 * (x - y) for x, y in zip(a, b, strict=True)]
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": len(diffs)}
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def by_seed(runs: list[dict[str, Any]], cell: str, method: str, split: str = "test") -> dict[int, float]:
    """Accuracy on ``split`` ("test" or "val") per seed of one cell and method."""
    return {r["seed"]: r[split] for r in runs if r["cell"] == cell and r["method"] == method}


def heatmap(attention: list[list[float]], title: str, path: Path) -> None:
    """The learned ``(student layers, teacher layers)`` attention as an image."""
    rows, cols = len(attention), len(attention[0])
    figure, axis = plt.subplots(figsize=(max(5.0, min(12, 2 + cols * 0.18)), 1.2 + rows * 0.5))
    image = axis.imshow(attention, aspect="auto", cmap="viridis", vmin=0)
    axis.set_xlabel("teacher layer")
    axis.set_ylabel("student layer")
    axis.set_yticks(range(rows), [str(i + 1) for i in range(rows)])
    axis.set_xticks(range(0, cols, max(1, cols // 16)), [str(i + 1) for i in range(0, cols, max(1, cols // 16))])
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def similarity_lines(similarity: dict[str, float] | None) -> list[str]:
    """One sentence on how alike the teacher's layers are (what ABKD's attention can choose from)."""
    if not similarity:
        return []
    return ["", f"Teacher layers: smallest cosine between two layers' pooled vectors {similarity['pooled_cos_min']:.4f}; "
            f"first / middle layer vs last: per-node cosine {similarity['node_cos_first_last']:.3f} / "
            f"{similarity['node_cos_middle_last']:.3f}, linear CKA {similarity['cka_first_last']:.3f} / "
            f"{similarity['cka_middle_last']:.3f}."]


def table_head(first: str, cells: list[str]) -> list[str]:
    """The header and alignment rows of a Markdown table with one right-aligned column per cell."""
    return ["| " + first + " | " + " | ".join(cells) + " |", "| --- | " + " | ".join("---:" for _ in cells) + " |"]


def dataset_section(out: Path, name: str) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines and the numbers of one dataset."""
    folder = out / name
    summary = json.loads((folder / "summary.json").read_text())
    runs_file = folder / "runs.jsonl"
    runs = [json.loads(line) for line in runs_file.read_text().splitlines()] if runs_file.is_file() else []
    cells = list(summary["cells"])
    method_names = list(dict.fromkeys(r["method"] for r in runs))
    teacher = summary["teacher"]
    published = f", published {teacher['published']}" if teacher.get("published") else ""
    lines = [f"### {name}", "",
             f"Teacher {teacher_name(teacher)} {teacher['layers']} x {teacher['hidden']} ({teacher['params']:,} parameters; "
             f"{teacher['source']}): test {100 * teacher['test']:.2f}{published}, validation {100 * teacher['val']:.2f}.",
             *similarity_lines(teacher.get("layer_similarity")),
             "", *table_head("method", cells)]
    numbers: dict[str, Any] = {"teacher": teacher, "cells": summary["cells"], "scores": {}, "paired": {}}
    for method in method_names:
        row = []
        for cell in cells:
            scores = list(by_seed(runs, cell, method).values())
            numbers["scores"].setdefault(cell, {})[method] = scores
            row.append(f"{100 * statistics.mean(scores):.2f} ± {100 * statistics.pstdev(scores):.2f} ({len(scores)})"
                       if scores else "")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    lines += ["", "Validation accuracy (what choices are made on), mean (runs):", "",
              *table_head("method", cells)]
    for method in method_names:
        row = []
        for cell in cells:
            scores = list(by_seed(runs, cell, method, "val").values())
            numbers.setdefault("val", {}).setdefault(cell, {})[method] = scores
            row.append(f"{100 * statistics.mean(scores):.2f} ({len(scores)})" if scores else "")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    pairs = [(a, b) for a, b in PAIRS if {a, b} <= set(method_names)]
    if pairs:
        lines += ["", "Paired per-seed difference (points), mean [95% CI]:", "",
                  *table_head("pair", cells)]
    for a, b in pairs:
        row = []
        for cell in cells:
            sa, sb = by_seed(runs, cell, a), by_seed(runs, cell, b)
            seeds = sorted(set(sa) & set(sb))
            if not seeds:
                row.append("")
                continue
            d = paired_difference([sa[s] for s in seeds], [sb[s] for s in seeds])
            numbers["paired"].setdefault(cell, {})[f"{a} - {b}"] = d
            row.append(f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]")
        lines.append(f"| {a} - {b} | " + " | ".join(row) + " |")
    params = {cell: next((r["params"] for r in runs if r["cell"] == cell), None) for cell in cells}
    latency = summary["latency_ms"]
    lines += ["", "| model | parameters | compression | full graph ms | 256 nodes with fetch ms | 256 nodes, no fetch ms |",
              "| --- | ---: | ---: | ---: | ---: | ---: |",
              f"| teacher | {teacher['params']:,} | 1x | {latency['teacher']['full graph']:.1f} | "
              f"{latency['teacher']['batch, fetch']:.1f} | n/a |"]
    for cell in cells:
        p = params[cell]
        exact = "" if summary["cells"][cell]["arch"] == "mlp" else " (no neighbours: not its prediction)"
        lines.append(f"| {cell} | {p:,} | {teacher['params'] / p:.1f}x | {latency[cell]['full graph']:.1f} | "
                     f"{latency[cell]['batch, fetch']:.1f} | {latency[cell]['batch, no fetch']:.1f}{exact} |"
                     if p else f"| {cell} | | | | | |")
    for cell in cells:
        attention = next((r["attention"] for r in runs if r["cell"] == cell and r["method"] == "ABKD"
                          and "attention" in r), None)
        if attention:
            slug = re.sub(r"[^A-Za-z0-9]+", "_", cell).strip("_")
            heatmap(attention, f"{name}, {cell}: learned ABKD attention (seed 0)", folder / f"attention_{slug}.png")
            lines.append(f"\n![{name} {cell}]({name}/attention_{slug}.png)")
    seconds = sum(r["seconds"] for r in runs)
    epochs = statistics.median(r["epochs"] for r in runs) if runs else 0
    lines += ["", f"{len(runs)} student runs, {seconds / 60:.1f} min of training; student epochs (median) {epochs:.0f}.", ""]
    return lines, numbers


def write_report(out: Path, datasets: list[str]) -> str:
    """Rewrite ``report.md`` and ``results.json`` from the runs of ``datasets``; returns the Markdown."""
    lines = ["# ABKD with deep teachers", "",
             "Test accuracy (%) at the best validation epoch, mean ± std (runs); `python -m benchmarks.abkd_deep`.", ""]
    numbers = {}
    for name in datasets:
        section, numbers[name] = dataset_section(out, name)
        lines += section
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps(numbers, indent=1))
    return text
