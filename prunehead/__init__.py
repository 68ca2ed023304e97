"""prunehead: measure each attention head's contribution, remove the weakest, export the result.

Pipeline: data -> score -> plan -> prune -> evaluate -> export. Each `prunehead <command>` is a thin
wrapper over the function of the same name here. Names are imported on first use, so `import prunehead`
(and the CLI's `--help`) does not pay for torch and transformers until they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # application layer: one function per command
    "evaluate": "api", "score": "api", "prune": "api", "sweep": "api", "finetune": "api", "export_onnx": "api",
    "build_scorer": "api", "ScoreResult": "api", "PruneResult": "api", "decider": "api", "Decision": "api",
    # the values they take: one target per prune, a ranking per unit kind, the data, a recovery
    "Cut": "pruning.targets", "AccuracyBudget": "pruning.targets", "MacBudget": "pruning.targets",
    "SavedPlan": "pruning.targets", "Amount": "units.base",
    "Ranking": "specs", "Data": "specs", "Recovery": "specs", "Frontier": "specs", "Checkpointing": "specs",
    "open_workspace": "workspace", "Workspace": "workspace",
    "max_drop_plan": "pruning.budget", "choose_scorer": "pruning.budget", "target_macs_plan": "pruning.order",
    "removal_order": "pruning.order", "mac_floor": "pruning.order", "max_drop_units_plan": "pruning.order",
    # core: plan (pure), surgery (the only mutator), control (gating / recording)
    "PruningPlan": "pruning.plan", "load_scores": "pruning.score_files", "save_scores": "pruning.score_files", "select": "pruning.plan",
    "load": "surgery", "plan_of": "surgery", "prune_": "surgery", "save_pretrained": "surgery",
    "controlled": "control",
    "HeadAdapter": "heads", "head_adapter": "heads",
    "Family": "families", "family_of": "families",
    "InputError": "errors", "PruneheadError": "errors", "UnsupportedModelError": "errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prunehead' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
