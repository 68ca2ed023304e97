"""The application layer: one library function per command, data -> score -> plan -> prune -> evaluate.

Each `prunehead <command>` parses its options, calls the function of the same name here, prints and
writes files. The functions take paths / hub ids or loaded objects, load through one loader
(`prunehead.workspace.open_workspace`), and never write files themselves (except `finetune` and
`export_onnx`, whose result is a folder).
"""

from . import deciders  # noqa: F401 - registers the built-in deciders of `prune`
from .artefacts import export_onnx, finetune
from .common import check_counts
from .evaluation import evaluate, sweep
from .pruner import DECIDERS, Decision, PruneResult, decider, prune
from .scoring import ScoreResult, build_scorer, score

__all__ = ["DECIDERS", "Decision", "PruneResult", "ScoreResult", "build_scorer", "check_counts", "decider",
           "evaluate", "export_onnx", "finetune", "prune", "score", "sweep"]
