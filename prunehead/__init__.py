"""prunehead: measure each attention head's contribution, remove the weakest, export the result.

Pipeline: data -> score -> plan -> prune -> evaluate -> export.
"""

from .control import controlled
from .errors import InputError, PruneheadError, UnsupportedModelError
from .heads import HeadAdapter, head_adapter
from .plan import PruningPlan, load_scores, save_scores, select
from .surgery import load, plan_of, prune_, save_pretrained

__version__ = "0.1.0"

__all__ = [
    "HeadAdapter", "InputError", "PruneheadError", "PruningPlan", "UnsupportedModelError", "__version__",
    "controlled", "head_adapter", "load", "load_scores", "plan_of", "prune_", "save_pretrained",
    "save_scores", "select",
]
