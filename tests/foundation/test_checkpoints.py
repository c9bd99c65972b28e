"""The one checkpoint reader: what it admits, what it refuses and how it says so."""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pytest
import torch

from foundation.checkpoints import OPTION_CLASSES, CheckpointError, MissingFileError, load_checkpoint


def saved(tmp_path: Path, name: str, value: object) -> Path:
    path = tmp_path / name
    torch.save(value, path)
    return path


def test_tensors_and_plain_containers_round_trip(tmp_path: Path) -> None:
    value = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"epoch": 3, "names": ["a", "b"]}}
    loaded = load_checkpoint(saved(tmp_path, "plain.pt", value))
    assert torch.equal(loaded["w"], value["w"]) and loaded["meta"] == value["meta"]


def test_allowed_classes_are_admitted_for_that_read_only(tmp_path: Path) -> None:
    path = saved(tmp_path, "opts.pt", {"opts": argparse.Namespace(lr=0.1, out=Path("runs"))})
    with pytest.raises(CheckpointError, match="pickles a argparse.Namespace object"):
        load_checkpoint(path)
    assert load_checkpoint(path, allow=OPTION_CLASSES)["opts"].lr == 0.1
    with pytest.raises(CheckpointError):  # the allow-list did not outlive its read
        load_checkpoint(path)


def test_the_torch_2_4_fallback_admits_and_restores_the_process_allow_list(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.4 has no scoped ``safe_globals``: the reader adds the classes and puts the old list back."""
    monkeypatch.delattr(torch.serialization, "safe_globals")
    before = set(torch.serialization.get_safe_globals())
    path = saved(tmp_path, "opts.pt", {"opts": argparse.Namespace(lr=0.1)})
    assert load_checkpoint(path, allow=OPTION_CLASSES)["opts"].lr == 0.1
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize(("content", "kind"), [
    (b"", "an empty file"),
    (b"model: gcn\nlayers: 2\n", "a text file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "a binary file of another format"),
])
def test_foreign_files_are_named_for_what_they_are(tmp_path: Path, content: bytes, kind: str) -> None:
    path = tmp_path / "run.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"as a teacher checkpoint: it is {kind}"):
        load_checkpoint(path, what="teacher checkpoint")


def test_truncated_and_code_carrying_files_are_refused_without_unsafe_advice(tmp_path: Path) -> None:
    good = saved(tmp_path, "good.pt", {"w": torch.zeros(1000)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    objects = saved(tmp_path, "objects.pt", {"when": datetime.date(2020, 1, 1)})
    for path, reason in ((truncated, "truncated"), (objects, "pickles a datetime.date object")):
        with pytest.raises(CheckpointError, match=reason) as refused:
            load_checkpoint(path)
        assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)


def test_a_missing_file_or_a_folder_is_a_missing_file_error(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(MissingFileError, match="is a folder"):
        load_checkpoint(tmp_path)
