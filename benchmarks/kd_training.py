"""The training loops of the KD experiments: one graph, a teacher trained once, students stopped on validation.

The step is the one of ``lightning_modules.distillation`` (cross-entropy on the training nodes plus the
distiller's weighted terms on all nodes, the transductive setting), written as a plain loop so hundreds
of runs fit on a CPU. Graphs come through the framework's datamodules, from the same folders the CLI's
configs read (``<data_root>/planetoid/<Name>/raw`` for Planetoid, ``<data_root>/pyg/<Name>/raw`` for
Amazon / Coauthor), with the same feature normalisation as ``configs/gcnii_*.yaml`` for Planetoid.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import k_hop_subgraph
from tqdm import tqdm

from datamodules.pyg_dataset import PyGDataModule
from graphkd.distill import DistillContext, Distiller
from graphkd.outputs import GNNOutput
from graphkd.parameter_groups import optimizer_groups
from graphkd.sparse_csr import csr_beta_warning_silenced

# name -> (torch_geometric.datasets class, sub-folder of the data root); the CLI's configs use the same folders.
DATASETS: dict[str, tuple[str, str]] = {
    "Cora": ("torch_geometric.datasets.Planetoid", "planetoid"),
    "CiteSeer": ("torch_geometric.datasets.Planetoid", "planetoid"),
    "PubMed": ("torch_geometric.datasets.Planetoid", "planetoid"),
    "Computers": ("torch_geometric.datasets.Amazon", "pyg"),
    "Photo": ("torch_geometric.datasets.Amazon", "pyg"),
    "Physics": ("torch_geometric.datasets.Coauthor", "pyg"),
    "CS": ("torch_geometric.datasets.Coauthor", "pyg"),
}
SPARSE_DENSITY = 0.05


@dataclass
class Graph:
    """One node-classification graph in the layouts the models take.

    Attributes:
        name: dataset name.
        x: ``(N, F)`` features (row-normalised for Planetoid); sparse CSR when at most ``SPARSE_DENSITY`` of the entries are
            non-zero (bag-of-words inputs: a cheap first layer), dense otherwise (Amazon's 35% dense features
            train 20x slower as CSR, whose backward transposes the matrix every step).
        edge_index: ``(2, E)`` edges (for structure losses such as LSP).
        adj_t: ``(N, N)`` sparse CSR adjacency, rows are targets (one sparse product per propagation).
        y: ``(N,)`` labels.
        train_mask, val_mask, test_mask: ``(N,)`` bool split.
        num_classes: number of classes.
    """

    name: str
    x: Tensor
    edge_index: Tensor
    adj_t: Tensor
    y: Tensor
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])


def load_graph(name: str, data_root: Path, split_seed: int = 0) -> Graph:
    """``name`` from ``data_root`` as the CLI reads it; the public split, else Shchur et al.'s 20/30 per class."""
    if name not in DATASETS:
        raise SystemExit(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    dataset, folder = DATASETS[name]
    # Row-normalised features are GCNII's Planetoid preprocessing (configs/gcnii_*.yaml); on Amazon Computers
    # they stall training (GCNII 8 x 64: training loss still ln 10 after 60 epochs, against 84% validation
    # accuracy at epoch 40 on the raw binary features), so the other graphs keep their raw features.
    module = PyGDataModule(dataset, {"name": name}, root=str(data_root / folder), split_seed=split_seed,
                           normalize_features=folder == "planetoid")
    data = module.graph
    n = data.num_nodes
    with csr_beta_warning_silenced():
        adj_t = torch.sparse_coo_tensor(data.edge_index.flip(0), torch.ones(data.edge_index.shape[1]), (n, n),
                                        check_invariants=False)
        x = data.x.to_sparse_csr() if float((data.x != 0).float().mean()) <= SPARSE_DENSITY else data.x
        return Graph(name, x, data.edge_index, adj_t.coalesce().to_sparse_csr(), data.y,
                     data.train_mask, data.val_mask, data.test_mask, module.num_classes)


@dataclass
class Budget:
    """Optimiser and stopping rule of a run.

    Attributes:
        lr: Adam learning rate.
        weight_decay: L2 decay of parameters without a group of their own (GCNII's layers bring theirs).
        max_epochs: upper bound on epochs.
        patience: epochs without a better validation score before stopping.
        monitor: "loss" (lowest validation loss, GCNII's rule) or "acc" (highest validation accuracy).
    """

    lr: float = 0.01
    weight_decay: float = 5e-4
    max_epochs: int = 500
    patience: int = 50
    monitor: str = "acc"


@dataclass
class RunResult:
    """What a run reports: accuracies (fractions) at the kept epoch, and how long it ran."""

    val: float
    test: float
    epoch: int
    epochs: int
    seconds: float


def accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def cache_normalisation(model: nn.Module, cached: bool = True) -> nn.Module:
    """Let every GCN layer keep its normalised adjacency after the first call (the graph never changes here), or
    with ``cached=False`` normalise each graph it is given (a model run on subgraphs)."""
    for module in model.modules():
        if isinstance(module, GCNConv):
            module.cached = cached
    return model


def trainable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` to train or time on its own. GCN layers' cached sparse adjacency is dropped first
    (CSR tensors cannot be deep-copied); ``model`` and the copy recompute it on their next call."""
    for module in model.modules():
        if isinstance(module, GCNConv):
            module._cached_adj_t = module._cached_edge_index = None
    return copy.deepcopy(model)


def fit(model: nn.Module, graph: Graph, budget: Budget, teacher_out: GNNOutput | None = None,
        distiller: Distiller | None = None, progress: str | None = None,
        joint_teacher: nn.Module | None = None) -> tuple[RunResult, dict[str, Tensor]]:
    """Train ``model`` (distilled from ``teacher_out`` when given) until validation stops improving.

    ``joint_teacher`` instead trains that teacher alongside (``DistillationModule``'s ``train_teacher``): each
    step it runs in train mode, its own cross-entropy on the training nodes is added to the loss, and its
    detached outputs are distilled (KD never pushes the teacher). Returns the result at the kept epoch and the
    kept weights (of the model under ``0.``-prefixed keys, of the distiller under ``1.``, of a joint teacher
    last). GCN layers keep their normalised adjacency from then on. ``progress`` names a progress bar over
    epochs (for long runs such as a deep teacher's).
    """
    if joint_teacher is not None and teacher_out is not None:
        raise ValueError("give either teacher_out (a frozen teacher's outputs) or joint_teacher, not both")
    trained = nn.ModuleList([cache_normalisation(model)] + ([distiller] if distiller is not None else [])
                            + ([cache_normalisation(joint_teacher)] if joint_teacher is not None else []))
    optimizer = torch.optim.Adam(optimizer_groups(trained), lr=budget.lr, weight_decay=budget.weight_decay)
    context = DistillContext(mask=torch.ones(graph.y.shape[0], dtype=torch.bool), edge_index=graph.edge_index,
                             labels=graph.y)
    best: tuple[float, float, int] | None = None  # (score to maximise, test, epoch)
    kept: dict[str, Tensor] = {}
    start = time.perf_counter()
    epoch = 0
    for epoch in tqdm(range(budget.max_epochs), desc=progress, disable=progress is None, leave=False):
        trained.train()
        out = model(graph.x, graph.adj_t)
        loss = F.cross_entropy(out.logits[graph.train_mask], graph.y[graph.train_mask])
        if joint_teacher is not None:
            taught = joint_teacher(graph.x, graph.adj_t)
            loss = loss + F.cross_entropy(taught.logits[graph.train_mask], graph.y[graph.train_mask])
            teacher_out = GNNOutput(taught.logits.detach(), [h.detach() for h in taught.hidden])
        if distiller is not None and teacher_out is not None:
            loss = loss + sum(distiller(out, teacher_out, context).values(), torch.zeros(()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trained.eval()
        with torch.no_grad():
            logits = model(graph.x, graph.adj_t).logits
        if budget.monitor == "loss":
            score = -float(F.cross_entropy(logits[graph.val_mask], graph.y[graph.val_mask]))
        else:
            score = accuracy(logits, graph.y, graph.val_mask)
        if best is None or score > best[0]:
            best = (score, accuracy(logits, graph.y, graph.test_mask), epoch)
            kept = {k: v.detach().clone() for k, v in trained.state_dict().items()}
            val = accuracy(logits, graph.y, graph.val_mask)
        elif epoch - best[2] >= budget.patience:
            break
    assert best is not None
    trained.load_state_dict(kept)
    return RunResult(val, best[1], best[2], epoch + 1, time.perf_counter() - start), kept


def teacher_outputs(teacher: nn.Module, graph: Graph) -> GNNOutput:
    """The frozen teacher's full-graph outputs in eval mode (computed once, as the teacher cache does)."""
    teacher.eval()
    with torch.no_grad():
        return teacher(graph.x, graph.adj_t)


def latency_ms(fn: Any, repeats: int = 20) -> float:
    """Median wall time of ``fn()`` in ms after three warm-up calls."""
    times = []
    for i in range(repeats + 3):
        begin = time.perf_counter()
        fn()
        if i >= 3:
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def inference_latency(model: nn.Module, graph: Graph, hops: int, batch: int = 256, seed: int = 0) -> dict[str, float]:
    """Inference latency of ``model`` (ms): the full graph, and ``batch`` random nodes with and without fetching.

    ``fetch`` first extracts the ``hops``-hop neighbourhood of the batch (what a GNN needs before it can
    predict a node; an MLP needs ``hops = 0``) and runs the model on that subgraph; ``no fetch`` runs it on
    the batch's own features and no edges (exact only for an MLP).
    """
    model = cache_normalisation(trainable_copy(model), cached=False).eval()  # timed on subgraphs too
    nodes = torch.randperm(graph.y.shape[0], generator=torch.Generator().manual_seed(seed))[:batch]
    no_edges = torch.empty(2, 0, dtype=torch.long)
    features = graph.x.to_sparse_coo() if graph.x.layout == torch.sparse_csr else graph.x

    def rows(index: Tensor) -> Tensor:
        """Feature rows ``index`` in the graph's own layout (CSR stays sparse: fetching does not densify)."""
        if features.layout == torch.sparse_coo:
            return features.index_select(0, index).to_sparse_csr()
        return features[index]

    def fetched() -> None:
        subset, edge_index, _, _ = k_hop_subgraph(nodes, hops, graph.edge_index, relabel_nodes=True,
                                                  num_nodes=graph.y.shape[0])
        model(rows(subset), edge_index)

    with torch.no_grad(), csr_beta_warning_silenced():
        return {
            "full graph": latency_ms(lambda: model(graph.x, graph.adj_t)),
            "batch, fetch": latency_ms(fetched, repeats=5),
            "batch, no fetch": latency_ms(lambda: model(rows(nodes), no_edges)),
        }
