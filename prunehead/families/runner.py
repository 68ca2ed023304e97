"""Run a model from the hidden state entering encoder layer l (method.md §1.10, exact speed-ups).

A clean forward pass records, with forward pre-hooks, the input of every encoder layer (the frozen front
end's output included) and the extra arguments the layer was called with (the 4-D padding mask). Later
passes then run only layers l..L-1 on those cached states, rows of different start layers staggered in
one batch, and finish through the model's own task head: the base model (or Whisper encoder) is swapped,
for the duration of one call, for a stub that returns the already-computed encoder output. What follows
the layer stack (final norm, adapter, pooler) is per family: see each family's `runner`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Captured = tuple[tuple[Any, ...], dict[str, Any]]  # (args after hidden_states, kwargs) of one layer call


class _EncoderStub(nn.Module):
    """Stands in for a base model / encoder: returns a precomputed output whatever it is called with."""

    def __init__(self, output: Any):
        super().__init__()
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


@dataclass
class LayerRunner:
    """Runs encoder layers from a cached state and finishes through the model's own head."""

    layers: nn.ModuleList
    owner: nn.Module  # the module whose attribute `attr` is swapped for the stub
    attr: str
    post: Callable[[torch.Tensor], Any]  # last layer output -> what the swapped module returns

    @contextlib.contextmanager
    def capturing(self) -> Iterator[list[tuple[torch.Tensor, Captured] | None]]:
        """During the block, record (hidden state entering layer j, its other arguments) for every j."""
        captured: list[tuple[torch.Tensor, Captured] | None] = [None] * len(self.layers)

        def hook(j: int) -> Callable:
            def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                captured[j] = (args[0].detach().clone(), (args[1:], dict(kwargs)))
            return pre_hook

        handles = [layer.register_forward_pre_hook(hook(j), with_kwargs=True) for j, layer in enumerate(self.layers)]
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def run_layers(self, entering: list[torch.Tensor | None], extras: list[Captured | None]) -> torch.Tensor:
        """Staggered run: before layer j, the rows `entering[j]` (n_j, L, D) are appended to the batch.

        `extras[j]` are layer j's other arguments, already indexed to the rows present at layer j.
        Returns the last layer's output for all rows, in the order they entered.
        """
        hidden: torch.Tensor | None = None
        for j, layer in enumerate(self.layers):
            if entering[j] is not None:
                hidden = entering[j] if hidden is None else torch.cat([hidden, entering[j]])
            if hidden is None:
                continue
            args, kwargs = extras[j]
            out = layer(hidden, *args, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    @contextlib.contextmanager
    def head_from(self, hidden: torch.Tensor) -> Iterator[None]:
        """Inside the block, calling the model runs only its task head on encoder layers' output `hidden`."""
        original = getattr(self.owner, self.attr)
        setattr(self.owner, self.attr, _EncoderStub(self.post(hidden)))
        try:
            yield
        finally:
            setattr(self.owner, self.attr, original)


def select_rows(extra: Captured, rows: torch.Tensor, batch: int) -> Captured:
    """Index every per-sample tensor (first dim == `batch`) among a layer's arguments by `rows`."""
    def pick(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
            return value.index_select(0, rows.to(value.device))
        return value
    args, kwargs = extra
    return tuple(pick(a) for a in args), {k: pick(v) for k, v in kwargs.items()}
