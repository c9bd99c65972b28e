"""TensorFlow-era StyleGAN2 pickles (NVlabs/stylegan2, e.g. ``stylegan2-ffhq-config-f.pkl``) without TensorFlow.

Such a file pickles the tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` objects. Each one's state is
plain data: ``version``, ``name``, ``static_kwargs`` (the build options), ``components`` (sub-networks:
``mapping``, ``synthesis``) and ``variables``, a list of ``(name, numpy array)``. Our unpickler
(``facetex.gan.nvlabs_pickle``) turns each ``Network`` into a :class:`TFNetwork` holding that state, never
importing or running the pickled build code. :func:`tf_generator_state` then renames and reshapes the
variables into the PyTorch NVlabs StyleGAN2 layout (stylegan2-ada-pytorch ``legacy.py`` defines that
correspondence), which ``facetex.gan.convert_stylegan2`` maps onto our generator:

    mapping/Dense{i}/{weight (in, out), bias}        -> mapping.fc{i}.{weight (out, in), bias}
    dlatent_avg                                      -> mapping.w_avg
    synthesis/4x4/Const/const (1, C, 4, 4)           -> synthesis.b4.const (C, 4, 4)
    synthesis/{r}x{r}/{Conv | Conv0_up | Conv1 | ToRGB}/...  -> synthesis.b{r}.{conv1 | conv0 | conv1 | torgb}.*
        weight (k, k, in, out) -> (out, in, k, k), Conv0_up's flipped in both spatial axes
        mod_weight (w_dim, in) -> affine.weight (in, w_dim);  mod_bias + 1 -> affine.bias
        bias, noise_strength unchanged
    synthesis/noise{j} (1, 1, r, r)                  -> the j-th conv layer's noise_const (r, r)

TF's ``fmap_base`` is half of NVlabs' ``channel_base`` (TF halves it per resolution from 4x4 up).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facetex.gan.ops import setup_filter
from foundation.errors import InputError

TF_DEFAULT_FILTER = (1, 3, 3, 1)
TF_IGNORED_KWARGS = {"truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure"}  # run-time options
TF_CONVERTED_KWARGS = {"latent_size", "label_size", "dlatent_size", "resolution", "num_channels", "mapping_layers",
                       "label_fmaps", "mapping_fmaps", "mapping_nonlinearity", "mapping_lrmul", "w_avg_beta",
                       "fmap_base", "fmap_max", "num_fp16_res", "conv_clamp", "architecture", "resample_kernel",
                       "use_noise", "nonlinearity"}


class TFPickleError(InputError, ValueError):
    """A TensorFlow StyleGAN2 pickle whose generator this project cannot convert."""


class TFNetwork:
    """Stand-in for ``dnnlib.tflib.network.Network``: its pickled state as data (nothing of TF is run)."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("variables"), list):
            raise TFPickleError("a pickled dnnlib.tflib Network has no list of variables; is the pickle complete?")
        self.version = int(state.get("version", 0))
        self.name = str(state.get("name", ""))
        self.static_kwargs = dict(state.get("static_kwargs") or {})
        self.components = dict(state.get("components") or {})
        self.variables = [(str(name), value) for name, value in state["variables"]]


def tf_variables(network: TFNetwork, prefix: str = "") -> dict[str, np.ndarray]:
    """Every variable of the network tree by its slash-joined name (``synthesis/4x4/Conv/weight``)."""
    found = {prefix + name: np.asarray(value) for name, value in network.variables}
    for name, component in network.components.items():
        if not isinstance(component, TFNetwork):
            raise TFPickleError(f"component {prefix + name!r} is a {type(component).__name__}, not a tflib Network")
        found.update(tf_variables(component, prefix + name + "/"))
    return found


