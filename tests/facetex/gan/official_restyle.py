"""Official ReStyle checkpoints built from the published module and key names (restyle-encoder's
``BackboneEncoder`` / ``ProgressiveBackboneEncoder``), with the published forward written out for reference."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

STAGES = ((8, 8, 2), (8, 16, 1), (16, 24, 2), (24, 32, 1))  # (in, depth, units) as helpers.get_blocks lists them
INPUT_SIZE, SPATIAL = 64, 4  # 4 stride-2 stages: 64 -> 4, then log2(4) = 2 stride-2 convs per head
STYLE_DIM = 16


def restyle_encoder_state(n_styles: int, seed: int, style_dim: int = STYLE_DIM, input_nc: int = 6) -> dict[str, Tensor]:
    """Random tensors under ReStyle's BackboneEncoder names (input_layer, body.{i}.shortcut/res_layer, styles.{j})."""
    rng = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3, shift: float = 0.0) -> Tensor:
        return torch.randn(shape, generator=rng) * scale + shift

    def batch_norm(prefix: str, channels: int) -> dict[str, Tensor]:
        return {f"{prefix}.weight": rand(channels, shift=1.0), f"{prefix}.bias": rand(channels, scale=0.1),
                f"{prefix}.running_mean": rand(channels, scale=0.1), f"{prefix}.running_var": rand(channels).abs() + 0.5,
                f"{prefix}.num_batches_tracked": torch.tensor(7)}

    state = {"input_layer.0.weight": rand(STAGES[0][0], input_nc, 3, 3), **batch_norm("input_layer.1", STAGES[0][0]),
             "input_layer.2.weight": rand(STAGES[0][0], shift=0.25)}
    unit = 0
    for in_channels, depth, units in STAGES:
        for index in range(units):
            c_in, p = in_channels if index == 0 else depth, f"body.{unit}"
            if c_in != depth:
                state[f"{p}.shortcut_layer.0.weight"] = rand(depth, c_in, 1, 1)
                state.update(batch_norm(f"{p}.shortcut_layer.1", depth))
            state.update(batch_norm(f"{p}.res_layer.0", c_in))
            state[f"{p}.res_layer.1.weight"] = rand(depth, c_in, 3, 3)
            state[f"{p}.res_layer.2.weight"] = rand(depth, shift=0.25)
            state[f"{p}.res_layer.3.weight"] = rand(depth, depth, 3, 3)
            state.update(batch_norm(f"{p}.res_layer.4", depth))
            state[f"{p}.res_layer.5.fc1.weight"] = rand(max(1, depth // 16), depth, 1, 1)
            state[f"{p}.res_layer.5.fc2.weight"] = rand(depth, max(1, depth // 16), 1, 1)
            unit += 1
    for j in range(n_styles):
        for k in range(int(math.log2(SPATIAL))):
            state[f"styles.{j}.convs.{2 * k}.weight"] = rand(style_dim, STAGES[-1][1] if k == 0 else style_dim, 3, 3)
            state[f"styles.{j}.convs.{2 * k}.bias"] = rand(style_dim, scale=0.1)
        state[f"styles.{j}.linear.weight"] = rand(style_dim, style_dim, scale=1.0)
        state[f"styles.{j}.linear.bias"] = rand(style_dim, scale=0.1)
    return state


def reference_body(state: dict[str, Tensor], x: Tensor) -> list[Tensor]:
    """The input layer and IR-SE body of the published encoders; the output of every stage, in order."""
    def bn(p: str, y: Tensor) -> Tensor:
        return F.batch_norm(y, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], eps=1e-5)

    x = F.prelu(bn("input_layer.1", F.conv2d(x, state["input_layer.0.weight"], padding=1)), state["input_layer.2.weight"])
    unit, outputs = 0, []
    for in_channels, depth, units in STAGES:
        for index in range(units):
            p, stride = f"body.{unit}", 2 if index == 0 else 1  # get_block: the first unit of a block has stride 2
            if f"{p}.shortcut_layer.0.weight" in state:
                shortcut = bn(f"{p}.shortcut_layer.1", F.conv2d(x, state[f"{p}.shortcut_layer.0.weight"], stride=stride))
            else:
                shortcut = F.max_pool2d(x, 1, stride)
            r = F.conv2d(bn(f"{p}.res_layer.0", x), state[f"{p}.res_layer.1.weight"], padding=1)
            r = F.conv2d(F.prelu(r, state[f"{p}.res_layer.2.weight"]), state[f"{p}.res_layer.3.weight"], stride=stride,
                         padding=1)
            r = bn(f"{p}.res_layer.4", r)
            gate = F.conv2d(F.relu(F.conv2d(r.mean(dim=(2, 3), keepdim=True), state[f"{p}.res_layer.5.fc1.weight"])),
                            state[f"{p}.res_layer.5.fc2.weight"])
            x = shortcut + r * torch.sigmoid(gate)
            unit += 1
        outputs.append(x)
    return outputs


def reference_head(state: dict[str, Tensor], j: int, y: Tensor) -> Tensor:
    """GradualStyleBlock ``styles.{j}``: its stride-2 convs with LeakyReLU(0.01), then EqualLinear (lr_mul 1)."""
    k = 0
    while f"styles.{j}.convs.{2 * k}.weight" in state:
        y = F.leaky_relu(F.conv2d(y, state[f"styles.{j}.convs.{2 * k}.weight"], state[f"styles.{j}.convs.{2 * k}.bias"],
                                  stride=2, padding=1), 0.01)
        k += 1
    weight = state[f"styles.{j}.linear.weight"]
    return F.linear(y.flatten(1), weight / math.sqrt(weight.shape[1]), state[f"styles.{j}.linear.bias"])


def reference_encoder(state: dict[str, Tensor], x: Tensor, n_styles: int, progressive: bool) -> Tensor:
    """ReStyle's BackboneEncoder / ProgressiveBackboneEncoder forward, written from the published layers."""
    features = reference_body(state, x)[-1]
    rows = [reference_head(state, j, features) for j in range(n_styles)]
    if progressive:  # w0 repeated, plus delta_i on row i >= 1
        return torch.stack([rows[0]] + [rows[0] + delta for delta in rows[1:]], dim=1)
    return torch.stack(rows, dim=1)


def save_restyle(path: Path, decoder: torch.nn.Module, encoder_type: str, seed: int = 0, prefix: str = "",
                 **opts) -> dict[str, Tensor]:
    """torch.save({'state_dict', 'opts', 'latent_avg'}) as ReStyle's coach does; returns the encoder tensors."""
    encoder = restyle_encoder_state(decoder.n_latent, seed, decoder.style_dim)
    state = {f"{prefix}encoder.{k}": v for k, v in encoder.items()}
    state.update({f"{prefix}decoder.{k}": v for k, v in decoder.state_dict().items()})
    latent_avg = torch.randn(decoder.style_dim, generator=torch.Generator().manual_seed(seed + 1))
    torch.save({"state_dict": state, "latent_avg": latent_avg,
                "opts": {"encoder_type": encoder_type, "input_nc": 6, "n_iters_per_batch": 4, **opts}}, path)
    return encoder
