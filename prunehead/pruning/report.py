"""Prune a loaded model by a score matrix, describe what changed, recover (the `prunehead prune` workflow)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..cost import count_macs, count_params, example_inputs
from ..heads import head_adapter
from ..scorers.base import model_device, to_device
from ..surgery import plan_of
from ..training.config import TrainConfig
from ..training.finetune import fit_


def cost_summary(model: nn.Module, seconds: float = 1.0) -> dict[str, Any]:
    """Heads, parameters and MACs (on `seconds` of audio) of `model`, on whichever device it is."""
    adapter = head_adapter(model)
    macs = count_macs(model, to_device(example_inputs(model, seconds), model_device(model)))
    return {"heads": sum(adapter.heads_per_layer(model)), "heads_per_layer": adapter.heads_per_layer(model),
            "params": count_params(model), "macs": macs["total"], "attention_macs": macs["attention"]}


def change_report(model: nn.Module, pruned: nn.Module) -> dict[str, Any]:
    """Heads removed, the plan, and heads / parameters / MACs of `model` before and `pruned` after."""
    before, after = cost_summary(model), cost_summary(pruned)
    return {
        "heads_removed": before["heads"] - after["heads"],
        "pruned_heads": plan_of(pruned).to_json()["pruned_heads"],
        "before": before,
        "after": after,
        "params_ratio": after["params"] / before["params"],
        "macs_ratio": after["macs"] / before["macs"],
        "macs_input": "1 s of 16 kHz audio (Whisper: its fixed window; text: 128 tokens)",
    }


def recover(pruned: nn.Module, data: str, cfg: TrainConfig, *, source: str | None = None, task: str | None = None,
            device: str | None = None, teacher: nn.Module | None = None,
            distill: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """Recovery: fine-tune a pruned model briefly on `data` (`cfg.train_split`), keeping its plan.

    A copy is trained in memory by `prunehead.training.finetune.fit_` (data-parallel under torchrun).
    Cost: `cfg.epochs` passes (forward + backward) over the training split.

    Args:
        source: the unpruned model's folder, whose feature extractor / tokenizer the training uses.

    Returns:
        (the recovered model on the CPU in eval mode, the training record: epochs, time, samples).
    """
    recovered = copy.deepcopy(pruned)
    record = fit_(recovered, data, cfg, source=source, task=task, device=device, teacher=teacher, distill=distill)
    if plan_of(recovered) != plan_of(pruned):
        raise RuntimeError("the recovery fine-tune changed the pruning plan; please report this")
    keep = ("epochs", "stopped_early", "wall_seconds", "device", "train_samples", "processes")
    keep += ("distill",) if "distill" in record else ()
    return recovered.cpu().eval(), {**{k: record[k] for k in keep}, "config": record["config"]}