def _nvlabs_init_kwargs(tf_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The PyTorch NVlabs ``Generator`` init kwargs equivalent to the TF generator's ``static_kwargs``."""
    unknown = sorted(set(tf_kwargs) - TF_CONVERTED_KWARGS - TF_IGNORED_KWARGS)
    if unknown:
        raise TFPickleError(f"the TF generator has build options {unknown} that NVlabs' conversion does not know; "
                            "convert it with stylegan2-ada-pytorch's legacy.py to see whether it is supported")

    def get(name: str, default: Any) -> Any:
        value = tf_kwargs.get(name)
        return default if value is None else value

    return {
        "z_dim": int(get("latent_size", 512)), "c_dim": int(get("label_size", 0)), "w_dim": int(get("dlatent_size", 512)),
        "img_resolution": int(get("resolution", 1024)), "img_channels": int(get("num_channels", 3)),
        "mapping_kwargs": {"num_layers": int(get("mapping_layers", 8)), "embed_features": tf_kwargs.get("label_fmaps"),
                           "layer_features": tf_kwargs.get("mapping_fmaps"),
                           "activation": get("mapping_nonlinearity", "lrelu"),
                           "lr_multiplier": float(get("mapping_lrmul", 0.01))},
        "synthesis_kwargs": {"channel_base": int(get("fmap_base", 16384)) * 2, "channel_max": int(get("fmap_max", 512)),
                             "conv_clamp": tf_kwargs.get("conv_clamp"), "architecture": get("architecture", "skip"),
                             "resample_filter": list(get("resample_kernel", TF_DEFAULT_FILTER)),
                             "use_noise": bool(get("use_noise", True)), "activation": get("nonlinearity", "lrelu")},
    }


def tf_generator_state(network: TFNetwork) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The NVlabs PyTorch StyleGAN2 state dict and init kwargs of a TF generator (``G`` or ``Gs``)."""
    if network.version < 4:
        raise TFPickleError(f"the TF network is pickle version {network.version}; only version 4 (NVlabs/stylegan2) "
                            "is supported: re-export it with NVlabs' stylegan2 code")
    kwargs = _nvlabs_init_kwargs(network.static_kwargs)
    variables = tf_variables(network)
    if any(name.startswith("ToRGB_lod") for name in variables):
        kwargs["synthesis_kwargs"]["architecture"] = "orig"  # StyleGAN1-style outputs, refused by the conversion

    def tf(name: str) -> np.ndarray:
        if name not in variables:
            raise TFPickleError(f"the TF generator has no variable {name!r} (found e.g. {sorted(variables)[:4]}); "
                                "only NVlabs/stylegan2 generators (G_main with G_mapping and G_synthesis) convert")
        return variables[name]

    def conv(name: str, flip: bool = False) -> Tensor:  # (k, k, in, out) -> (out, in, k, k)
        weight = tf(name)
        return _tensor((weight[::-1, ::-1] if flip else weight).transpose(3, 2, 0, 1))

    state: dict[str, Tensor] = {"mapping.w_avg": _tensor(tf("dlatent_avg"))}
    for i in range(kwargs["mapping_kwargs"]["num_layers"]):
        state[f"mapping.fc{i}.weight"] = _tensor(tf(f"mapping/Dense{i}/weight").T)
        state[f"mapping.fc{i}.bias"] = _tensor(tf(f"mapping/Dense{i}/bias"))
    state["synthesis.b4.const"] = _tensor(tf("synthesis/4x4/Const/const")[0])
    taps = kwargs["synthesis_kwargs"]["resample_filter"]
    noise = 0
    for log_res in range(2, int(math.log2(kwargs["img_resolution"])) + 1):
        res = 2**log_res
        layers = {"conv1": "Conv"} if res == 4 else {"conv0": "Conv0_up", "conv1": "Conv1"}
        for ours, theirs in layers.items():
            prefix, source = f"synthesis.b{res}.{ours}", f"synthesis/{res}x{res}/{theirs}"
            state[f"{prefix}.weight"] = conv(f"{source}/weight", flip=theirs == "Conv0_up")
            state[f"{prefix}.bias"] = _tensor(tf(f"{source}/bias"))
            state[f"{prefix}.noise_strength"] = _tensor(tf(f"{source}/noise_strength"))
            state[f"{prefix}.noise_const"] = _tensor(tf(f"synthesis/noise{noise}")[0, 0])
            state[f"{prefix}.affine.weight"] = _tensor(tf(f"{source}/mod_weight").T)
            state[f"{prefix}.affine.bias"] = _tensor(tf(f"{source}/mod_bias") + 1)
            state[f"{prefix}.resample_filter"] = setup_filter(taps)
            noise += 1
        torgb, source = f"synthesis.b{res}.torgb", f"synthesis/{res}x{res}/ToRGB"
        state[f"{torgb}.weight"] = conv(f"{source}/weight")
        state[f"{torgb}.bias"] = _tensor(tf(f"{source}/bias"))
        state[f"{torgb}.affine.weight"] = _tensor(tf(f"{source}/mod_weight").T)
        state[f"{torgb}.affine.bias"] = _tensor(tf(f"{source}/mod_bias") + 1)
        state[f"synthesis.b{res}.resample_filter"] = setup_filter(taps)
    return state, kwargs


def _tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
