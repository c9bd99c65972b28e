"""Convert an NVlabs StyleGAN2 generator state (stylegan2-ada-pytorch / stylegan3 ``networks_stylegan2``)
into :class:`facetex.gan.stylegan2.Generator`'s rosinality layout.

Both implementations store raw N(0, 1)-style weights and apply the equalised-lr gains at run time
with the same factors (mapping ``lr_multiplier / sqrt(in)`` and bias ``lr_multiplier``; affine
``1 / sqrt(w_dim)``; ToRGB ``1 / sqrt(in)``; the 3x3 conv gain cancels in demodulation), so tensors are
copied and only reshaped. NVlabs' up-convolution (``conv2d_resample`` with ``flip_weight=False``, a
transposed conv that does not flip) and rosinality's transposed conv + blur apply the same unflipped
kernel, so no weight is flipped either. Name map, with ``k = log2(res) - 3`` for ``res >= 8``::

    mapping.fc{i}.{weight, bias}                 -> style.{i+1}.{weight, bias}
    synthesis.b4.const (C, 4, 4)                 -> input.input (1, C, 4, 4)
    synthesis.b4.conv1 / torgb                   -> conv1 / to_rgb1
    synthesis.b{res}.conv0 / conv1 / torgb       -> convs.{2k} / convs.{2k+1} / to_rgbs.{k}
    <layer>.weight (O, I, k, k)                  -> <layer>.conv.weight (1, O, I, k, k)
    <layer>.affine.{weight, bias}                -> <layer>.conv.modulation.{weight, bias}
    <conv>.bias (C,), <conv>.noise_strength ()   -> <conv>.activate.bias, <conv>.noise.weight (1,)
    <conv>.noise_const (r, r), in layer order    -> noises.noise_{j} (1, 1, r, r)
    <torgb>.bias (3,)                            -> <torgb>.bias (1, 3, 1, 1)
    b{res}.conv0.resample_filter * 4             -> convs.{2k}.conv.blur.kernel
    b{res}.resample_filter * 4                   -> to_rgbs.{k}.upsample.kernel

(rosinality stores its 2x kernels with the up^2 gain that NVlabs applies at run time.) Every
``resample_filter`` buffer is checked against the taps of the init kwargs; ``mapping.w_avg`` has no
rosinality counterpart and is left to the caller.

NVlabs clamps every layer output (after bias, activation and gain; the ToRGB output after its bias) to
``±conv_clamp`` (256 in the official configs, a guard for fp16 training); the pickle's ``conv_clamp`` is
passed on to our ``Generator``, which clamps at the same points.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from facetex.gan.ops import setup_filter
from foundation.errors import InputError

ROSINALITY_CHANNEL_BASE = 16384  # rosinality channels(res) = min(channel_max, 16384 * channel_multiplier / res)


class StyleGAN2ConversionError(InputError, ValueError):
    """An NVlabs StyleGAN2 generator that the rosinality layout cannot represent, or a broken state."""


_GENERATOR_KWARGS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                     "synthesis_kwargs"}
# Ignored: options of speed, memory or training only.
_SYNTHESIS_IGNORED = {"num_fp16_res", "fp16_channels_last", "fused_modconv_default"}
_SYNTHESIS_KWARGS = {"conv_clamp", "channel_base", "channel_max", "architecture", "resample_filter", "kernel_size",
                     "use_noise", "activation"} | _SYNTHESIS_IGNORED
_MAPPING_KWARGS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier",
                   "w_avg_beta", "freeze_layers", "freeze_embed"}
DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)
UPSAMPLE_GAIN = 4.0  # 2x upsampling by zero insertion keeps the magnitude with a filter summing to 2^2


def _refuse_unknown(options: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise StyleGAN2ConversionError(f"{where} has options {unknown} that the rosinality StyleGAN2 layout does "
                                       "not know; only NVlabs stylegan2-ada-pytorch / stylegan3 "
                                       "networks_stylegan2 generators are supported")


def _require(value: Any, expected: Any, name: str, why: str) -> None:
    if value != expected:
        raise StyleGAN2ConversionError(f"{name}={value!r} is not supported (needs {expected!r}): {why}")


def generator_kwargs_from_nvlabs(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Kwargs of our rosinality-layout ``Generator`` from an NVlabs StyleGAN2 ``Generator``'s init kwargs.

    Accepts the stylegan3 repo's flat synthesis kwargs and stylegan2-ada-pytorch's nested
    ``synthesis_kwargs``. NVlabs' ``channel_base`` B gives ``min(B // res, channel_max)`` channels;
    rosinality's ``16384 * channel_multiplier // res`` is the same when B is a multiple of 16384
    (32768 = config-f, multiplier 2), otherwise multiplier 1 with ``channel_base = B``.
    """
    top = dict(init_kwargs)
    synthesis = dict(top.pop("synthesis_kwargs", None) or {})
    mapping = dict(top.pop("mapping_kwargs", None) or {})
    for key in set(top) - _GENERATOR_KWARGS:  # the stylegan3 repo passes synthesis kwargs flat
        synthesis[key] = top.pop(key)
    missing = sorted({"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"} - set(top))
    if missing:
        raise StyleGAN2ConversionError(f"the NVlabs Generator's init kwargs lack {missing}")
    _refuse_unknown(synthesis, _SYNTHESIS_KWARGS, "the NVlabs synthesis network")
    _refuse_unknown(mapping, _MAPPING_KWARGS, "the NVlabs mapping network")

    w_dim = int(top["w_dim"])
    _require(int(top["c_dim"]), 0, "c_dim", "conditional generators have a label embedding rosinality lacks")
    _require(int(top["z_dim"]), w_dim, "z_dim", "rosinality uses one style_dim for z and w")
    _require(int(top["img_channels"]), 3, "img_channels", "rosinality's ToRGB writes 3 channels")
    _require(synthesis.get("architecture", "skip"), "skip", "architecture",
             "only config-f's skip generator maps onto rosinality ('orig'/'resnet' have other layers)")
    _require(int(synthesis.get("kernel_size", 3)), 3, "kernel_size", "rosinality's synthesis convs are 3x3")
    _require(bool(synthesis.get("use_noise", True)), True, "use_noise", "rosinality always injects noise")
    _require(synthesis.get("activation", "lrelu"), "lrelu", "synthesis activation", "rosinality uses leaky ReLU")
    _require(mapping.get("activation", "lrelu"), "lrelu", "mapping activation", "rosinality uses leaky ReLU")
    layer_features = mapping.get("layer_features")
    if layer_features is not None:
        _require(int(layer_features), w_dim, "mapping layer_features", "rosinality's mapping layers are w_dim wide")

    channel_base = int(synthesis.get("channel_base", 32768))
    multiplier = channel_base // ROSINALITY_CHANNEL_BASE if channel_base % ROSINALITY_CHANNEL_BASE == 0 else 1
    return {
        "size": int(top["img_resolution"]),
        "style_dim": w_dim,
        "n_mlp": int(mapping.get("num_layers", 8)),
        "channel_multiplier": multiplier,
        "blur_kernel": tuple(float(tap) for tap in synthesis.get("resample_filter", DEFAULT_RESAMPLE_FILTER)),
        "lr_mlp": float(mapping.get("lr_multiplier", 0.01)),
        "channel_max": int(synthesis.get("channel_max", 512)),
        "channel_base": channel_base // multiplier,
        "conv_clamp": None if synthesis.get("conv_clamp") is None else float(synthesis["conv_clamp"]),
    }


