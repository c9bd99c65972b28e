"""ABKD with deep teachers (GCNII, or plain GCNs whose layers differ), GCN and MLP students, 10 seeds.

    python -m benchmarks.abkd_deep --data-root data --out outputs/abkd_deep                 # the whole table
    python -m benchmarks.abkd_deep --datasets Cora --seeds 3 --ablation --out outputs/abkd_ablation
    python -m benchmarks.abkd_deep --teacher-arch gcn --out outputs/abkd_deep_gcn   # teachers whose layers differ

Per dataset a GCNII teacher is trained once (GCNII's published shape and settings where it has them,
kept at its lowest validation loss, as ``configs/gcnii_*.yaml`` do; ``--teacher-checkpoint
Cora=checkpoints/gcnii_cora/version_0/best.ckpt`` uses one trained by ``main.py`` instead;
``--teacher-arch gcn`` a plain 8 x 128 GCN with BatchNorm, whose layers differ where GCNII's are nearly
one representation, so that ABKD's attention has something to choose). Then for
every student cell (a 4-layer GCN, the paper's student, and a 3-layer MLP, the GLNN setting, each at
the widest width that is >= 8x and >= 30x smaller than the teacher), every method and every seed a
student is trained from the same initialisation per seed, stopped on validation accuracy (patience),
and scored on the test split at its best validation epoch. The split is fixed per dataset (public, or
Shchur et al.'s 20/30 per class drawn with seed 0) because the teacher was trained on it; seeds vary
the student's initialisation and dropout. Every finished run is appended to ``runs.jsonl`` in the
output folder, so an interrupted experiment resumes where it stopped; ``report.md``, ``results.json``
and one attention heatmap per dataset and cell are rewritten from all runs at the end of each dataset.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from benchmarks.abkd_deep_report import write_report
from benchmarks.kd_training import (
    Budget,
    Graph,
    accuracy,
    fit,
    inference_latency,
    load_graph,
    teacher_outputs,
    trainable_copy,
)
from benchmarks.machine import use_threads
from foundation.errors import InputError
from graphkd.distill import ABKD, GCRD, LSP, Distiller, FitNet, LogitKD, NoKD
from graphkd.models import build_gnn, count_parameters
from lightning_modules.distillation import read_classifier


@dataclass(frozen=True)
class TeacherShape:
    """A teacher and its training rule (GCNII: chennnM/GCNII ``semi.sh`` where published).

    ``arch`` "gcnii" uses ``lamda`` and ``conv_weight_decay`` and is kept at its lowest validation loss
    (GCNII's rule); "gcn" is a plain stack with BatchNorm after every hidden layer (what lets it train at
    depth), whose layers are *not* kept close to the input, kept at its best validation accuracy (its
    validation loss is lowest at epoch 0).
    """

    layers: int
    hidden: int
    lamda: float = 0.5
    dropout: float = 0.5
    conv_weight_decay: float = 0.01
    max_epochs: int = 1500
    patience: int = 100
    arch: str = "gcnii"
    monitor: str = "loss"

    def build(self, graph: Graph) -> torch.nn.Module:
        if self.arch == "gcnii":
            return build_gnn("gcnii", graph.num_features, self.hidden, graph.num_classes, self.layers, self.dropout,
                             arch_options={"alpha": 0.1, "lamda": self.lamda, "conv_weight_decay": self.conv_weight_decay})
        return build_gnn(self.arch, graph.num_features, self.hidden, graph.num_classes, self.layers, self.dropout,
                         norm=True)


TEACHERS: dict[str, TeacherShape] = {
    "Cora": TeacherShape(64, 64, 0.5, 0.6),
    "CiteSeer": TeacherShape(32, 256, 0.6, 0.7),
    "PubMed": TeacherShape(16, 256, 0.4, 0.5, conv_weight_decay=5e-4),
    # Not in GCNII's paper: 8 layers (on Physics a layer's forward + backward costs 0.2-0.4 s on one CPU
    # thread, so 64 layers would take ~20 s an epoch), Cora's other settings, a 200-epoch cap, patience 30.
    "Computers": TeacherShape(8, 64, 0.5, 0.5, max_epochs=200, patience=30),
    "Physics": TeacherShape(8, 64, 0.5, 0.5, max_epochs=200, patience=30),
}
# Plain deep teachers whose layers differ (something for the attention to choose): 8 x 128 with BatchNorm.
PLAIN_TEACHER = TeacherShape(8, 128, dropout=0.5, max_epochs=500, patience=100, arch="gcn", monitor="acc")
PUBLISHED_GCNII = {"Cora": 85.5, "CiteSeer": 73.4, "PubMed": 80.3}
STUDENTS = {"GCN": ("gcn", 4), "MLP": ("mlp", 3)}  # cell family -> (arch, layers)
RATIOS = (8, 30)

Factory = Callable[[list[int], list[int]], Distiller]


@dataclass(frozen=True)
class Method:
    """A compared method: its distiller (from student and teacher widths), and whether the teacher trains too."""

    distiller: Factory
    joint_teacher: bool = False


def abkd(kd_weight: float, align_weight: float, joint_teacher: bool = False, **options: Any) -> Method:
    """ABKD with the experiment's term weights and ``options`` (attention, alignment, learn_projection)."""
    return Method(lambda s, t: ABKD(s, t, logit_weight=kd_weight, align_weight=align_weight, **options), joint_teacher)


