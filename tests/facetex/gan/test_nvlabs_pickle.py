"""NVlabs StyleGAN3 pickles: rebuilt without NVlabs' code, equal outputs, clear errors.

The test writes stand-in ``torch_utils``/``dnnlib``/``training`` packages whose persistent classes
reduce exactly as NVlabs' ``persistence.persistent_class`` does, pickles a tiny generator through
them in the official snapshot layout, then removes those packages before loading.
"""
from __future__ import annotations

import importlib
import pickle
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from facetex.gan.nvlabs_pickle import (
    NVlabsPickleError,
    load_nvlabs_pickle,
    read_nvlabs_pickle,
)
from facetex.gan.stylegan3 import Generator, stylegan3_config

PERSISTENCE_SRC = '''
import inspect
import sys

def _reconstruct_persistent_obj(meta):
    raise RuntimeError("NVlabs' reconstruct (which executes module_src) must never run in these tests")

def persistent_class(orig_class):
    module_src = inspect.getsource(sys.modules[orig_class.__module__])

    class Decorator(orig_class):
        _orig_module_src = module_src
        _orig_class_name = orig_class.__name__

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            meta = dict(type="class", version=6, module_src=self._orig_module_src,
                        class_name=self._orig_class_name, state=fields[2])
            fields[0], fields[1], fields[2] = _reconstruct_persistent_obj, (meta,), None
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    return Decorator
'''
EASYDICT_SRC = '''
class EasyDict(dict):
    def __getattr__(self, name):
        return self[name]
'''


def module_file(class_names: list[str]) -> str:
    classes = "\n".join(f"@persistence.persistent_class\nclass {name}(torch.nn.Module):\n    pass\n"
                        for name in class_names)
    return f"import torch\nfrom torch_utils import persistence\n\n{classes}"


FAKE_PACKAGES = {
    "torch_utils/__init__.py": "",
    "torch_utils/persistence.py": PERSISTENCE_SRC,
    "dnnlib/__init__.py": "from .util import EasyDict\n",
    "dnnlib/util.py": EASYDICT_SRC,
    "training/__init__.py": "",
    "training/networks_stylegan3.py": module_file(["Generator", "MappingNetwork", "FullyConnectedLayer",
                                                   "SynthesisNetwork", "SynthesisInput", "SynthesisLayer"]),
    "training/networks_stylegan2.py": module_file(["Generator", "SynthesisNetwork", "SynthesisBlock",
                                                   "Discriminator", "DiscriminatorBlock"]),
    "training/augment.py": module_file(["AugmentPipe"]),
}

TINY_KWARGS = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=16, img_channels=3, num_layers=4,
                   **{**stylegan3_config("r"), "channel_base": 128, "channel_max": 64})


def as_nvlabs(module: nn.Module, classes: ModuleType, init_kwargs: dict | None = None) -> nn.Module:
    """The same module tree as instances of the fake NVlabs classes (parameters, buffers, None buffers,
    numpy sizes and gains)."""
    twin = getattr(classes, type(module).__name__)()
    for name, parameter in module._parameters.items():
        twin.register_parameter(name, parameter)
    for name, buffer in module._buffers.items():
        twin.register_buffer(name, buffer)
    for name, child in module._modules.items():
        twin.add_module(name, as_nvlabs(child, classes))
    for name, value in vars(module).items():  # plain attributes, as numpy values like NVlabs keeps them
        if name.startswith("_") or name == "training" or not isinstance(value, (int, float, tuple, list)):
            continue
        if name.endswith("size"):
            value = np.broadcast_to(np.asarray(value), [2])
        elif isinstance(value, float):
            value = np.float64(value)
        setattr(twin, name, value)
    twin._init_args = ()
    twin._init_kwargs = init_kwargs or {}
    return twin


@contextmanager
def nvlabs_code(tmp_path: Path) -> Iterator[dict[str, ModuleType]]:
    """Import the fake NVlabs packages for pickling; on exit they are gone from the path and sys.modules."""
    root = tmp_path / "nvlabs_code"
    for relative, source in FAKE_PACKAGES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(textwrap.dedent(source))
    names = ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util", "training",
             "training.networks_stylegan3", "training.networks_stylegan2", "training.augment"]
    sys.path.insert(0, str(root))
    try:
        yield {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(root))
        for name in names:
            sys.modules.pop(name, None)


def write_snapshot(path: Path, modules: dict[str, ModuleType], generator: Generator, **replace) -> None:
    """Pickle an NVlabs training snapshot: G, D, G_ema, augment_pipe, training_set_kwargs."""
    easydict = modules["dnnlib"].EasyDict
    sg3, sg2 = modules["training.networks_stylegan3"], modules["training.networks_stylegan2"]
    kwargs = easydict({key: value for key, value in TINY_KWARGS.items() if key != "mapping_kwargs"},
                      mapping_kwargs=easydict(num_layers=2), magnitude_ema_beta=0.5 ** (32 / 20000))
    discriminator = sg2.Discriminator()
    discriminator.add_module("b16", sg2.DiscriminatorBlock())
    discriminator.b16.register_parameter("weight", nn.Parameter(torch.randn(4, 3, 1, 1)))
    augment = modules["training.augment"].AugmentPipe()
    augment.register_buffer("p", torch.tensor(0.2))
    snapshot = {"G": as_nvlabs(tiny_generator(seed=5), sg3, kwargs), "D": discriminator,
                "G_ema": as_nvlabs(generator, sg3, kwargs), "augment_pipe": augment,
                "training_set_kwargs": easydict(path="ffhq.zip", resolution=16, use_labels=False)}
    snapshot.update(replace)
    with path.open("wb") as handle:
        pickle.dump(snapshot, handle)


