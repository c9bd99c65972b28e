"""ABKD compression report from one command: teacher/student runs over methods, sizes and seeds, then tables and plots.

    python -m benchmarks.abkd_report --config configs/report_cora.yaml
    python -m benchmarks.abkd_report --config configs/report_cora.yaml --collect-only

Every run is a real ``main.py fit`` of the framework followed by ``main.py test`` of
its best-validation checkpoint, in ``<output_dir>/runs/<method>-h<hidden>-s<seed>/``.
When a run ends, ``result.json`` is written (atomically) with what the report needs,
read back from the run's own outputs: the test metric from the test call's
TensorBoard events, the parameter counts and compression ratio the fit logged, the
dataset and the teacher checkpoint (path and SHA-256) stored in the student's
checkpoint, and the student/teacher inference latency measured on the two
checkpoints in one process. A run with a ``result.json`` is never recomputed; a run
folder without one (an interrupted run) is cleared and redone. The teacher is
trained once (``<output_dir>/teacher/``) unless the spec names an existing
checkpoint. The report itself (``benchmarks/report_output.py``) refuses runs that
disagree on dataset or teacher.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from filelock import FileLock
from tqdm import tqdm

import main as framework
from benchmarks.report_output import ReportError, write_report
from foundation.files import atomic_paths
from graphkd.models import count_parameters
from graphkd.node_batch import NodeBatch
from lightning_modules.distillation import read_classifier

RESULT_FILE = "result.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.]+$")
__all__ = ["ReportError", "ReportSpec", "Sweep", "main"]


@dataclass
class ReportSpec:
    """What to run and where (one YAML file; relative paths are relative to the working directory).

    Args:
        output_dir: folder receiving ``teacher/``, ``runs/``, the report files and ``tensorboard/``.
        teacher_config: ``main.py`` config of the teacher (a ``NodeClassifier``); trained once unless
            ``teacher_checkpoint`` is set.
        student_config: ``main.py`` config of a ``DistillationModule`` student, used as the template of every run.
        methods: method name -> distiller ``{class_path, init_args}``; the name becomes part of the run folder.
        hidden_sizes: student hidden widths (at least three, for a compression curve).
        seeds: seeds of every (method, size).
        epochs: ``trainer.max_epochs`` of every student run (the teacher keeps its config's).
        teacher_checkpoint: an existing teacher ``.ckpt`` to reuse instead of training one.
        teacher_seed: seed of the teacher run.
        data_args: merged into ``data.init_args`` of both configs (e.g. ``{name: CiteSeer, root: data/planetoid}``),
            so one pair of configs serves several datasets.
        metric: the evaluator's metric name as logged (``acc``, ``rocauc``); selection on ``val/<metric>``.
        latency_repeats: timed full-graph forward passes per model for the latency ratio.
    """

    output_dir: str
    teacher_config: str
    student_config: str
    methods: dict[str, dict[str, Any]]
    hidden_sizes: list[int]
    seeds: list[int]
    epochs: int = 200
    teacher_checkpoint: str | None = None
    teacher_seed: int = 0
    data_args: dict[str, Any] = field(default_factory=dict)
    metric: str = "acc"
    latency_repeats: int = 30

    @classmethod
    def from_yaml(cls, path: Path, output_dir: str | None = None, data_root: str | None = None,
                  seeds: list[int] | None = None, methods: list[str] | None = None) -> "ReportSpec":
        """Read and check a spec; ``output_dir``, ``data_root`` (``data_args.root``) and ``seeds`` replace the spec's
        when given, and ``methods`` keeps only those of its methods, in that order."""
        if not path.is_file():
            raise ReportError(f"report spec {path} does not exist; pass --config with a YAML such as configs/report_cora.yaml")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ReportError(f"{path} must be a YAML mapping of spec keys (output_dir, teacher_config, ...)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ReportError(f"{path}: unknown keys {unknown}; allowed keys are {sorted(known)}")
        if output_dir is not None:
            raw["output_dir"] = output_dir
        if seeds is not None:
            raw["seeds"] = seeds
        if methods is not None:
            unknown = sorted(set(methods) - set(raw.get("methods") or {}))
            if unknown:
                raise ReportError(f"--methods {unknown} are not in {path}; choose from {sorted(raw.get('methods') or {})}")
            raw["methods"] = {name: raw["methods"][name] for name in methods}
        if data_root is not None:
            raw["data_args"] = {**(raw.get("data_args") or {}), "root": data_root}
        missing = [name for name in ("output_dir", "teacher_config", "student_config", "methods", "hidden_sizes", "seeds")
                   if name not in raw]
        if missing:
            raise ReportError(f"{path}: missing keys {missing}")
        spec = cls(**raw)
        spec.check()
        return spec

    def check(self) -> None:
        """Refuse a spec that cannot give a compression curve or names files that do not exist."""
        for name in ("teacher_config", "student_config"):
            if not Path(getattr(self, name)).is_file():
                raise ReportError(f"{name} {getattr(self, name)} does not exist; fix the path in the report spec")
        if self.teacher_checkpoint and not Path(self.teacher_checkpoint).is_file():
            raise ReportError(f"teacher_checkpoint {self.teacher_checkpoint} does not exist; fix it or remove the key to train one")
        if len(set(self.hidden_sizes)) < 3 or any(int(h) < 1 for h in self.hidden_sizes):
            raise ReportError(f"hidden_sizes must hold at least three distinct positive widths, got {self.hidden_sizes}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ReportError(f"seeds must be a non-empty list without repeats, got {self.seeds}")
        if not self.methods:
            raise ReportError("methods is empty; name at least one distiller, e.g. NoKD: {class_path: graphkd.distill.NoKD}")
        for name, distiller in self.methods.items():
            if not NAME_PATTERN.match(str(name)) or not isinstance(distiller, dict) or "class_path" not in distiller:
                raise ReportError(f"method {name!r}: names use letters, digits, '_' or '.', and each maps to "
                                  f"{{class_path: ..., init_args: {{...}}}}; got {distiller!r}")
        if self.epochs < 1 or self.latency_repeats < 1:
            raise ReportError(f"epochs and latency_repeats must be positive, got {self.epochs} and {self.latency_repeats}")


@dataclass(frozen=True)
class RunKey:
    """One student run of the sweep."""

    method: str
    hidden: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-h{self.hidden}-s{self.seed}"


def write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it, so a reader never sees half a file."""
    with atomic_paths(path) as (temporary,):
        temporary.write_text(json.dumps(content, indent=2, sort_keys=True))


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (identifies the teacher a run was distilled from)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_scalars(event_dir: Path) -> dict[str, list[float]]:
    """Every scalar series in a TensorBoard event folder, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(event_dir.glob("events.out.tfevents.*")):
        raise ReportError(f"no TensorBoard event file in {event_dir}; the run did not log (is the logger disabled in the config?)")
    accumulator = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [event.value for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def run_config(template: dict[str, Any], run_dir: Path, seed: int, spec: ReportSpec, model_args: dict[str, Any],
               epochs: int | None) -> Path:
    """Write ``run_dir/run.yaml``: ``template`` with this run's seed, logger, checkpoint and model arguments.

    ``epochs`` replaces ``trainer.max_epochs`` unless None.
    """
    config = copy.deepcopy(template)
    config["seed_everything"] = seed
    trainer = config.setdefault("trainer", {})
    trainer.update({"enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(run_dir)})
    if epochs is not None:
        trainer["max_epochs"] = epochs
    trainer["logger"] = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                         "init_args": {"save_dir": str(run_dir), "name": "logs", "version": "fit"}}
    others = [c for c in trainer.get("callbacks") or [] if not str(c.get("class_path", "")).endswith("ModelCheckpoint")]
    trainer["callbacks"] = [*others, {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(run_dir / "checkpoints"), "filename": "best", "monitor": f"val/{spec.metric}",
                      "mode": "max", "enable_version_counter": False}}]
    config.setdefault("model", {}).setdefault("init_args", {}).update(model_args)
    config.setdefault("data", {}).setdefault("init_args", {}).update(spec.data_args)
    path = run_dir / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_test(config: Path, checkpoint: Path) -> Any:
    """``main.py test`` of ``checkpoint``, logged to ``<run>/logs/test``; returns the CLI (its datamodule is set up)."""
    return framework.main(["test", "--config", str(config), "--ckpt_path", str(checkpoint),
                           "--trainer.logger.init_args.version", "test"])


def fit_and_test(config: Path, run_dir: Path) -> Any:
    """``main.py fit`` then ``main.py test`` of the best-validation checkpoint; returns the test CLI."""
    framework.main(["fit", "--config", str(config)])
    best = run_dir / "checkpoints" / "best.ckpt"
    if not best.is_file():
        raise ReportError(f"the fit in {run_dir} wrote no best.ckpt; does the model log the monitored val metric?")
    return run_test(config, best)


def load_classifier(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The GNN inside a NodeClassifier or DistillationModule checkpoint, and that checkpoint's hyper-parameters."""
    classifier, hparams = read_classifier(path, ReportError)
    return classifier.model.eval(), hparams


def latency_ms(student: torch.nn.Module, teacher: torch.nn.Module, datamodule: Any, repeats: int) -> tuple[float, float]:
    """Median full-graph inference time (ms) of both models, timed alternately after warm-up so load drifts cancel."""
    view = NodeBatch.of(datamodule.graph, datamodule.graph_info)
    times: dict[str, list[float]] = {"student": [], "teacher": []}
    with torch.no_grad():
        for i in range(repeats + 3):
            for name, model in (("student", student), ("teacher", teacher)):
                start = time.perf_counter()
                view.run(model)
                if i >= 3:
                    times[name].append((time.perf_counter() - start) * 1e3)
    return statistics.median(times["student"]), statistics.median(times["teacher"])


def summarise_run(key: RunKey, run_dir: Path, datamodule: Any, spec: ReportSpec) -> dict[str, Any]:
    """What the report needs from one finished run, read from its event files and checkpoints."""
    fit, test = read_scalars(run_dir / "logs" / "fit"), read_scalars(run_dir / "logs" / "test")
    metric = spec.metric
    if f"test/{metric}" not in test or "params/compression_ratio" not in fit:
        raise ReportError(f"{run_dir}: the logs lack test/{metric} or params/* (found {sorted(test)} and {sorted(fit)}); "
                          "the student config must use lightning_modules.distillation.DistillationModule")
    student, hparams = load_classifier(run_dir / "checkpoints" / "best.ckpt")
    teacher_path = Path(hparams["teacher_checkpoint"])
    teacher, _ = load_classifier(teacher_path)
    student_ms, teacher_ms = latency_ms(student, teacher, datamodule, spec.latency_repeats)
    return {
        "run": key.name, "method": key.method, "hidden": key.hidden, "seed": key.seed, "metric": metric,
        "test_metric": test[f"test/{metric}"][-1], "best_val_metric": max(fit[f"val/{metric}"]),
        "student_params": int(fit["params/student"][-1]), "teacher_params": int(fit["params/teacher"][-1]),
        "compression": fit["params/compression_ratio"][-1], "dataset": hparams["graph_info"]["dataset"],
        "teacher_checkpoint": str(teacher_path.resolve()), "teacher_sha256": sha256(teacher_path),
        "student_ms": student_ms, "teacher_ms": teacher_ms, "latency_ratio": student_ms / teacher_ms,
        "epochs": spec.epochs,
    }


class Sweep:
    """The teacher and the (method, size, seed) student runs of one spec, resumable."""

    def __init__(self, spec: ReportSpec) -> None:
        self.spec = spec
        self.root = Path(spec.output_dir)
        self.student_template = yaml.safe_load(Path(spec.student_config).read_text())

    @property
    def keys(self) -> list[RunKey]:
        """Seed-major order, so a sweep stopped early still has every (method, size) with fewer seeds."""
        return [RunKey(m, int(h), int(s)) for s in self.spec.seeds for m in self.spec.methods for h in self.spec.hidden_sizes]

    def teacher(self) -> dict[str, Any]:
        """The teacher's ``result.json`` (test metric, params, dataset, hash); trains or tests the teacher if needed.

        Under a lock: shards started together (``--seeds``/``--methods``) train it once and the others wait.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / ".teacher.lock"):
            return self._teacher()

    def _teacher(self) -> dict[str, Any]:
        folder = self.root / "teacher"
        result_file = folder / RESULT_FILE
        given = Path(self.spec.teacher_checkpoint).resolve() if self.spec.teacher_checkpoint else None
        if result_file.is_file():
            result = json.loads(result_file.read_text())
            if given is not None and str(given) != result["checkpoint"]:
                raise ReportError(f"{self.root} was made with teacher {result['checkpoint']}, but the spec names {given}; "
                                  "use another output_dir for another teacher")
            return result
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        template = yaml.safe_load(Path(self.spec.teacher_config).read_text())
        config = run_config(template, folder, self.spec.teacher_seed, self.spec, {}, epochs=None)
        if given is not None:
            load_classifier(given)  # a clear error before Lightning sees a wrong file
            run_test(config, given)
        else:
            fit_and_test(config, folder)
        checkpoint = given or (folder / "checkpoints" / "best.ckpt").resolve()
        test_metric = read_scalars(folder / "logs" / "test")[f"test/{self.spec.metric}"][-1]
        model, hparams = load_classifier(checkpoint)
        result = {"run": "teacher", "checkpoint": str(checkpoint), "teacher_sha256": sha256(checkpoint),
                  "dataset": hparams["graph_info"]["dataset"], "metric": self.spec.metric, "test_metric": test_metric,
                  "params": count_parameters(model), "arch": hparams["arch"], "hidden": hparams["hidden_channels"],
                  "num_layers": hparams["num_layers"]}
        write_json_atomic(result_file, result)
        return result

    def run(self, key: RunKey, teacher: dict[str, Any]) -> bool:
        """Fit, test and summarise one student unless its ``result.json`` exists; True when it ran."""
        run_dir = self.root / "runs" / key.name
        if (run_dir / RESULT_FILE).is_file():
            return False
        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run starts again from nothing
        run_dir.mkdir(parents=True)
        model_args = {"hidden_channels": key.hidden, "teacher_checkpoint": teacher["checkpoint"],
                      "distiller": self.spec.methods[key.method]}
        config = run_config(self.student_template, run_dir, key.seed, self.spec, model_args, self.spec.epochs)
        cli = fit_and_test(config, run_dir)
        write_json_atomic(run_dir / RESULT_FILE, summarise_run(key, run_dir, cli.datamodule, self.spec))
        return True

    def run_all(self) -> int:
        """Run everything not yet finished (tqdm over runs); returns how many runs were computed."""
        teacher = self.teacher()
        computed = 0
        for key in (bar := tqdm(self.keys, desc="ABKD report runs", unit="run")):
            bar.set_postfix_str(key.name)
            computed += self.run(key, teacher)
        return computed

    def results(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The teacher's and every finished student run's ``result.json`` (also runs not in the spec)."""
        teacher_file = self.root / "teacher" / RESULT_FILE
        if not teacher_file.is_file():
            raise ReportError(f"{teacher_file} does not exist: run the sweep first (without --collect-only)")
        runs = sorted((self.root / "runs").glob(f"*/{RESULT_FILE}"))
        if not runs:
            raise ReportError(f"no finished run in {self.root / 'runs'}: run the sweep first (without --collect-only)")
        return json.loads(teacher_file.read_text()), [json.loads(path.read_text()) for path in runs]


def main(args: list[str] | None = None) -> Path:
    """Run (or only collect) the sweep of ``--config`` and write the report; returns the report folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="report spec YAML (see configs/report_cora.yaml)")
    parser.add_argument("--output-dir", help="replaces the spec's output_dir")
    parser.add_argument("--data-root", help="replaces the spec's data_args.root (the datamodule's root folder)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="run only these seeds (shards: processes with disjoint --seeds or --methods may share one output dir)")
    parser.add_argument("--methods", nargs="+", help="run only these methods of the spec (shards, like --seeds)")
    parser.add_argument("--collect-only", action="store_true", help="only read finished runs and write the report")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps latency ratios stable on a shared machine)")
    options = parser.parse_args(args)
    spec = ReportSpec.from_yaml(options.config, output_dir=options.output_dir, data_root=options.data_root,
                                seeds=options.seeds, methods=options.methods)
    torch.set_num_threads(options.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    sweep = Sweep(spec)
    if not options.collect_only:
        sweep.run_all()
    teacher, runs = sweep.results()
    with FileLock(sweep.root / ".report.lock"):  # shards finishing together write the report one at a time
        write_report(teacher, runs, sweep.root)
    return sweep.root


if __name__ == "__main__":
    main()
