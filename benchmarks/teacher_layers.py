"""How alike a trained teacher's layers are (what ABKD's attention can choose from), from its run folder.

    python -m benchmarks.teacher_layers outputs/abkd_deep_gcn/teachers/Cora outputs/abkd_deep_gcn/teachers/CiteSeer

Each argument is a ``main.py fit`` run folder (a sweep cell): its ``run.yaml`` names the data, its newest
``checkpoints/version_<N>/best.ckpt`` is the teacher. The teacher runs once on the whole graph in eval mode; the
table gives its test accuracy and :func:`graphkd.layer_similarity.layer_similarity` of its hidden layers.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser

from cli.checkpoint_policy import resolve_checkpoint
from foundation.errors import InputError
from graphkd.layer_similarity import layer_similarity
from lightning_modules.distillation import read_classifier


def similarity_row(run: Path) -> str:
    """One Markdown row: the run's teacher, its test accuracy and its layers' similarities."""
    config_file = run / "run.yaml"
    if not config_file.is_file():
        raise InputError(f"{run} holds no run.yaml: give a run folder of a fit (e.g. a sweep cell)")
    parser = ArgumentParser()  # the data section as main.py builds it (nested dataclasses and all)
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    data = {"data": yaml.safe_load(config_file.read_text())["data"]}
    datamodule = parser.instantiate_classes(parser.parse_object(data)).data
    classifier, hparams = read_classifier(resolve_checkpoint("run folder", str(run / "checkpoints")))
    view = classifier.view(datamodule.graph)
    with torch.no_grad():
        output = view.run(classifier.model.eval())
    test = view.split_rows("test")
    accuracy = float((output.logits[test].argmax(-1) == view.labels[test]).float().mean())
    s = layer_similarity(output.hidden)
    return (f"| {run} | {hparams['arch']} {hparams['num_layers']} x {hparams['hidden_channels']} | {100 * accuracy:.2f} "
            f"| {s['pooled_cos_min']:.4f} | {s['node_cos_first_last']:.3f} / {s['node_cos_middle_last']:.3f} "
            f"| {s['cka_first_last']:.3f} / {s['cka_middle_last']:.3f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of teacher fits")
    args = parser.parse_args(argv)
    print("| teacher run | model | test | smallest pooled cosine | per-node cosine, first / middle vs last "
          "| linear CKA, first / middle vs last |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for run in args.runs:
        try:
            print(similarity_row(run))
        except InputError as error:
            parser.error(str(error))


if __name__ == "__main__":
    main()