def _layer_names(size: int) -> list[tuple[str, str]]:
    """(NVlabs prefix, rosinality prefix) of every synthesis layer in forward order, ToRGBs included."""
    names = [("synthesis.b4.conv1", "conv1"), ("synthesis.b4.torgb", "to_rgb1")]
    for k in range(int(math.log2(size)) - 2):
        block = f"synthesis.b{2 ** (k + 3)}"
        names += [(f"{block}.conv0", f"convs.{2 * k}"), (f"{block}.conv1", f"convs.{2 * k + 1}"),
                  (f"{block}.torgb", f"to_rgbs.{k}")]
    return names


def nvlabs_to_rosinality(
    state_dict: Mapping[str, Tensor], init_kwargs: Mapping[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The rosinality ``state_dict`` and ``Generator`` kwargs of an NVlabs StyleGAN2 generator.

    ``state_dict`` is the NVlabs generator's flattened parameters and buffers (``mapping.*`` and
    ``synthesis.*``); ``init_kwargs`` its ``_init_kwargs``. Every NVlabs tensor is consumed: a key that
    is neither mapped, a checked ``resample_filter``, nor ``mapping.w_avg`` is an error, as is a
    missing one. Shapes are checked when the result is loaded strictly into ``Generator(**kwargs)``.
    """
    kwargs = generator_kwargs_from_nvlabs(init_kwargs)
    source = dict(state_dict)
    consumed = {"mapping.w_avg"}

    def take(name: str) -> Tensor:
        if name not in source:
            raise StyleGAN2ConversionError(f"the NVlabs StyleGAN2 state has no {name!r} (found e.g. "
                                           f"{sorted(source)[:4]}); is the pickle complete?")
        consumed.add(name)
        return source[name].detach().clone()

    target: dict[str, Tensor] = {}
    for i in range(kwargs["n_mlp"]):
        target[f"style.{i + 1}.weight"] = take(f"mapping.fc{i}.weight")
        target[f"style.{i + 1}.bias"] = take(f"mapping.fc{i}.bias")
    target["input.input"] = take("synthesis.b4.const").unsqueeze(0)

    noise_index = 0
    for nvlabs, ours in _layer_names(kwargs["size"]):
        target[f"{ours}.conv.weight"] = take(f"{nvlabs}.weight").unsqueeze(0)
        if nvlabs.endswith("conv0"):
            target[f"{ours}.conv.blur.kernel"] = take(f"{nvlabs}.resample_filter") * UPSAMPLE_GAIN
        elif nvlabs.endswith("torgb") and ours != "to_rgb1":
            block = nvlabs.rsplit(".", 1)[0]
            target[f"{ours}.upsample.kernel"] = take(f"{block}.resample_filter") * UPSAMPLE_GAIN
        target[f"{ours}.conv.modulation.weight"] = take(f"{nvlabs}.affine.weight")
        target[f"{ours}.conv.modulation.bias"] = take(f"{nvlabs}.affine.bias")
        if nvlabs.endswith("torgb"):
            target[f"{ours}.bias"] = take(f"{nvlabs}.bias").reshape(1, -1, 1, 1)
            continue
        target[f"{ours}.activate.bias"] = take(f"{nvlabs}.bias")
        target[f"{ours}.noise.weight"] = take(f"{nvlabs}.noise_strength").reshape(1)
        noise = take(f"{nvlabs}.noise_const")
        target[f"noises.noise_{noise_index}"] = noise.reshape(1, 1, *noise.shape[-2:])
        noise_index += 1

    _check_resample_filters(source, kwargs["blur_kernel"], consumed)
    leftover = sorted(set(source) - consumed)
    if leftover:
        raise StyleGAN2ConversionError(f"the NVlabs StyleGAN2 state has tensors with no rosinality counterpart: "
                                       f"{leftover[:5]}; only the skip (config-f) generator converts")
    return target, kwargs


def _check_resample_filters(source: Mapping[str, Tensor], taps: Sequence[float], consumed: set[str]) -> None:
    """Every ``*.resample_filter`` buffer must be the normalised 2-D kernel of ``taps``."""
    expected = setup_filter(taps)
    for name in (key for key in source if key.endswith(".resample_filter")):
        kernel = source[name].detach().to(torch.float32)
        if kernel.shape != expected.shape or not torch.allclose(kernel, expected, atol=1e-6):
            raise StyleGAN2ConversionError(f"{name} is not the filter of resample_filter={list(taps)} from the "
                                           "init kwargs; the pickle is inconsistent")
        consumed.add(name)
