"""NVlabs StyleGAN3 pickles: rebuilt without NVlabs' code, equal outputs, clear errors.

The test writes stand-in ``torch_utils``/``dnnlib``/``training`` packages whose persistent classes
reduce exactly as NVlabs' ``persistence.persistent_class`` does, pickles a tiny generator through
them in the official snapshot layout, then removes those packages before loading.
"""
from __future__ import annotations

import importlib
import math
import pickle
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facetex.gan import stylegan2
from facetex.gan.convert_stylegan2 import (
    StyleGAN2ConversionError,
    generator_kwargs_from_nvlabs,
    nvlabs_to_rosinality,
)
from facetex.gan.nvlabs_pickle import (
    NVlabsPickleError,
    load_nvlabs_pickle,
    load_nvlabs_pickle_with_w_avg,
    read_nvlabs_pickle,
)
from facetex.gan.ops import upfirdn2d
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
    "training/networks_stylegan2.py": module_file(["Generator", "MappingNetwork", "FullyConnectedLayer",
                                                   "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer",
                                                   "ToRGBLayer", "Discriminator", "DiscriminatorBlock"]),
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


def write_snapshot(path: Path, modules: dict[str, ModuleType], generator: Generator, protocol: int = 4,
                   edit_g_ema: Callable[[nn.Module], None] | None = None, **replace) -> None:
    """Pickle an NVlabs training snapshot: G, D, G_ema, augment_pipe, training_set_kwargs (with ``protocol``;
    ``edit_g_ema`` changes the pickled G_ema before it is written)."""
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
    if edit_g_ema is not None:
        edit_g_ema(snapshot["G_ema"])
    with path.open("wb") as handle:
        pickle.dump(snapshot, handle, protocol=protocol)


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


def test_unknown_synthesis_networks_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "unknown.pkl"
    with nvlabs_code(tmp_path) as modules:
        sg2 = modules["training.networks_stylegan2"]
        generator = sg2.Generator()
        generator.add_module("synthesis", sg2.SynthesisNetwork())
        generator.synthesis.add_module("layer0", sg2.SynthesisLayer())
        generator._init_args, generator._init_kwargs = (), {"z_dim": 512}
        path.write_bytes(pickle.dumps({"G_ema": generator}))
    with pytest.raises(NVlabsPickleError, match="neither StyleGAN2 blocks .* nor a StyleGAN3 SynthesisInput"):
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


def test_a_protocol_5_pickle_written_under_numpy_2_loads_as_legacy_py_loads_it(tmp_path: Path) -> None:
    """Python 3.8+ pickles with protocol 5 on request (3.14 by default); numpy then writes every contiguous array as
    ``numpy._core.numeric._frombuffer`` over an in-band buffer, e.g. a ``SynthesisInput`` built with ``size=[w, h]``
    (NVlabs' ``np.broadcast_to(np.asarray(size), [2])`` of a list is such an array). NVlabs' ``legacy.py`` reads it
    with the plain ``pickle.Unpickler``."""
    original, path = tiny_generator(seed=0), tmp_path / "protocol5.pkl"
    side = original.synthesis.input.size

    def size_as_width_height(g_ema: nn.Module) -> None:
        g_ema.synthesis.input.size = np.broadcast_to(np.asarray([side, side]), [2])
        assert g_ema.synthesis.input.size.flags.c_contiguous

    with nvlabs_code(tmp_path) as modules:
        write_snapshot(path, modules, original, protocol=5, edit_g_ema=size_as_width_height)
    assert b"numpy._core.numeric" in path.read_bytes() and b"_frombuffer" in path.read_bytes()
    loaded = load_nvlabs_pickle(path)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(z, truncation_psi=0.7), original(z, truncation_psi=0.7))
    assert np.array_equal(read_nvlabs_pickle(path)["G_ema"].children()["synthesis"].children()["input"]
                          .state["size"], [side, side])


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


# ---------------------------------------------------------------------------------------------------
# StyleGAN2 (stylegan2-ada-pytorch / stylegan3 networks_stylegan2): an NVlabs-layout tensor dict, a
# forward written from NVlabs' maths, and the same tensors pickled as NVlabs persistent modules.

SG2_RESOLUTIONS = (4, 8, 16)
SG2_W_DIM = 16
SG2_MAPPING_LAYERS = 2
SG2_MAPPING_LR = 0.01
SG2_CONV_CLAMP = 256.0
SG2_FILTER_TAPS = (1.0, 3.0, 3.0, 1.0)
SG2_SYNTHESIS_KWARGS = {"channel_base": 128, "channel_max": 16, "num_fp16_res": 4, "conv_clamp": 256,
                        "fused_modconv_default": "inference_only"}
