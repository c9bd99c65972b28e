"""The ABKD report's outputs from finished runs: a table (Markdown + HTML), two PNG plots and TensorBoard hparams.

Input: the teacher's and the students' ``result.json`` dicts (``benchmarks/abkd_report.py``).
Runs are grouped by (method, hidden width); each group's test metric is shown as
mean ± sample standard deviation over its seeds. Runs that disagree on the dataset
or on the teacher checkpoint (SHA-256) are refused before anything is written.
"""
from __future__ import annotations

import html
import os
import shutil
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from foundation.errors import InputError
from foundation.files import atomic_paths, replace_folder  # noqa: E402


class ReportError(InputError, ValueError):
    """The spec or the runs cannot make a report: the message says what is wrong and how to fix it."""


@dataclass
class Row:
    """One (method, hidden width) of the table: its seeds' scores and the shared size/latency figures."""

    method: str
    hidden: int
    scores: list[float]
    student_params: int
    compression: float
    latency_ratio: float
    runs: list[str]

    @property
    def mean(self) -> float:
        return statistics.mean(self.scores)

    @property
    def std(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0


def check_consistent(teacher: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Refuse runs whose dataset or teacher hash differs from the teacher's, or whose epochs differ, naming them."""
    expected = (teacher["dataset"], teacher["teacher_sha256"])
    foreign = [r for r in runs if (r["dataset"], r["teacher_sha256"]) != expected]
    if foreign:
        listed = "; ".join(f"{r['run']} (dataset {r['dataset']}, teacher {r['teacher_sha256'][:12]})" for r in foreign)
        raise ReportError(
            f"runs from another dataset or teacher are mixed into this report, which uses dataset {expected[0]} and "
            f"teacher {expected[1][:12]} ({teacher['checkpoint']}): {listed}. Move them to their own output_dir "
            "or delete their folders to rerun them with this teacher"
        )
    epochs = defaultdict(list)
    for run in runs:
        epochs[run.get("epochs")].append(run["run"])
    if len(epochs) > 1:
        listed = "; ".join(f"{count} epochs: {', '.join(names)}" for count, names in epochs.items())
        raise ReportError(f"runs trained for different numbers of epochs are mixed into this report ({listed}); "
                          "delete the folders of the runs from the old spec to rerun them")


def group(runs: list[dict[str, Any]]) -> list[Row]:
    """Rows by (method, hidden), methods in first-seen order and widths ascending."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["method"], run["hidden"])].append(run)
    order = list(dict.fromkeys(r["method"] for r in runs))
    rows = []
    for (method, hidden), members in sorted(groups.items(), key=lambda item: (order.index(item[0][0]), item[0][1])):
        members.sort(key=lambda r: r["seed"])
        rows.append(Row(method, hidden, [r["test_metric"] for r in members], members[0]["student_params"],
                        members[0]["compression"], statistics.mean(r["latency_ratio"] for r in members),
                        [r["run"] for r in members]))
    return rows


def pareto_front(rows: list[Row]) -> list[Row]:
    """Rows no other row beats on both compression and mean score (ties kept), by compression."""
    front = [r for r in rows if not any(o.compression >= r.compression and o.mean >= r.mean
                                        and (o.compression, o.mean) != (r.compression, r.mean) for o in rows)]
    return sorted(front, key=lambda r: r.compression)


def table_cells(teacher: dict[str, Any], rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the Markdown and HTML tables (scores in %)."""
    metric = teacher["metric"]
    front = {(r.method, r.hidden) for r in pareto_front(rows)}
    header = ["method", "hidden", f"test {metric} (%)", "seeds", "params", "compression", "latency student/teacher", "Pareto"]
    cells = [["teacher", str(teacher["hidden"]), f"{100 * teacher['test_metric']:.2f}", "1", f"{teacher['params']:,}", "1.0x", "1.00", ""]]
    for r in rows:
        cells.append([r.method, str(r.hidden), f"{100 * r.mean:.2f} ± {100 * r.std:.2f}", str(len(r.scores)),
                      f"{r.student_params:,}", f"{r.compression:.1f}x", f"{r.latency_ratio:.2f}",
                      "*" if (r.method, r.hidden) in front else ""])
    return header, cells


def caption(teacher: dict[str, Any], rows: list[Row]) -> str:
    return (f"{teacher['dataset']}: teacher {teacher['arch'].upper()} {teacher['num_layers']} x {teacher['hidden']} "
            f"(SHA-256 {teacher['teacher_sha256'][:12]}); test {teacher['metric']} at the best-validation checkpoint, "
            f"mean ± sample std over seeds; latency = median full-graph inference, student / teacher, same process; "
            f"* = on the accuracy-vs-compression Pareto front. {sum(len(r.scores) for r in rows)} student runs.")


def markdown(teacher: dict[str, Any], rows: list[Row]) -> str:
    header, cells = table_cells(teacher, rows)
    lines = [caption(teacher, rows), "", "| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def html_page(teacher: dict[str, Any], rows: list[Row]) -> str:
    header, cells = table_cells(teacher, rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ABKD report: {html.escape(teacher['dataset'])}"
            "</title><style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:3px 8px;text-align:right}"
            "</style></head><body>\n"
            f"<p>{html.escape(caption(teacher, rows))}</p>\n<table><tr>{head}</tr>\n{body}\n</table>\n"
            "<p><img src=\"accuracy_vs_compression.png\"> <img src=\"accuracy_vs_latency.png\"></p>\n</body></html>\n")


def plot(teacher: dict[str, Any], rows: list[Row], x_field: str, path: Path) -> None:
    """One line per method through its hidden widths; the Pareto front drawn when ``x_field`` is compression."""
    figure, axis = plt.subplots(figsize=(8.6, 4.6))
    for method in dict.fromkeys(r.method for r in rows):
        points = sorted((r for r in rows if r.method == method), key=lambda r: r.hidden)
        xs = [getattr(r, x_field) for r in points]
        axis.errorbar(xs, [100 * r.mean for r in points], yerr=[100 * r.std for r in points], marker="o", capsize=3,
                      label=method)
        for r, x in zip(points, xs):
            if x_field != "compression":  # there the width is written under the x tick
                axis.annotate(f"h{r.hidden}", (x, 100 * r.mean), textcoords="offset points", xytext=(4, 4),
                              fontsize=7)
    if x_field == "compression":
        front = pareto_front(rows)
        axis.plot([r.compression for r in front], [100 * r.mean for r in front], "k--", marker="o", mfc="none", ms=11,
                  label="Pareto front")
        axis.set_xscale("log")
        widths = {r.compression: r.hidden for r in rows}
        axis.set_xticks(sorted(widths), [f"{c:.1f}x\nhidden {widths[c]}" for c in sorted(widths)])
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_xlabel("compression (teacher params / student params, log scale)")
        axis.set_title(f"{teacher['dataset']}: test {teacher['metric']} vs compression")
    else:
        axis.set_xlabel("inference latency, student / teacher (full graph, median)")
        axis.set_title(f"{teacher['dataset']}: test {teacher['metric']} vs latency")
    axis.axhline(100 * teacher["test_metric"], color="grey", ls=":", label="teacher")
    axis.set_ylabel(f"test {teacher['metric']} (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    with atomic_paths(path) as (temporary,):
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


def write_hparams(runs: list[dict[str, Any]], folder: Path) -> None:
    """One TensorBoard hparams entry per run ({method, hidden, seed} -> test metric, compression, latency ratio)."""
    from torch.utils.tensorboard import SummaryWriter

    temporary = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(temporary))
    for run in sorted(runs, key=lambda r: r["run"]):
        writer.add_hparams({"method": run["method"], "hidden": run["hidden"], "seed": run["seed"]},
                           {f"report/test_{run['metric']}": run["test_metric"], "report/compression": run["compression"],
                            "report/latency_ratio": run["latency_ratio"]}, run_name=run["run"])
    writer.close()
    replace_folder(temporary, folder)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_paths(path) as (temporary,):
        temporary.write_text(text)


def write_report(teacher: dict[str, Any], runs: list[dict[str, Any]], folder: Path) -> list[Row]:
    """``report.md``, ``report.html``, ``accuracy_vs_compression.png``, ``accuracy_vs_latency.png``, ``tensorboard/``."""
    check_consistent(teacher, runs)
    rows = group(runs)
    plot(teacher, rows, "compression", folder / "accuracy_vs_compression.png")
    plot(teacher, rows, "latency_ratio", folder / "accuracy_vs_latency.png")
    write_hparams(runs, folder / "tensorboard")
    write_text_atomic(folder / "report.html", html_page(teacher, rows))
    write_text_atomic(folder / "report.md", markdown(teacher, rows))
    return rows
