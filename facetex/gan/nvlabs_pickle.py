"""Read NVlabs StyleGAN2 and StyleGAN3 network pickles without NVlabs' code.

An official pickle is a dict ``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', ...}``
whose networks are ``torch_utils.persistence`` objects: each one reduces to
``_reconstruct_persistent_obj(meta)`` with ``meta = {type: 'class', version, module_src, class_name,
state}``, where ``state`` is the module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``,
``_init_kwargs``, ...). Unpickling normally *executes* ``module_src``; this loader never does. Its
``Unpickler`` admits only the globals a network pickle needs (tensor/numpy rebuilders, ``OrderedDict``,
``EasyDict``) and turns every persistent object into a ``PersistentRecord`` holding its class name and
state. The generator is then rebuilt by architecture:

* StyleGAN3 (``synthesis.input`` is a ``SynthesisInput``): our ``facetex.gan.stylegan3.Generator`` from
  the record's init kwargs, parameters and buffers loaded strictly under their own names;
* StyleGAN2 (``synthesis.b4``, stylegan2-ada-pytorch or the stylegan3 repo's ``networks_stylegan2``):
  our rosinality-layout ``facetex.gan.stylegan2.Generator``, through
  :func:`facetex.gan.convert_stylegan2.nvlabs_to_rosinality`.

A TensorFlow-era pickle (NVlabs/stylegan2's tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network``) is read
by the same unpickler, each ``Network`` kept as a ``facetex.gan.tf_pickle.TFNetwork``; it is offered as
``{'G', 'D', 'G_ema'}`` (``Gs`` is the averaged generator) and its generators are converted by
:func:`facetex.gan.tf_pickle.tf_generator_state` into the PyTorch StyleGAN2 layout first.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from facetex.gan import stylegan2, stylegan3
from facetex.gan.convert_stylegan2 import nvlabs_to_rosinality
from facetex.gan.nvlabs_api import NVlabsStyleGAN2
from facetex.gan.tf_pickle import TFNetwork, TFPickleError, tf_generator_state
from foundation.errors import InputError

NVlabsGenerator = stylegan3.Generator | stylegan2.Generator


class NVlabsPickleError(InputError, ValueError):
    """The file is not a readable NVlabs StyleGAN2/StyleGAN3 network pickle."""


@dataclass
class PersistentRecord:
    """A pickled NVlabs persistent object kept as data: class name, module source (for inspection,
    never executed) and ``__dict__``."""

    class_name: str
    module_src: str
    state: dict[str, Any]

    def children(self) -> dict[str, PersistentRecord]:
        """Sub-modules by attribute name (``None`` entries dropped)."""
        return {name: child for name, child in (self.state.get("_modules") or {}).items() if child is not None}


class _EasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict`` (a dict with attribute access; only the dict part matters here)."""


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> PersistentRecord:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: record, never execute."""
    if (not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str)
            or not isinstance(meta.get("state"), dict)):
        raise NVlabsPickleError("a persistent object in the pickle has an unexpected layout "
                                "(expected meta with type='class', a class_name and a state dict)")
    return PersistentRecord(meta["class_name"], str(meta.get("module_src", "")), dict(meta["state"]))


class _OpaqueObject:
    """Stand-in for any other ``torch_utils``/``training``/``dnnlib`` class (e.g. inside ``augment_pipe``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _load_storage_from_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes`` that reads the storage with ``weights_only``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_TORCH_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}
# numpy's array and scalar rebuilders under numpy 1 (``numpy.core``) and 2 (``numpy._core``) names; ``_frombuffer`` is
# how protocol 5 stores a contiguous array (an in-band buffer, never an object array), as any pickler writes it
# when asked for protocol 5 (Python 3.14's default).
_NUMPY_GLOBALS = {(f"numpy.{core}.{module}", name) for core in ("core", "_core")
                  for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                                       ("numeric", "_frombuffer"))} | {("numpy", "ndarray"), ("numpy", "dtype")}
_NVLABS_PACKAGES = ("torch_utils", "training", "dnnlib", "metrics")


