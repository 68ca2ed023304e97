"""Head scorers: `get_scorer(name, **params).score(model, batches, objective) -> Tensor[L, H]`.

Built-ins: hib, attattr, gradient, occlusion, attention, random; third parties add their own through the
entry-point group `prunehead.scorers`. Higher scores = more important heads.
"""

from .base import Objective, SampleScorer, Scorer
from .registry import ENTRY_POINT_GROUP, available, get_scorer, scorer_class

__all__ = ["ENTRY_POINT_GROUP", "Objective", "SampleScorer", "Scorer", "available", "get_scorer", "scorer_class"]
