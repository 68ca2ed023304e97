"""What the application layer's functions share: score matrices from tensors or files, the data workspace,
progress lines, count checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, MissingSplitError
from ..heads import head_adapter
from ..pruning.score_files import load_scores
from ..scorers.parallel import model_fingerprint
from ..progress import say  # noqa: F401 - the api's progress lines
from ..workspace import ModelLike, Workspace, open_workspace



ScoresLike = torch.Tensor | str | Path


def check_counts(**counts: int) -> None:
    """InputError naming the first option (as its flag) that is below 1."""
    for name, value in counts.items():
        if value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def scores_for(scores: ScoresLike, net: nn.Module, weights: str | None = None) -> torch.Tensor:
    """A score matrix for `net`: a tensor as it is, a file checked for shape (and warned about when it was
    made on other weights; `weights`: `net`'s fingerprint when the caller has it already)."""
    adapter = head_adapter(net)
    expect = (adapter.num_layers, adapter.num_heads)
    if isinstance(scores, torch.Tensor):
        if tuple(scores.shape) != expect:
            raise InputError(f"scores are {tuple(scores.shape)} but the model has {expect[0]} x {expect[1]} heads")
        return scores
    return load_scores(scores, expect=expect, model_fingerprint=weights or model_fingerprint(net))


def data_workspace(model: ModelLike, data: str | None, split: str, task: str | None, device: Any,
               clip_seconds: float | None, source: str | None = None, workers: int = 0) -> Workspace:
    if data is None:
        raise InputError("scoring needs data: give --data")
    return open_workspace(model, data, split, task=task, device=device, clip_seconds=clip_seconds, source=source,
                          workers=workers)


class ScoreSplit:
    """The split the scorers draw from, opened on first use and then shared: the head and the neuron
    scorer of one call read it once (`ScoreSplit(...)(model)` is that split's Workspace on `model`)."""

    def __init__(self, data: str | None, split: str, task: str | None, device: Any, clip_seconds: float | None,
                 source: str | None = None) -> None:
        self.data, self.split, self.task, self.device, self.clip_seconds, self.source = (
            data, split, task, device, clip_seconds, source)
        self._opened: Workspace | None = None

    def share_(self, ws: Workspace) -> None:
        """Serve `ws` (already open on this data) when it is this split: no second read of the same split."""
        if ws.split == self.split:
            self._opened = ws

    option = "--score-split"  # the flag that chose `split`, named when the data lacks it

    def __call__(self, model: nn.Module) -> Workspace:
        if self._opened is None or self._opened.model is not model:
            try:
                self._opened = data_workspace(model, self.data, self.split, self.task, self.device,
                                              self.clip_seconds, source=self.source)
            except MissingSplitError as err:
                raise err.for_option(self.option) from None
        return self._opened