class _NVlabsUnpickler(pickle.Unpickler):
    """Maps NVlabs globals to stand-ins and refuses everything outside a small allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
            return _reconstruct_persistent_obj
        if name == "EasyDict" and module in ("dnnlib", "dnnlib.util"):
            return _EasyDict
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_storage_from_bytes
        if (module, name) == ("dnnlib.tflib.network", "Network"):
            return TFNetwork
        if module.split(".")[0] in _NVLABS_PACKAGES:
            return _OpaqueObject
        if (module, name) in _TORCH_GLOBALS:
            return super().find_class(module, name)
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module.replace("numpy.core.", "numpy._core."), name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise NVlabsPickleError(f"the pickle refers to {module}.{name}, which an NVlabs StyleGAN network "
                                "pickle does not contain; refusing to load it (only official NVlabs "
                                "stylegan2-ada-pytorch / stylegan3 .pkl files are supported)")


# Generator init kwargs that change speed or training only, never the inference result.
_TRAINING_ONLY_KWARGS = ("num_fp16_res", "magnitude_ema_beta")
_MAPPING_TRAINING_ONLY_KWARGS = ("w_avg_beta", "freeze_layers", "freeze_embed")


def read_nvlabs_pickle(path: str | Path) -> dict[str, Any]:
    """Unpickle an NVlabs network pickle into plain data (networks as ``PersistentRecord``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no StyleGAN pickle at {path}: download e.g. stylegan3-r-ffhq-1024x1024.pkl "
                                "or stylegan2-ffhq-1024x1024.pkl from NVIDIA NGC and pass its path")
    try:
        with path.open("rb") as handle:
            data = _NVlabsUnpickler(handle).load()
    except NVlabsPickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError) as error:
        raise NVlabsPickleError(f"{path} is not a complete NVlabs StyleGAN pickle (truncated or another "
                                f"format?): {type(error).__name__}: {error}") from error
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(net, TFNetwork) for net in data):
        return dict(zip(("G", "D", "G_ema"), data))  # a TensorFlow-era (G, D, Gs) pickle
    if not isinstance(data, dict):
        raise NVlabsPickleError(f"{path} holds a {type(data).__name__}, not the NVlabs dict with 'G_ema' (nor the "
                                "TensorFlow StyleGAN2 tuple (G, D, Gs)); convert it with NVlabs' legacy.py")
    return data


