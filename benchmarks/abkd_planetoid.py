"""ABKD against its baselines on real Cora and CiteSeer, over seeds, as one Markdown table.

    python -m benchmarks.abkd_planetoid --planetoid-raw ../shared/assets/graphs/planetoid --seeds 10

For every seed: a teacher is trained, then one student per KD method from that
teacher, all with the same optimiser, epochs and model selection (test accuracy
at the best validation epoch). The training step is the one of
``lightning_modules.distillation`` (task loss + the method's weighted terms),
written as a plain loop so 140 runs fit in minutes on a CPU. Also reported:
parameter counts, compression ratio, and student/teacher inference latency
measured in the same process.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from tqdm import tqdm

from datamodules.planetoid import PlanetoidDataModule
from graphkd.distill import ABKD, GCRD, LSP, DistillContext, Distiller, FitNet, LogitKD, NoKD
from graphkd.models import build_gnn, count_parameters

METHODS: dict[str, Callable[[list[int], list[int]], Distiller]] = {
    "no KD": NoKD,
    "logit KD": LogitKD,
    "FitNet": lambda s, t: FitNet(s, t, weight=0.1),
    "LSP": lambda s, t: LSP(s, t, weight=10.0),
    "G-CRD": lambda s, t: GCRD(s, t, weight=0.1),
    "ABKD": ABKD,
}
ABKD_ABLATION: dict[str, Callable[[list[int], list[int]], Distiller]] = {
    "ABKD node-wise": lambda s, t: ABKD(s, t, alignment="node"),
    "ABKD align x10": lambda s, t: ABKD(s, t, align_weight=10.0),
    "ABKD all layers": lambda s, t: ABKD(s, t, layers="all"),
    "ABKD attention T=4": lambda s, t: ABKD(s, t, attention_temperature=4.0),
}


@dataclass
class Setting:
    """Teacher and student shapes and the shared optimisation budget."""

    teacher_arch: str = "gcn"
    teacher_hidden: int = 128
    teacher_layers: int = 3
    student_arch: str = "gcn"
    student_hidden: int = 16
    student_layers: int = 2
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    dropout: float = 0.5


def train(model: torch.nn.Module, data: Data, setting: Setting, teacher: torch.nn.Module | None = None,
          distiller: Distiller | None = None) -> float:
    """Train ``model`` (optionally distilled from a frozen ``teacher``); test accuracy at best validation."""
    params = list(model.parameters()) + (list(distiller.parameters()) if distiller else [])
    optimizer = torch.optim.Adam(params, lr=setting.lr, weight_decay=setting.weight_decay)
    if teacher is not None:
        teacher.eval()
        with torch.no_grad():
            teacher_out = teacher(data.x, data.edge_index)
    context = DistillContext(mask=torch.ones(data.num_nodes, dtype=torch.bool), edge_index=data.edge_index, labels=data.y)
    best_val, best_test = -1.0, 0.0
    for _ in range(setting.epochs):
        model.train()
        out = model(data.x, data.edge_index)
        loss = F.cross_entropy(out.logits[data.train_mask], data.y[data.train_mask])
        if distiller is not None:
            loss = loss + sum(distiller(out, teacher_out, context).values(), torch.zeros(()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            pred = model(data.x, data.edge_index).logits.argmax(-1)
        val = (pred[data.val_mask] == data.y[data.val_mask]).float().mean().item()
        if val > best_val:
            best_val, best_test = val, (pred[data.test_mask] == data.y[data.test_mask]).float().mean().item()
    return best_test


def latency_ms(model: torch.nn.Module, data: Data, repeats: int = 30) -> float:
    """Median full-graph inference time (eval, no grad) after warm-up."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(repeats + 5):
            start = time.perf_counter()
            model(data.x, data.edge_index)
            if i >= 5:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def load(name: str, planetoid_raw: Path, workdir: Path) -> tuple[Data, int]:
    raw = workdir / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for file in planetoid_raw.glob(f"ind.{name.lower()}.*"):
        shutil.copy(file, raw)
    dm = PlanetoidDataModule(name, root=str(workdir))
    data = dm.graph
    data.x = data.x.to_sparse_csr()  # bag-of-words features: same values, a much cheaper first layer
    return data, dm.num_classes


