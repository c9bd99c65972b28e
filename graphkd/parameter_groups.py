"""Optimizer parameter groups for models that ask for their own (e.g. GCNII's per-part weight decay)."""
from __future__ import annotations

from typing import Any

from torch import nn


def optimizer_groups(module: nn.Module) -> list[dict[str, Any]]:
    """The trainable parameters of ``module`` as optimizer groups.

    Every submodule with a ``parameter_groups()`` method (e.g. :class:`graphkd.gcnii.GCNII`)
    contributes its groups with their own options (``weight_decay`` ...); all other trainable
    parameters form one last group with the optimizer's defaults. Frozen parameters are left out
    and empty groups dropped, so a frozen teacher inside ``module`` adds nothing.
    """
    groups: list[dict[str, Any]] = []
    claimed: set[int] = set()
    for child in module.modules():
        if hasattr(child, "parameter_groups") and not any(id(p) in claimed for p in child.parameters()):
            for group in child.parameter_groups():
                claimed.update(id(p) for p in group["params"])
                groups.append({**group, "params": [p for p in group["params"] if p.requires_grad]})
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in claimed]
    return [group for group in [*groups, {"params": rest}] if group["params"]]
