"""The scorer contract: `Scorer.score(model, batches, objective) -> Tensor[L, H]`, higher = more important.

Shared arguments, documented once here:

* `model`: a transformers model that `prunehead.head_adapter` supports. Scoring sets it to eval mode,
  freezes its parameters and routes attention through `prunehead.controlled`; every one of these changes
  is undone when `score` returns or raises. A pruned model is scored on the heads it still has; the
  removed ones get a score just below its lowest remaining head (so cumulative pruning ratios work).
* `batches`: an iterable of dicts of model inputs (`input_values` / `input_features` / `input_ids`,
  optional `attention_mask`) plus whatever the objective reads (`labels`). Tensors whose first dimension
  is the batch size are treated as per-sample. Batches are moved to the model's device.
* `objective`: `(outputs, batch) -> (B,)` per-sample loss (lower = better), e.g. cross-entropy with the
  gold label. Scorers never see a task, only this callable.

Most scorers are `SampleScorer`s: the score is a reduction of per-sample results, so samples can be
split over processes (`prunehead.scorers.parallel`) or checkpointed and resumed, with the merged matrix
equal to the single-process one. Sample ids are positions in the sequence of batches (0, 1, ...); a
sample's seed depends on its id only, never on which batch or process it lands in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn
from ..progress import bar

from .parallel import run
# the helpers scorers (and plugins) import from here live in `tools`
from .tools import (Batch, Objective, CleanPass, batch_size, check_batches, check_loss, clean_attention,  # noqa: F401
                    clean_pass, finish_scores, forward, gather_results, index_batch, kept_mask, model_device,
                    model_inputs, padding_changes_outputs, prepared, sample_batches, to_device, to_grid,
                    valid_frames)


@dataclasses.dataclass
class Scorer:
    """Base class of every head scorer. Subclasses are dataclasses whose fields are their parameters."""

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = True
    # Per-task parameter defaults (e.g. HIB's paper Table 1), applied by `get_scorer(name, task=...)`.
    task_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    progress: bool = dataclasses.field(default=False, repr=False, kw_only=True)  # inner tqdm bars (steps, layers)

    def _bar(self, iterable: Iterable, desc: str) -> Iterable:
        return bar(iterable, desc=desc, leave=False, enable=self.progress)

    def score(self, model: nn.Module, batches: Iterable[Batch], objective: Objective) -> torch.Tensor:
        """Score every head of `model` on `batches`; returns a finite (L, H) float tensor."""
        batches = check_batches(batches, self.needs_data)
        with prepared(model):
            scores = self._score(model, [to_device(b, model_device(model)) for b in batches], objective)
        return finish_scores(scores, model)

    def _score(self, model: nn.Module, batches: list[Batch], objective: Objective) -> torch.Tensor:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The scorer's parameters (its dataclass fields), JSON-friendly."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}


@dataclasses.dataclass
class SampleScorer(Scorer):
    """A scorer whose matrix is `reduce` of per-sample results (one (B, ...) tensor per batch).

    Subclasses implement `score_batch` and, if they need statistics over all batches first, `prepare`.
    """

    def prepare(self, model: nn.Module, batches: list[Batch], objective: Objective) -> Any:
        """Work done once over all batches before any sample is scored (e.g. HIB's V statistics)."""
        return None

    def score_batch(self, model: nn.Module, batch: Batch, objective: Objective, ids: torch.Tensor,
                    context: Any) -> torch.Tensor:
        """(B, ...) per-sample results for one batch; `ids` (B,) are the samples' global ids."""
        raise NotImplementedError

    def reduce(self, results: torch.Tensor) -> torch.Tensor:
        """(L, H) scores from the (N, ...) per-sample results of all samples, in sample-id order."""
        return results.double().mean(0)

    def spread(self, results: torch.Tensor) -> torch.Tensor:
        """(L, H) standard deviation of the per-sample results over samples (0 for one sample or a removed head)."""
        main = results.double()
        main = main if main.dim() == 3 else main[:, 0]
        std = main.std(0, unbiased=True) if main.shape[0] > 1 else torch.zeros_like(main[0])
        return std.nan_to_num(0.0)

    def score(self, model: nn.Module, batches: Iterable[Batch], objective: Objective) -> torch.Tensor:
        """Score every head of `model` on `batches`: the world-size-1 case of `parallel.run`."""
        return run(self, model, check_batches(batches, True), objective).scores

    def per_sample(self, model: nn.Module, batches: Iterable[Batch], objective: Objective,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """((N,) sorted sample ids, (N, ...) results in id order), for callers that aggregate themselves."""
        outcome = run(self, model, check_batches(batches, True), objective)
        return outcome.ids, outcome.results