def flatten_state(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a pickled module tree: persistent parameters and buffers by dotted name."""
    state: dict[str, torch.Tensor] = {}
    non_persistent = set(record.state.get("_non_persistent_buffers_set") or ())
    for name, tensor in (record.state.get("_parameters") or {}).items():
        if tensor is not None:
            state[prefix + name] = tensor.detach()
    for name, tensor in (record.state.get("_buffers") or {}).items():
        if tensor is not None and name not in non_persistent:
            state[prefix + name] = tensor.detach()
    for name, child in record.children().items():
        if not isinstance(child, PersistentRecord):
            raise NVlabsPickleError(f"sub-module {prefix + name} is a {type(child).__name__}, not an NVlabs "
                                    "persistent module")
        state.update(flatten_state(child, prefix + name + "."))
    return state


def _init_kwargs(record: PersistentRecord) -> dict[str, Any]:
    """The pickled Generator's ``_init_kwargs`` (NVlabs' train.py builds it with keywords only)."""
    if record.state.get("_init_args"):
        raise NVlabsPickleError("the pickled Generator was built with positional arguments; expected the "
                                "keyword-only construction of NVlabs' train.py")
    kwargs = dict(record.state.get("_init_kwargs") or {})
    if not kwargs:
        raise NVlabsPickleError("the pickled Generator has no _init_kwargs; is this an NVlabs network pickle?")
    return kwargs


def _stylegan3_kwargs(record: PersistentRecord) -> dict[str, Any]:
    """Our StyleGAN3 ``Generator`` kwargs from the pickled NVlabs init kwargs (training-only ones dropped)."""
    kwargs = _init_kwargs(record)
    for key in _TRAINING_ONLY_KWARGS:
        kwargs.pop(key, None)
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    for key in _MAPPING_TRAINING_ONLY_KWARGS:
        mapping.pop(key, None)
    kwargs["mapping_kwargs"] = mapping
    return kwargs


def _architecture(record: PersistentRecord) -> str:
    """'stylegan2' (``synthesis.b4`` blocks) or 'stylegan3' (``synthesis.input``); anything else is refused."""
    synthesis = record.children().get("synthesis")
    if record.class_name != "Generator" or synthesis is None:
        raise NVlabsPickleError(f"the network is a {record.class_name!r} without a 'synthesis' sub-network, "
                                "not an NVlabs StyleGAN Generator")
    blocks = synthesis.children()
    if isinstance(blocks.get("b4"), PersistentRecord) and blocks["b4"].class_name == "SynthesisBlock":
        return "stylegan2"
    if isinstance(blocks.get("input"), PersistentRecord) and blocks["input"].class_name == "SynthesisInput":
        return "stylegan3"
    raise NVlabsPickleError("the Generator's synthesis network has neither StyleGAN2 blocks (b4...) nor a "
                            "StyleGAN3 SynthesisInput: unknown architecture")


def _generator_record(path: str | Path, key: str) -> PersistentRecord | TFNetwork:
    """The pickled network stored under ``key``."""
    data = read_nvlabs_pickle(path)
    if key not in data:
        raise NVlabsPickleError(f"{path} has no {key!r} entry (found {sorted(map(str, data))}); "
                                "pass key='G' or key='G_ema'")
    record = data[key]
    if not isinstance(record, PersistentRecord | TFNetwork):
        raise NVlabsPickleError(f"{path}[{key!r}] is a {type(record).__name__}, not a pickled NVlabs network")
    return record


def _build_stylegan3(record: PersistentRecord, where: str) -> stylegan3.Generator:
    """Our StyleGAN3 with the pickled tensors loaded strictly under their own names."""
    kwargs = _stylegan3_kwargs(record)
    try:
        generator = stylegan3.Generator(**kwargs)
    except TypeError as error:
        raise NVlabsPickleError(f"the pickled Generator's init kwargs {sorted(kwargs)} do not fit "
                                f"facetex.gan.stylegan3.Generator: {error}") from error
    state = flatten_state(record)
    expected = generator.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise NVlabsPickleError(f"{where} does not match a StyleGAN3 of its own config: "
                                f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    wrong = [f"{name}: {tuple(state[name].shape)} vs {tuple(ref.shape)}"
             for name, ref in expected.items() if state[name].shape != ref.shape]
    if wrong:
        raise NVlabsPickleError(f"{where} has tensors of unexpected shapes: {wrong[:5]}")
    generator.load_state_dict(state, strict=True)
    return generator


def _nvlabs_stylegan2_state(record: PersistentRecord | TFNetwork, where: str) -> tuple[dict[str, Tensor], dict]:
    """The PyTorch NVlabs StyleGAN2 state dict and init kwargs of a pickled generator (TF ones converted)."""
    if isinstance(record, PersistentRecord):
        return flatten_state(record), _init_kwargs(record)
    try:
        return tf_generator_state(record)
    except TFPickleError as error:
        raise NVlabsPickleError(f"{where} is a TensorFlow StyleGAN2 generator that cannot be converted: {error}") from error


def _build_stylegan2(record: PersistentRecord | TFNetwork, where: str) -> NVlabsStyleGAN2:
    """Our rosinality-layout StyleGAN2 (answering NVlabs' calls, ``w_avg`` set) with the pickled tensors converted
    and loaded strictly."""
    nvlabs_state, init_kwargs = _nvlabs_stylegan2_state(record, where)
    try:
        state, kwargs = nvlabs_to_rosinality(nvlabs_state, init_kwargs)
        generator = NVlabsStyleGAN2(**kwargs)
    except ValueError as error:  # StyleGAN2ConversionError, or the Generator's own size check
        raise NVlabsPickleError(f"{where} is a StyleGAN2 that cannot be rebuilt: {error}") from error
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise NVlabsPickleError(f"{where} does not match a StyleGAN2 of its own config {kwargs}: {error}") from error
    return generator.set_w_avg(nvlabs_state["mapping.w_avg"])


def _w_avg(record: PersistentRecord | TFNetwork, where: str) -> Tensor:
    """The mapping network's tracked average w, (1, w_dim)."""
    if isinstance(record, TFNetwork):
        return _nvlabs_stylegan2_state(record, where)[0]["mapping.w_avg"].reshape(1, -1).clone()
    mapping = record.children().get("mapping")
    w_avg = (mapping.state.get("_buffers") or {}).get("w_avg") if mapping is not None else None
    if not isinstance(w_avg, Tensor) or w_avg.ndim != 1:
        raise NVlabsPickleError(f"{where} has no mapping.w_avg buffer of shape (w_dim,); was it trained with "
                                "w_avg_beta=None?")
    return w_avg.detach().reshape(1, -1).float().clone()


def _build_generator(record: PersistentRecord | TFNetwork, where: str) -> NVlabsGenerator:
    """Our generator of the record's architecture, in eval mode with gradients off."""
    if isinstance(record, TFNetwork) or _architecture(record) == "stylegan2":
        generator: NVlabsGenerator = _build_stylegan2(record, where)
    else:
        generator = _build_stylegan3(record, where)
    return generator.eval().requires_grad_(False)


def load_nvlabs_pickle(path: str | Path, key: str = "G_ema") -> NVlabsGenerator:
    """Our StyleGAN3 or (rosinality-layout) StyleGAN2 ``Generator`` from an NVlabs pickle, in eval mode."""
    return _build_generator(_generator_record(path, key), f"{path}[{key!r}]")


def load_nvlabs_pickle_with_w_avg(path: str | Path, key: str = "G_ema") -> tuple[NVlabsGenerator, Tensor]:
    """:func:`load_nvlabs_pickle` plus the mapping network's tracked ``w_avg`` (1, w_dim).

    The StyleGAN3 generator also keeps it as ``mapping.w_avg``; the rosinality-layout StyleGAN2 keeps it as
    ``w_avg`` (not in its state dict) for NVlabs-style truncation, and takes it as ``truncation_latent``.
    """
    record, where = _generator_record(path, key), f"{path}[{key!r}]"
    return _build_generator(record, where), _w_avg(record, where)