def run_dataset(name: str, data: Data, num_classes: int, setting: Setting, seeds: int,
                methods: dict[str, Callable]) -> dict[str, object]:
    build = lambda arch, hidden, layers: build_gnn(arch, data.num_features, hidden, num_classes, layers, setting.dropout)
    scores: dict[str, list[float]] = {"teacher": [], **{m: [] for m in methods}}
    for seed in tqdm(range(seeds), desc=name):
        torch.manual_seed(seed)
        teacher = build(setting.teacher_arch, setting.teacher_hidden, setting.teacher_layers)
        scores["teacher"].append(train(teacher, data, setting))
        for method, factory in methods.items():
            torch.manual_seed(seed)
            student = build(setting.student_arch, setting.student_hidden, setting.student_layers)
            distiller = factory(list(student.layer_dims), list(teacher.layer_dims))
            scores[method].append(train(student, data, setting, teacher, distiller))
    student = build(setting.student_arch, setting.student_hidden, setting.student_layers)
    return {
        "scores": scores,
        "teacher_params": count_parameters(teacher),
        "student_params": count_parameters(student),
        "teacher_ms": latency_ms(teacher, data),
        "student_ms": latency_ms(student, data),
    }


def table(results: dict[str, dict], setting: Setting) -> str:
    """Markdown: one row per model, one accuracy column per dataset."""
    names = list(results)
    first = results[names[0]]
    lines = [
        f"Teacher {setting.teacher_arch.upper()} {setting.teacher_layers} x {setting.teacher_hidden}, student "
        f"{setting.student_arch.upper()} {setting.student_layers} x {setting.student_hidden}; "
        f"{len(first['scores']['teacher'])} seeds; test accuracy (%) at best validation, mean ± std.",
        "",
        "| model | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for method in first["scores"]:
        cells = []
        for name in names:
            values = [100 * v for v in results[name]["scores"][method]]
            cells.append(f"{statistics.mean(values):.2f} ± {statistics.pstdev(values):.2f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| dataset | teacher params | student params | compression | teacher ms | student ms | student/teacher latency |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        r = results[name]
        lines.append(f"| {name} | {r['teacher_params']:,} | {r['student_params']:,} | "
                     f"{r['teacher_params'] / r['student_params']:.1f}x | {r['teacher_ms']:.2f} | {r['student_ms']:.2f} | "
                     f"{r['student_ms'] / r['teacher_ms']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planetoid-raw", type=Path, default=Path("../shared/assets/graphs/planetoid"),
                        help="folder holding the ind.<name>.* Planetoid files")
    parser.add_argument("--datasets", nargs="+", default=["Cora", "CiteSeer"], help="Planetoid names")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per dataset")
    parser.add_argument("--epochs", type=int, default=200, help="epochs per run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="KD methods")
    parser.add_argument("--ablation", action="store_true", help="also run ABKD variants (alignment, weight, layers, attention temperature)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps timings stable on a shared machine)")
    args = parser.parse_args()
    if not any(args.planetoid_raw.glob("ind.cora.*")):
        raise SystemExit(f"no Planetoid files in {args.planetoid_raw}; pass --planetoid-raw with the ind.<name>.* files")
    torch.set_num_threads(args.threads)
    setting = Setting(epochs=args.epochs)
    methods = {m: METHODS[m] for m in args.methods} | (ABKD_ABLATION if args.ablation else {})
    with tempfile.TemporaryDirectory() as workdir:
        results = {}
        for name in args.datasets:
            data, num_classes = load(name, args.planetoid_raw, Path(workdir))
            results[name] = run_dataset(name, data, num_classes, setting, args.seeds, methods)
    print(table(results, setting))


if __name__ == "__main__":
    main()