SG2_TOP_KWARGS = {"z_dim": SG2_W_DIM, "c_dim": 0, "w_dim": SG2_W_DIM, "img_resolution": 16, "img_channels": 3}
SG2_BUFFERS = ("w_avg", "resample_filter", "noise_const")


def sg2_channels(res: int) -> int:
    """NVlabs' channels_dict: min(channel_base // res, channel_max)."""
    return min(SG2_SYNTHESIS_KWARGS["channel_base"] // res, SG2_SYNTHESIS_KWARGS["channel_max"])


def sg2_init_kwargs(easydict: type = dict, layout: str = "stylegan3", **synthesis_changes) -> dict:
    """Generator init kwargs as the stylegan3 repo (flat) or stylegan2-ada-pytorch (nested) pickles them."""
    mapping = easydict(num_layers=SG2_MAPPING_LAYERS, w_avg_beta=0.995)
    synthesis = easydict({**SG2_SYNTHESIS_KWARGS, **synthesis_changes})
    if layout == "ada":
        return easydict(SG2_TOP_KWARGS, mapping_kwargs=mapping, synthesis_kwargs=synthesis)
    return easydict(SG2_TOP_KWARGS, mapping_kwargs=mapping, **synthesis)


def nvlabs_filter() -> Tensor:
    """NVlabs' setup_filter([1, 3, 3, 1]): outer product normalised to sum 1, (4, 4)."""
    taps = torch.tensor(SG2_FILTER_TAPS)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum()


def nvlabs_stylegan2_state(seed: int) -> dict[str, Tensor]:
    """A random NVlabs StyleGAN2 state dict, non-zero biases, noise strengths and w_avg included."""
    rng = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0, shift: float = 0.0) -> Tensor:
        return torch.randn(shape, generator=rng) * scale + shift

    state = {}
    for i in range(SG2_MAPPING_LAYERS):
        state[f"mapping.fc{i}.weight"] = randn(SG2_W_DIM, SG2_W_DIM, scale=1 / SG2_MAPPING_LR)
        state[f"mapping.fc{i}.bias"] = randn(SG2_W_DIM, scale=10.0)
    state["mapping.w_avg"] = randn(SG2_W_DIM)
    for res in SG2_RESOLUTIONS:
        block, channels = f"synthesis.b{res}", sg2_channels(res)
        state[f"{block}.resample_filter"] = nvlabs_filter()
        if res == 4:
            state[f"{block}.const"] = randn(channels, 4, 4)
        convs = {"conv1": channels} if res == 4 else {"conv0": sg2_channels(res // 2), "conv1": channels}
        for conv, in_channels in convs.items():
            state[f"{block}.{conv}.weight"] = randn(channels, in_channels, 3, 3)
            state[f"{block}.{conv}.affine.weight"] = randn(in_channels, SG2_W_DIM)
            state[f"{block}.{conv}.affine.bias"] = randn(in_channels, scale=0.1, shift=1.0)
            state[f"{block}.{conv}.bias"] = randn(channels, scale=0.1)
            state[f"{block}.{conv}.noise_strength"] = randn(scale=0.5)
            state[f"{block}.{conv}.noise_const"] = randn(res, res)
            state[f"{block}.{conv}.resample_filter"] = nvlabs_filter()
        state[f"{block}.torgb.weight"] = randn(3, channels, 1, 1)
        state[f"{block}.torgb.affine.weight"] = randn(channels, SG2_W_DIM)
        state[f"{block}.torgb.affine.bias"] = randn(channels, scale=0.1, shift=1.0)
        state[f"{block}.torgb.bias"] = randn(3, scale=0.1)
    return state


def nvlabs_fc(state: dict[str, Tensor], name: str, x: Tensor, lr_multiplier: float = 1.0,
              lrelu: bool = False) -> Tensor:
    """FullyConnectedLayer: weight gain lr / sqrt(in), bias gain lr, optional lrelu with gain sqrt(2)."""
    weight = state[f"{name}.weight"]
    x = x @ (weight * (lr_multiplier / math.sqrt(weight.shape[1]))).T + state[f"{name}.bias"] * lr_multiplier
    return F.leaky_relu(x, 0.2) * math.sqrt(2) if lrelu else x


def nvlabs_mapping(state: dict[str, Tensor], z: Tensor) -> Tensor:
    """normalize_2nd_moment then the fc layers: z (B, D) -> w (B, D)."""
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for i in range(SG2_MAPPING_LAYERS):
        x = nvlabs_fc(state, f"mapping.fc{i}", x, SG2_MAPPING_LR, lrelu=True)
    return x


def nvlabs_modulated_conv(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool, up: int,
                          resample_filter: Tensor | None) -> Tensor:
    """NVlabs' fused modulated_conv2d; up=2 follows conv2d_resample(padding=1, flip_weight=False)."""
    batch, in_channels = x.shape[:2]
    out_channels, _, kh, kw = weight.shape
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4)) + 1e-8).rsqrt()[:, :, None, None, None]
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    if up == 1:
        out = F.conv2d(x, w.reshape(batch * out_channels, in_channels, kh, kw), padding=kw // 2, groups=batch)
        return out.reshape(batch, out_channels, *out.shape[2:])
    filter_size, padding = resample_filter.shape[-1], kw // 2
    pad0 = padding + (filter_size + up - 1) // 2 - (kw - 1)
    pad1 = padding + (filter_size - up) // 2 - (kw - up)
    transposed = w.transpose(1, 2).reshape(batch * in_channels, out_channels, kh, kw)  # not flipped
    out = F.conv_transpose2d(x, transposed, stride=up, groups=batch)
    out = upfirdn2d(out, resample_filter * up**2, pad=(pad0, pad1, pad0, pad1))
    return out.reshape(batch, out_channels, *out.shape[2:])


def nvlabs_synthesis_layer(state: dict[str, Tensor], name: str, x: Tensor, w: Tensor, up: int,
                           clamp: float = SG2_CONV_CLAMP) -> Tensor:
    """SynthesisLayer with noise_mode='const': modconv, + noise_const * strength, bias, lrelu, clamp."""
    styles = nvlabs_fc(state, f"{name}.affine", w)
    x = nvlabs_modulated_conv(x, state[f"{name}.weight"], styles, True, up, state[f"{name}.resample_filter"])
    x = x + state[f"{name}.noise_const"] * state[f"{name}.noise_strength"]
    x = F.leaky_relu(x + state[f"{name}.bias"][None, :, None, None], 0.2) * math.sqrt(2)
    return x.clamp(-clamp, clamp)


def nvlabs_torgb(state: dict[str, Tensor], name: str, x: Tensor, w: Tensor, clamp: float = SG2_CONV_CLAMP) -> Tensor:
    """ToRGBLayer: styles * 1/sqrt(in), modconv without demodulation, bias, clamp."""
    weight = state[f"{name}.weight"]
    styles = nvlabs_fc(state, f"{name}.affine", w) / math.sqrt(weight.shape[1])
    x = nvlabs_modulated_conv(x, weight, styles, False, 1, None) + state[f"{name}.bias"][None, :, None, None]
    return x.clamp(-clamp, clamp)


def nvlabs_synthesis(state: dict[str, Tensor], ws: Tensor, clamp: float = SG2_CONV_CLAMP) -> Tensor:
    """SynthesisNetwork, skip architecture: ws (B, num_ws, D) -> img (B, 3, 16, 16)."""
    x = img = None
    w_idx = 0
    for res in SG2_RESOLUTIONS:
        block = f"synthesis.b{res}"
        if res == 4:
            x = state[f"{block}.const"][None].repeat(ws.shape[0], 1, 1, 1)
            x = nvlabs_synthesis_layer(state, f"{block}.conv1", x, ws[:, w_idx], up=1, clamp=clamp)
            num_conv = 1
        else:
            x = nvlabs_synthesis_layer(state, f"{block}.conv0", x, ws[:, w_idx], up=2, clamp=clamp)
            x = nvlabs_synthesis_layer(state, f"{block}.conv1", x, ws[:, w_idx + 1], up=1, clamp=clamp)
            num_conv = 2
        if img is not None:  # upfirdn2d.upsample2d: pads (f + up - 1) // 2 and (f - up) // 2, gain up^2
            img = upfirdn2d(img, state[f"{block}.resample_filter"] * 4, up=2, pad=(2, 1, 2, 1))
        rgb = nvlabs_torgb(state, f"{block}.torgb", x, ws[:, w_idx + num_conv], clamp)
        img = rgb if img is None else img + rgb
        w_idx += num_conv
    return img


def sg2_class_name(path: str) -> str:
    """NVlabs class of the sub-module at a dotted path of the StyleGAN2 generator."""
    last = path.rsplit(".", 1)[-1]
    named = {"": "Generator", "mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "affine":
             "FullyConnectedLayer", "conv0": "SynthesisLayer", "conv1": "SynthesisLayer", "torgb": "ToRGBLayer"}
    if last in named:
        return named[last]
    return "FullyConnectedLayer" if last.startswith("fc") else "SynthesisBlock"


def as_nvlabs_stylegan2(state: dict[str, Tensor], classes: ModuleType, init_kwargs: dict) -> nn.Module:
    """The state as a tree of fake NVlabs persistent modules (buffers and parameters as NVlabs keeps them)."""
    root = classes.Generator()
    for name, tensor in state.items():
        *parents, leaf = name.split(".")
        module = root
        for depth, part in enumerate(parents):
            if part not in module._modules:
                module.add_module(part, getattr(classes, sg2_class_name(".".join(parents[: depth + 1])))())
            module = module._modules[part]
        if leaf in SG2_BUFFERS:
            module.register_buffer(leaf, tensor.clone())
        else:
            module.register_parameter(leaf, nn.Parameter(tensor.clone()))
    root._init_args, root._init_kwargs = (), init_kwargs
    return root


def write_stylegan2_pickle(tmp_path: Path, state: dict[str, Tensor], layout: str = "stylegan3",
                           **synthesis_changes) -> Path:
    path = tmp_path / f"stylegan2-{layout}.pkl"
    with nvlabs_code(tmp_path) as modules:
        sg2 = modules["training.networks_stylegan2"]
        kwargs = sg2_init_kwargs(modules["dnnlib"].EasyDict, layout, **synthesis_changes)
        snapshot = {"G": as_nvlabs_stylegan2(nvlabs_stylegan2_state(seed=9), sg2, kwargs),
                    "G_ema": as_nvlabs_stylegan2(state, sg2, kwargs), "augment_pipe": None}
        path.write_bytes(pickle.dumps(snapshot))
    return path


@pytest.mark.parametrize("layout", ["stylegan3", "ada"])
def test_stylegan2_pickle_reproduces_the_nvlabs_forward(tmp_path: Path, layout: str) -> None:
    state = nvlabs_stylegan2_state(seed=1)
    loaded, w_avg = load_nvlabs_pickle_with_w_avg(write_stylegan2_pickle(tmp_path, state, layout))
    assert isinstance(loaded, stylegan2.Generator) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.n_latent == 6 and loaded.channels == {4: 16, 8: 16, 16: 8}
    assert torch.equal(w_avg, state["mapping.w_avg"][None])
    rng = torch.Generator().manual_seed(4)
    z = torch.randn(3, SG2_W_DIM, generator=rng)
    ws = torch.randn(3, 6, SG2_W_DIM, generator=rng)  # a different w per layer checks the w routing
    with torch.no_grad():
        torch.testing.assert_close(loaded.mapping(z), nvlabs_mapping(state, z), atol=1e-5, rtol=1e-5)
        expected = nvlabs_synthesis(state, ws)
        assert expected.std() > 0.5  # a non-trivial image, so the comparison below can fail
        torch.testing.assert_close(loaded.synthesis(ws, noise_mode="const"), expected, atol=1e-4, rtol=1e-4)
        truncated = w_avg + 0.7 * (nvlabs_mapping(state, z) - w_avg)
        torch.testing.assert_close(
            loaded(z, truncation=0.7, truncation_latent=w_avg, noise_mode="const"),
            nvlabs_synthesis(state, truncated[:, None].expand(-1, 6, -1)), atol=1e-4, rtol=1e-4)
    assert not torch.equal(load_nvlabs_pickle(tmp_path / f"stylegan2-{layout}.pkl", key="G").input.input,
                           loaded.input.input)  # key="G" is the other network


@pytest.mark.parametrize("layout", ["stylegan3", "ada"])
def test_conv_clamp_of_the_pickle_is_applied_where_activations_reach_it(tmp_path: Path, layout: str) -> None:
    state = nvlabs_stylegan2_state(seed=5)
    clamp = 0.4  # well inside the activations' range, so most layers clip
    loaded = load_nvlabs_pickle(write_stylegan2_pickle(tmp_path, state, layout, conv_clamp=clamp))
    ws = torch.randn(2, 6, SG2_W_DIM, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        image = loaded.synthesis(ws, noise_mode="const")
        unclamped = nvlabs_synthesis(state, ws, clamp=math.inf)
    assert (image - unclamped).abs().max() > 0.5  # the clamp changes the image ...
    torch.testing.assert_close(image, nvlabs_synthesis(state, ws, clamp=clamp), atol=1e-5, rtol=1e-5)  # ... as NVlabs
    assert image.abs().max() <= 3 * clamp + 1e-6  # a sum of 3 clamped RGB outputs (upsampled by a positive filter)


def test_conversion_maps_every_nvlabs_tensor_onto_the_rosinality_layout() -> None:
    state = nvlabs_stylegan2_state(seed=2)
    converted, kwargs = nvlabs_to_rosinality(state, sg2_init_kwargs())
    assert kwargs == {"size": 16, "style_dim": 16, "n_mlp": 2, "channel_multiplier": 1,
                      "blur_kernel": SG2_FILTER_TAPS, "lr_mlp": 0.01, "channel_max": 16, "channel_base": 128,
                      "conv_clamp": SG2_CONV_CLAMP}
    assert set(converted) == set(stylegan2.Generator(**kwargs).state_dict())
    assert torch.equal(converted["style.2.weight"], state["mapping.fc1.weight"])
    assert torch.equal(converted["convs.2.conv.weight"][0], state["synthesis.b16.conv0.weight"])
    assert torch.equal(converted["convs.3.noise.weight"], state["synthesis.b16.conv1.noise_strength"][None])
    assert torch.equal(converted["noises.noise_4"][0, 0], state["synthesis.b16.conv1.noise_const"])
    assert torch.equal(converted["to_rgbs.0.conv.modulation.bias"], state["synthesis.b8.torgb.affine.bias"])
    assert torch.equal(converted["to_rgb1.bias"].flatten(), state["synthesis.b4.torgb.bias"])


def test_config_f_channels_become_rosinality_multiplier_2() -> None:
    config_f = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024, "img_channels": 3,
                "mapping_kwargs": {"num_layers": 8}, "channel_base": 32768, "channel_max": 512,
                "num_fp16_res": 4, "conv_clamp": 256}  # the stylegan3 repo's --cfg=stylegan2 FFHQ-1024 kwargs
    kwargs = generator_kwargs_from_nvlabs(config_f)
    assert kwargs["channel_multiplier"] == 2 and kwargs["channel_base"] == 16384 and kwargs["n_mlp"] == 8
    resolutions = [2**i for i in range(2, 11)]
    nvlabs = [min(32768 // res, 512) for res in resolutions]
    assert [stylegan2.stylegan2_channels(res, 2, 512, 16384) for res in resolutions] == nvlabs
    assert nvlabs == [512, 512, 512, 512, 512, 256, 128, 64, 32]  # rosinality's config-f table


@pytest.mark.parametrize(("change", "message"), [
    ({"architecture": "resnet"}, "architecture='resnet' is not supported"),
    ({"use_noise": False}, "use_noise=False"),
    ({"sr_antialias": True}, r"options \['sr_antialias'\]"),
])
def test_unsupported_stylegan2_variants_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    state = nvlabs_stylegan2_state(seed=3)
    with pytest.raises(StyleGAN2ConversionError, match=message):
        nvlabs_to_rosinality(state, sg2_init_kwargs(**change))
    with pytest.raises(NVlabsPickleError, match="StyleGAN2 that cannot be rebuilt"):
        load_nvlabs_pickle(write_stylegan2_pickle(tmp_path, state, **change))


def test_conditional_and_inconsistent_stylegan2_states_are_refused() -> None:
    state = nvlabs_stylegan2_state(seed=3)
    with pytest.raises(StyleGAN2ConversionError, match="c_dim=10"):
        nvlabs_to_rosinality(state, {**sg2_init_kwargs(), "c_dim": 10})
    extra = {**state, "synthesis.b8.skip.weight": torch.zeros(16, 16, 1, 1)}  # a resnet block's tensor
    with pytest.raises(StyleGAN2ConversionError, match=r"no rosinality counterpart: \['synthesis.b8.skip.weight'\]"):
        nvlabs_to_rosinality(extra, sg2_init_kwargs())
    missing = {name: tensor for name, tensor in state.items() if name != "synthesis.b16.conv1.noise_const"}
    with pytest.raises(StyleGAN2ConversionError, match="no 'synthesis.b16.conv1.noise_const'"):
        nvlabs_to_rosinality(missing, sg2_init_kwargs())
    with pytest.raises(StyleGAN2ConversionError, match=r"synthesis.b8.resample_filter is not the filter"):
        nvlabs_to_rosinality({**state, "synthesis.b8.resample_filter": torch.ones(4, 4) / 16}, sg2_init_kwargs())
