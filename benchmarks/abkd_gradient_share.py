"""How much of an ABKD student's update comes from each loss term, along training.

    python -m benchmarks.abkd_gradient_share --teacher outputs/abkd_deep_gcn/Cora/teacher.pt --dataset Cora

Trains the student of an ``abkd_deep`` cell with ABKD (its default weights unless given) and prints, at a
few epochs, the norm of the gradient that each term (cross-entropy, ``kd_logit``, ``kd_align``) alone sends
to the student's parameters, and the alignment's share of the logit term's. A term whose gradient is a few
percent of another's barely steers training, whatever its loss value.
"""
from __future__ import annotations

import argparse
import pickle
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.abkd_deep import TeacherShape
from benchmarks.kd_training import cache_normalisation, load_graph, teacher_outputs
from benchmarks.machine import use_threads
from foundation.errors import InputError
from graphkd.distill import ABKD, DistillContext
from graphkd.models import build_gnn


def gradient_norm(term: Tensor, parameters: list[torch.nn.Parameter]) -> float:
    """``||d term / d parameters||`` over all ``parameters`` (unused ones count as zero)."""
    grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), torch.zeros(()))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="a teacher.pt written by benchmarks.abkd_deep")
    parser.add_argument("--dataset", default="Cora", help="the graph the teacher was trained on")
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="as for benchmarks.abkd_deep")
    parser.add_argument("--student", nargs=3, default=["gcn", "4", "23"], metavar=("ARCH", "LAYERS", "WIDTH"),
                        help="the student (default: Cora's GCN >= 8x cell of a plain 8 x 128 teacher)")
    parser.add_argument("--kd-weight", type=float, default=3.0, help="ABKD's logit_weight")
    parser.add_argument("--align-weight", type=float, default=1.0, help="ABKD's align_weight")
    parser.add_argument("--epochs", type=int, nargs="+", default=[0, 25, 50, 100, 200], help="epochs to measure at")
    parser.add_argument("--seed", type=int, default=0, help="student seed")
    args = parser.parse_args(argv)
    use_threads(1)
    if not args.teacher.is_file():
        parser.error(f"no teacher file {args.teacher}: run benchmarks.abkd_deep first (it writes <out>/<dataset>/teacher.pt)")
    try:
        saved = torch.load(args.teacher, weights_only=True)
        shape = TeacherShape(**{f.name: saved["info"][f.name] for f in fields(TeacherShape) if f.name in saved["info"]})
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as error:
        parser.error(f"{args.teacher} is not a teacher.pt written by benchmarks.abkd_deep ({error})")
    try:
        graph = load_graph(args.dataset, args.data_root)
        teacher = shape.build(graph)
        teacher.load_state_dict(saved["state_dict"])
    except InputError as error:  # missing or partial dataset files
        parser.error(str(error))
    except RuntimeError as error:  # weights of another graph
        parser.error(f"{args.teacher} does not fit {args.dataset} ({error}); give the dataset it was trained on")
    teacher_out = teacher_outputs(teacher, graph)
    arch, layers, width = args.student[0], int(args.student[1]), int(args.student[2])
    context = DistillContext(mask=torch.ones(graph.y.shape[0], dtype=torch.bool), edge_index=graph.edge_index,
                             labels=graph.y)
    print(f"{args.dataset}: teacher {shape.arch} {shape.layers} x {shape.hidden}, student {arch} {layers} x {width}, "
          f"logit weight {args.kd_weight}, align weight {args.align_weight}; gradient norms on the student's parameters")
    print("| alignment | epoch | CE | kd_logit | kd_align | kd_align / kd_logit |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for alignment in ("pooled", "node"):
        torch.manual_seed(args.seed)
        student = cache_normalisation(build_gnn(arch, graph.num_features, width, graph.num_classes, layers))
        distiller = ABKD(list(student.layer_dims), list(teacher.layer_dims), logit_weight=args.kd_weight,
                         align_weight=args.align_weight, alignment=alignment)
        optimizer = torch.optim.Adam([*student.parameters(), *distiller.parameters()], lr=0.01, weight_decay=5e-4)
        parameters = list(student.parameters())
        for epoch in range(max(args.epochs) + 1):
            student.train()
            out = student(graph.x, graph.adj_t)
            terms = {"CE": F.cross_entropy(out.logits[graph.train_mask], graph.y[graph.train_mask]),
                     **distiller(out, teacher_out, context)}
            if epoch in args.epochs:
                norms = {name: gradient_norm(term, parameters) for name, term in terms.items()}
                print(f"| {alignment} | {epoch} | {norms['CE']:.4f} | {norms['kd_logit']:.4f} | {norms['kd_align']:.4f} | "
                      f"{norms['kd_align'] / norms['kd_logit']:.3f} |")
            optimizer.zero_grad()
            sum(terms.values(), torch.zeros(())).backward()
            optimizer.step()


if __name__ == "__main__":
    main()