def methods(kd_weight: float, align_weight: float = 1.0) -> dict[str, Method]:
    """The compared methods; FitNet, LSP and G-CRD are their papers' representation losses (no logit term)."""
    return {
        "no KD": Method(NoKD),
        "logit KD": Method(lambda s, t: LogitKD(s, t, weight=kd_weight)),
        "FitNet": Method(lambda s, t: FitNet(s, t, weight=0.1)),
        "LSP": Method(lambda s, t: LSP(s, t, weight=10.0)),
        "G-CRD": Method(lambda s, t: GCRD(s, t, weight=0.1)),
        "ABKD": abkd(kd_weight, align_weight),
    }


def ablation(kd_weight: float, align_weight: float = 1.0) -> dict[str, Method]:
    """ABKD with one choice changed (a fixed attention, per-node alignment, no learnable student projection), and
    logit KD / ABKD with the teacher trained jointly (from its checkpoint, its own loss added) instead of frozen."""
    return {
        "ABKD uniform A": abkd(kd_weight, align_weight, attention="uniform"),
        "ABKD last teacher layer": abkd(kd_weight, align_weight, attention="last"),
        "ABKD per-node": abkd(kd_weight, align_weight, alignment="node"),
        # per-node alignment with the weight chosen on validation for GCN students of plain teachers (docs/abkd.md)
        "ABKD per-node, align 30": abkd(kd_weight, 30.0, alignment="node"),
        "ABKD no learned projection": abkd(kd_weight, align_weight, learn_projection=False),
        "logit KD joint teacher": Method(lambda s, t: LogitKD(s, t, weight=kd_weight), joint_teacher=True),
        "ABKD joint teacher": abkd(kd_weight, align_weight, joint_teacher=True),
    }


def student_width(arch: str, layers: int, graph: Graph, budget: int) -> int:
    """The widest hidden width whose model has at most ``budget`` parameters."""
    params = lambda h: count_parameters(build_gnn(arch, graph.num_features, h, graph.num_classes, layers))
    width = 1
    while params(width + 1) <= budget:
        width += 1
    if params(width) > budget:
        raise SystemExit(f"no {arch} of {layers} layers fits in {budget} parameters on {graph.name}")
    return width


def linear_cka(a: Tensor, b: Tensor) -> float:
    """Linear centred kernel alignment of two ``(n, d)`` representations (1: equal up to rotation and scale)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a.T @ b).norm() ** 2 / ((a.T @ a).norm() * (b.T @ b).norm()))


def layer_similarity(hidden: list[Tensor]) -> dict[str, float]:
    """How alike the teacher's layers are, i.e. how much ABKD's attention over them can choose.

    ``pooled_cos_min``: the smallest cosine between two layers' mean vectors (what pooled alignment
    compares); ``node_cos_first_last`` / ``node_cos_middle_last``: mean per-node cosine of the first / middle
    layer with the last; ``cka_first_last`` / ``cka_middle_last``: linear CKA of the same pairs.
    """
    pooled = F.normalize(torch.stack([h.mean(0) for h in hidden]), dim=-1)
    middle = hidden[len(hidden) // 2]
    return {
        "pooled_cos_min": float((pooled @ pooled.T).min()),
        "node_cos_first_last": float(F.cosine_similarity(hidden[0], hidden[-1], dim=-1).mean()),
        "node_cos_middle_last": float(F.cosine_similarity(middle, hidden[-1], dim=-1).mean()),
        "cka_first_last": linear_cka(hidden[0], hidden[-1]),
        "cka_middle_last": linear_cka(middle, hidden[-1]),
    }


def train_teacher(graph: Graph, shape: TeacherShape, folder: Path, checkpoint: Path | None) -> tuple[torch.nn.Module, dict]:
    """The dataset's teacher: loaded from ``folder/teacher.pt`` or a ``main.py`` checkpoint, or trained (seed 0)."""
    if checkpoint is not None:
        classifier, hparams = read_classifier(checkpoint)
        if hparams.get("num_features") != graph.num_features:
            raise SystemExit(f"{checkpoint} was trained on {hparams.get('num_features')} features, {graph.name} has "
                             f"{graph.num_features}")
        return classifier.model, {"source": str(checkpoint), "arch": hparams.get("arch", "gcnii"),
                                  "norm": bool(hparams.get("norm", False)),
                                  "layers": hparams["num_layers"], "hidden": hparams["hidden_channels"]}
    file = folder / "teacher.pt"
    if file.is_file():
        saved = torch.load(file, weights_only=True)
        kept = {key: saved["info"].get(key, "gcnii" if key == "arch" else None) for key in ("arch", "layers", "hidden")}
        if kept != {"arch": shape.arch, "layers": shape.layers, "hidden": shape.hidden}:
            raise SystemExit(f"{file} holds a {kept} teacher, not the asked {shape.arch} {shape.layers} x {shape.hidden}: "
                             "give another --out for another teacher")
        teacher = shape.build(graph)
        teacher.load_state_dict(saved["state_dict"])
        return teacher, saved["info"]
    torch.manual_seed(0)
    teacher = shape.build(graph)
    budget = Budget(max_epochs=shape.max_epochs, patience=shape.patience, monitor=shape.monitor)
    result, _ = fit(teacher, graph, budget, progress=f"{graph.name} teacher (epochs)")
    info = {"source": "trained here (seed 0)", "norm": shape.arch != "gcnii", **asdict(result), **asdict(shape)}
    torch.save({"state_dict": teacher.state_dict(), "info": info}, file)
    return teacher, info