def tiny_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    generator = Generator(**TINY_KWARGS)
    with torch.no_grad():  # non-default buffers so that copying them is checked
        generator.mapping.w_avg.normal_()
        for name in generator.synthesis.layer_names:
            getattr(generator.synthesis, name).magnitude_ema.fill_(0.5 + torch.rand(()).item())
    return generator.eval()


@pytest.fixture()
def snapshot(tmp_path: Path) -> tuple[Path, Generator]:
    original = tiny_generator(seed=0)
    path = tmp_path / "stylegan3-r-tiny.pkl"
    with nvlabs_code(tmp_path) as modules:
        write_snapshot(path, modules, original)
    return path, original


def test_loader_rebuilds_the_generator_without_nvlabs_code(snapshot: tuple[Path, Generator]) -> None:
    path, original = snapshot
    assert "training" not in sys.modules and "torch_utils.persistence" not in sys.modules
    loaded = load_nvlabs_pickle(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.synthesis.layer_names == original.synthesis.layer_names
    reference = original.state_dict()
    assert all(torch.equal(tensor, reference[name]) for name, tensor in loaded.state_dict().items())
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(z, truncation_psi=0.7), original(z, truncation_psi=0.7))
    assert not any(name.startswith("_imported_module_") for name in sys.modules)  # module_src never ran


def test_loader_reads_the_other_networks_and_keys(snapshot: tuple[Path, Generator]) -> None:
    path, original = snapshot
    data = read_nvlabs_pickle(path)
    assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    assert data["training_set_kwargs"]["resolution"] == 16
    assert data["D"].class_name == "Discriminator" and "b16" in data["D"].children()
    training_g = load_nvlabs_pickle(path, key="G")
    assert not torch.equal(training_g.mapping.fc0.weight, original.mapping.fc0.weight)  # G, not G_ema


def test_missing_key_names_the_keys_found(snapshot: tuple[Path, Generator]) -> None:
    path, _ = snapshot
    with pytest.raises(NVlabsPickleError, match=r"no 'G_avg' entry .*'G_ema'"):
        load_nvlabs_pickle(path, key="G_avg")


def test_truncated_or_foreign_files_raise_one_clear_error(snapshot: tuple[Path, Generator], tmp_path: Path) -> None:
    path, _ = snapshot
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(NVlabsPickleError, match="truncated"):
        load_nvlabs_pickle(truncated)
    text = tmp_path / "notes.pkl"
    text.write_text("not a pickle at all")
    with pytest.raises(NVlabsPickleError, match="not a complete NVlabs StyleGAN pickle"):
        load_nvlabs_pickle(text)
    with pytest.raises(FileNotFoundError, match="no StyleGAN pickle"):
        load_nvlabs_pickle(tmp_path / "absent.pkl")


def test_unknown_globals_are_refused_not_called(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({"G_ema": print}))  # any callable outside the allow-list
    with pytest.raises(NVlabsPickleError, match="builtins.print"):
        load_nvlabs_pickle(hostile)


def test_stylegan2_pickles_are_refused_with_the_way_forward(tmp_path: Path) -> None:
    path = tmp_path / "stylegan2.pkl"
    with nvlabs_code(tmp_path) as modules:
        sg2 = modules["training.networks_stylegan2"]
        generator = sg2.Generator()
        generator.add_module("synthesis", sg2.SynthesisNetwork())
        generator.synthesis.add_module("b4", sg2.SynthesisBlock())
        generator._init_args, generator._init_kwargs = (), {"z_dim": 512}
        path.write_bytes(pickle.dumps({"G_ema": generator}))
    with pytest.raises(NVlabsPickleError, match="StyleGAN2.*rosinality"):
        load_nvlabs_pickle(path)


def test_a_state_that_does_not_fit_its_config_is_reported(tmp_path: Path) -> None:
    original = tiny_generator(seed=0)
    path, unknown = tmp_path / "mismatch.pkl", tmp_path / "unknown_kwarg.pkl"
    with nvlabs_code(tmp_path) as modules:
        sg3 = modules["training.networks_stylegan3"]
        kwargs = {**TINY_KWARGS, "z_dim": 8}  # the pickled fc0 weight is (16, 16), this config wants (16, 8)
        path.write_bytes(pickle.dumps({"G_ema": as_nvlabs(original, sg3, kwargs)}))
        unknown.write_bytes(pickle.dumps({"G_ema": as_nvlabs(original, sg3, {**TINY_KWARGS, "sr_antialias": True})}))
    with pytest.raises(NVlabsPickleError, match=r"unexpected shapes.*mapping\.fc0\.weight"):
        load_nvlabs_pickle(path)
    with pytest.raises(NVlabsPickleError, match="sr_antialias"):
        load_nvlabs_pickle(unknown)


def test_numpy_1_names_of_the_official_pickles_resolve(tmp_path: Path) -> None:
    """Pickles written under numpy 1.x (all official ones) name ``numpy.core.multiarray``."""
    sizes = np.broadcast_to(np.asarray(36), [2])
    data = pickle.dumps({"in_size": sizes, "rate": np.float64(16.0)}, protocol=3)  # text GLOBAL opcodes
    legacy = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert legacy != data
    path = tmp_path / "legacy.pkl"
    path.write_bytes(legacy)
    loaded = read_nvlabs_pickle(path)
    assert np.array_equal(loaded["in_size"], [36, 36]) and loaded["rate"] == 16.0
