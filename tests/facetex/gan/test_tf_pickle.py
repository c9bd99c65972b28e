"""TensorFlow-era StyleGAN2 pickles (``stylegan2-ffhq-config-f.pkl`` layout): a tuple (G, D, Gs) of
``dnnlib.tflib.network.Network`` objects whose state holds numpy variables, read without TensorFlow.

TensorFlow is not installed; the pickles here are made by a stand-in ``Network`` class of the same module path
whose ``__getstate__`` returns the state NVlabs/stylegan2's ``Network.__getstate__`` writes (version 4, name,
static_kwargs, components, build_module_src, build_func_name, variables)."""
from __future__ import annotations

import math
import pickle
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from facetex.gan.generator_file import load_generator
from facetex.gan.nvlabs_pickle import NVlabsPickleError, load_nvlabs_pickle
from tests.facetex.gan.test_nvlabs_pickle import (
    SG2_RESOLUTIONS,
    SG2_W_DIM,
    nvlabs_mapping,
    nvlabs_stylegan2_state,
    nvlabs_synthesis,
)

TF_KWARGS = {"num_channels": 3, "resolution": 16, "label_size": 0, "latent_size": SG2_W_DIM,
             "dlatent_size": SG2_W_DIM, "mapping_layers": 2, "fmap_base": 64, "fmap_max": 16,
             "truncation_psi": 0.5}  # fmap_base 64: NVlabs channel_base 128, the PyTorch test generator's


class Network:
    """Pickles as NVlabs/stylegan2's dnnlib.tflib.network.Network does (its __getstate__ dict)."""

    def __init__(self, name: str, variables: dict[str, np.ndarray], components: dict | None = None,
                 static_kwargs: dict | None = None, version: int = 4) -> None:
        self.state = {"version": version, "name": name, "static_kwargs": static_kwargs or {},
                      "components": components or {}, "build_module_src": "raise SystemExit('never run')",
                      "build_func_name": "G_main", "variables": list(variables.items())}

    def __getstate__(self) -> dict:
        return self.state


@contextmanager
def tflib_module() -> Iterator[None]:
    """``dnnlib.tflib.network.Network`` importable while pickling, gone afterwards."""
    names = ["dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"]
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["dnnlib.tflib.network"].Network = Network
    Network.__module__ = "dnnlib.tflib.network"
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def as_tf_generator(state: dict[str, Tensor], **kwargs) -> Network:
    """NVlabs' PyTorch StyleGAN2 tensors under TF's names and layouts (the inverse of legacy.py's table)."""
    def np_(t: Tensor) -> np.ndarray:
        return t.numpy().astype(np.float32)

    def conv(t: Tensor, flip: bool = False) -> np.ndarray:  # (out, in, k, k) -> (k, k, in, out)
        weight = np_(t).transpose(2, 3, 1, 0)
        return weight[::-1, ::-1].copy() if flip else weight

    mapping = {}
    for i in range(2):
        mapping[f"Dense{i}/weight"] = np_(state[f"mapping.fc{i}.weight"]).T.copy()
        mapping[f"Dense{i}/bias"] = np_(state[f"mapping.fc{i}.bias"])
    synthesis = {"lod": np.float32(0), "4x4/Const/const": np_(state["synthesis.b4.const"])[None]}
    noise = 0
    for res in SG2_RESOLUTIONS:
        layers = {"Conv": "conv1"} if res == 4 else {"Conv0_up": "conv0", "Conv1": "conv1"}
        for theirs, ours in {**layers, "ToRGB": "torgb"}.items():
            p, q = f"synthesis.b{res}.{ours}", f"{res}x{res}/{theirs}"
            synthesis[f"{q}/weight"] = conv(state[f"{p}.weight"], flip=theirs == "Conv0_up")
            synthesis[f"{q}/bias"] = np_(state[f"{p}.bias"])
            synthesis[f"{q}/mod_weight"] = np_(state[f"{p}.affine.weight"]).T.copy()
            synthesis[f"{q}/mod_bias"] = np_(state[f"{p}.affine.bias"]) - 1
            if theirs != "ToRGB":
                synthesis[f"{q}/noise_strength"] = np_(state[f"{p}.noise_strength"])
                synthesis[f"noise{noise}"] = np_(state[f"{p}.noise_const"])[None, None]
                noise += 1
    components = {"mapping": Network("G_mapping", mapping), "synthesis": Network("G_synthesis", synthesis)}
    return Network("G", {"dlatent_avg": np_(state["mapping.w_avg"])}, components, {**TF_KWARGS, **kwargs})


def write_tf_pickle(path: Path, gs_state: dict[str, Tensor], **kwargs) -> Path:
    with tflib_module():
        networks = (as_tf_generator(nvlabs_stylegan2_state(seed=8), **kwargs),
                    Network("D", {"4x4/Conv/weight": np.ones((3, 3, 4, 4), np.float32)}),
                    as_tf_generator(gs_state, **kwargs))
        path.write_bytes(pickle.dumps(networks, protocol=3))
    return path


def test_tf_pickle_reproduces_the_generator_without_tensorflow(tmp_path: Path) -> None:
    state = nvlabs_stylegan2_state(seed=1)
    path = write_tf_pickle(tmp_path / "stylegan2-ffhq-config-f.pkl", state)
    assert "dnnlib.tflib.network" not in sys.modules
    G, w_avg = load_generator(path)
    assert torch.equal(w_avg, state["mapping.w_avg"][None]) and G.conv_clamp is None  # TF had no clamp
    z = torch.randn(3, SG2_W_DIM, generator=torch.Generator().manual_seed(4))
    ws = torch.randn(3, 6, SG2_W_DIM, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(z), nvlabs_mapping(state, z), atol=1e-5, rtol=1e-5)
        expected = nvlabs_synthesis(state, ws, clamp=math.inf)
        assert expected.std() > 0.5
        torch.testing.assert_close(G.synthesis(ws, noise_mode="const"), expected, atol=1e-4, rtol=1e-4)
    other = load_nvlabs_pickle(path, key="G")  # G, not Gs
    assert not torch.equal(other.input.input, G.input.input)


def test_unconvertible_tf_generators_say_what_they_are(tmp_path: Path) -> None:
    state = nvlabs_stylegan2_state(seed=1)
    with pytest.raises(NVlabsPickleError, match=r"TensorFlow StyleGAN2 generator .* build options \['fmap_decay'\]"):
        load_nvlabs_pickle(write_tf_pickle(tmp_path / "decay.pkl", state, fmap_decay=0.5))
    with pytest.raises(NVlabsPickleError, match="architecture='resnet'"):
        load_nvlabs_pickle(write_tf_pickle(tmp_path / "resnet.pkl", state, architecture="resnet"))
    (tmp_path / "tuple.pkl").write_bytes(pickle.dumps((1, 2)))
    with pytest.raises(NVlabsPickleError, match=r"holds a tuple, .* TensorFlow StyleGAN2 tuple \(G, D, Gs\)"):
        load_nvlabs_pickle(tmp_path / "tuple.pkl")
