"""Prune a loaded model by a score matrix and describe what changed (the `prunehead prune` workflow)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .cost import count_macs, count_params, example_inputs
from .heads import head_adapter
from .plan import PruningPlan, select
from .surgery import plan_of, prune_


def resolve_scope(ratio: float | None, heads: int | None, global_: bool | None) -> str:
    """"global" or "per_layer": --heads implies per-layer, --ratio defaults to global."""
    if global_ is None:
        return "per_layer" if heads is not None else "global"
    return "global" if global_ else "per_layer"


def plan_for(model: nn.Module, scores: torch.Tensor, *, ratio: float | None = None, heads: int | None = None,
             scope: str = "global", min_heads_per_layer: int = 0) -> PruningPlan:
    """The plan of all heads to remove from `model` (already removed heads included and counted)."""
    return select(scores, ratio=ratio, heads=heads, scope=scope, min_heads_per_layer=min_heads_per_layer,
                  pruned=plan_of(model))


def cost_summary(model: nn.Module, seconds: float = 1.0) -> dict[str, Any]:
    """Heads, parameters and MACs (on `seconds` of audio) of `model`."""
    adapter = head_adapter(model)
    macs = count_macs(model, example_inputs(model, seconds))
    return {"heads": sum(adapter.heads_per_layer(model)), "heads_per_layer": adapter.heads_per_layer(model),
            "params": count_params(model), "macs": macs["total"], "attention_macs": macs["attention"]}


def prune_and_report(model: nn.Module, plan: PruningPlan) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of `model` by `plan`; return it with a before/after report."""
    before = cost_summary(model)
    pruned = prune_(copy.deepcopy(model), plan)
    after = cost_summary(pruned)
    report = {
        "heads_removed": before["heads"] - after["heads"],
        "pruned_heads": plan.to_json()["pruned_heads"],
        "before": before,
        "after": after,
        "params_ratio": after["params"] / before["params"],
        "macs_ratio": after["macs"] / before["macs"],
        "macs_input": "1 s of 16 kHz audio (Whisper: its fixed window; text: 128 tokens)",
    }
    return pruned, report