def run_dataset(name: str, args: argparse.Namespace) -> None:
    """All runs of one dataset that are not in its ``runs.jsonl`` yet, then the dataset's summary."""
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    graph = load_graph(name, args.data_root)
    shape = TEACHERS[name] if args.teacher_arch == "gcnii" else PLAIN_TEACHER
    shape = replace(shape, **{key: value for key, value in (("layers", args.teacher_layers),
                    ("hidden", args.teacher_hidden), ("max_epochs", args.teacher_max_epochs)) if value is not None})
    teacher, teacher_info = train_teacher(graph, shape, folder, args.teacher_checkpoint.get(name))
    teacher_params = count_parameters(teacher)
    published = PUBLISHED_GCNII.get(name) if teacher_info.get("arch", "gcnii") == "gcnii" else None
    teacher_info |= {"params": teacher_params, "published": published}
    teacher_out = teacher_outputs(teacher, graph)  # once: scored here, distilled by every run below
    teacher_info |= {"val": accuracy(teacher_out.logits, graph.y, graph.val_mask),
                     "test": accuracy(teacher_out.logits, graph.y, graph.test_mask),
                     "layer_similarity": layer_similarity(teacher_out.hidden)}
    compared = methods(args.kd_weight, args.align_weight)
    chosen = compared | (ablation(args.kd_weight, args.align_weight) if args.ablation else {})
    chosen = {name: method for name, method in chosen.items() if args.methods is None or name in args.methods}
    runs_file = folder / "runs.jsonl"
    done = {(r["cell"], r["method"], r["seed"]) for r in map(json.loads, runs_file.read_text().splitlines())} \
        if runs_file.is_file() else set()
    cells = {}
    for family in args.students:
        arch, layers = STUDENTS[family]
        for ratio in args.ratios:
            width = student_width(arch, layers, graph, teacher_params // ratio)
            cells[f"{family} {layers}x{width} (>={ratio}x)"] = (arch, layers, width)
    budget = Budget(max_epochs=args.max_epochs, patience=args.patience)
    # Seed-major order: whenever the experiment stops, every finished seed has every method (paired runs).
    todo = [(c, m, s) for s in range(args.seeds) for c in cells for m in chosen if (c, m, s) not in done
            and (m in compared or c == next(iter(cells)))]  # ablations on the first cell only
    for cell, method, seed in tqdm(todo, desc=name, unit="run"):
        arch, layers, width = cells[cell]
        torch.manual_seed(seed)
        student = build_gnn(arch, graph.num_features, width, graph.num_classes, layers, args.dropout)
        distiller = chosen[method].distiller(list(student.layer_dims), list(teacher.layer_dims))
        record: dict = {}
        if chosen[method].joint_teacher:
            joint = trainable_copy(teacher)
            result, _ = fit(student, graph, budget, None, distiller, joint_teacher=joint)
            joint_out = teacher_outputs(joint, graph)  # the teacher as it was at the student's kept epoch
            record["joint_teacher"] = {"val": accuracy(joint_out.logits, graph.y, graph.val_mask),
                                       "test": accuracy(joint_out.logits, graph.y, graph.test_mask)}
        else:
            result, _ = fit(student, graph, budget, teacher_out, distiller)
        record = {"cell": cell, "method": method, "seed": seed, **asdict(result), "params": count_parameters(student),
                  "kd_weight": args.kd_weight, "align_weight": getattr(distiller, "align_weight", None), **record}
        scores = distiller.attention_scores()
        if scores is not None and seed == 0:
            record["attention"] = scores.tolist()
        with runs_file.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
    latency = {"teacher": inference_latency(teacher, graph, hops=len(teacher.layer_dims) - 1)}
    for cell, (arch, layers, width) in cells.items():
        student = build_gnn(arch, graph.num_features, width, graph.num_classes, layers)
        latency[cell] = inference_latency(student, graph, hops=0 if arch == "mlp" else layers)
    # Cells of earlier invocations on this folder (other --students / --ratios) stay in the summary and report.
    summary_file = folder / "summary.json"
    earlier = json.loads(summary_file.read_text()) if summary_file.is_file() else {"cells": {}, "latency_ms": {}}
    summary = {"teacher": teacher_info, "latency_ms": earlier["latency_ms"] | latency, "kd_weight": args.kd_weight,
               "budget": asdict(budget), "cells": earlier["cells"] | {c: {"arch": a, "layers": la, "width": w}
                                                                      for c, (a, la, w) in cells.items()}}
    summary_file.write_text(json.dumps(summary, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("data"),
                        help="folder with planetoid/<Name>/raw and pyg/<Name>/raw (the CLI configs' layout)")
    parser.add_argument("--datasets", nargs="+", default=["Cora", "CiteSeer", "Computers", "Physics"],
                        choices=sorted(TEACHERS), help="graphs, run in this order")
    parser.add_argument("--out", type=Path, default=Path("outputs/abkd_deep"), help="output folder (resumable)")
    parser.add_argument("--seeds", type=int, default=10, help="student seeds per method and cell")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS),
                        help="student families: GCN (4 layers, the paper's) and MLP (3 layers, GLNN's)")
    parser.add_argument("--ratios", nargs="+", type=int, default=list(RATIOS),
                        help="compression ratios of the student cells (each student is the widest within teacher / ratio)")
    parser.add_argument("--kd-weight", type=float, default=3.0, help="weight of the T^2 KL logit term (logit KD, ABKD)")
    parser.add_argument("--align-weight", type=float, default=1.0, help="weight of ABKD's attention-weighted alignment term")
    parser.add_argument("--max-epochs", type=int, default=500, help="student epoch cap")
    parser.add_argument("--patience", type=int, default=50, help="student epochs without a better validation accuracy")
    parser.add_argument("--dropout", type=float, default=0.5, help="student dropout")
    parser.add_argument("--methods", nargs="+", default=None, choices=[*methods(1.0), *ablation(1.0)],
                        help="run only these methods (default: all; ablations need --ablation)")
    parser.add_argument("--ablation", action="store_true",
                        help="also the ablations on the first cell: ABKD with uniform / last-layer attention, per-node "
                             "alignment (at --align-weight and at 30), no learned projection, and logit KD / ABKD with "
                             "a jointly trained teacher")
    parser.add_argument("--teacher-arch", default="gcnii", choices=["gcnii", "gcn"],
                        help="teacher family: GCNII (published shapes per dataset) or a plain deep GCN with BatchNorm "
                             "(8 x 128 unless --teacher-layers / --teacher-hidden), whose layers differ")
    parser.add_argument("--teacher-layers", type=int, default=None, help="teacher depth instead of the default shape's")
    parser.add_argument("--teacher-hidden", type=int, default=None, help="teacher width instead of the default shape's")
    parser.add_argument("--teacher-max-epochs", type=int, default=None,
                        help="cap the teacher's epochs below its published setting (e.g. to fit a time budget)")
    parser.add_argument("--teacher-checkpoint", nargs="*", default=[], metavar="NAME=CKPT",
                        help="use a teacher trained by main.py for dataset NAME")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if malformed := [item for item in args.teacher_checkpoint if "=" not in item]:
        parser.error(f"--teacher-checkpoint takes NAME=CKPT pairs (e.g. Cora=checkpoints/gcnii_cora/version_0/best.ckpt), "
                     f"got {malformed}")
    args.teacher_checkpoint = {name: Path(path) for name, path in (item.split("=", 1) for item in args.teacher_checkpoint)}
    use_threads(args.threads)
    start = time.perf_counter()
    for name in args.datasets:
        try:
            run_dataset(name, args)
        except InputError as error:  # missing or partial dataset files, an unusable teacher checkpoint
            parser.error(str(error))
        print(write_report(args.out, [n for n in args.datasets if (args.out / n / "summary.json").is_file()]))
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
