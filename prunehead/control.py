"""`controlled(model)`: route a model's attention through prunehead's function (`prunehead.attention`),
which records, gates, replaces and scales heads.

`with controlled(model) as ctl:` switches `model` to the function; inside, the nested context managers
`ctl.gating(...)`, `ctl.recording(...)`, `ctl.replacing(...)` and `ctl.scaling(...)` turn features on.
With nothing on, the function delegates to SDPA and gives eager attention's outputs (padding included:
the mask function is registered too, method.md §3.1). Leaving any context restores the previous state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from .attention import NAME, SITES, Controller, Reducer, Replacement, Scaling, prunehead_attention  # noqa: F401
from .heads import head_adapter


def _implementations(model: nn.Module) -> list[tuple[Any, str]]:
    """Every config in `model` (top level and sub-configs) with its current attention implementation."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config") and
               hasattr(m.config, "_attn_implementation")}
    return [(c, c._attn_implementation_internal) for c in configs.values()]


@contextlib.contextmanager
def controlled(model: nn.Module) -> Iterator[Controller]:
    """Route `model`'s targeted attention blocks through `prunehead_attention`; restore on exit."""
    adapter = head_adapter(model)
    ctl = Controller(adapter.num_layers)
    saved = _implementations(model)
    stack = contextlib.ExitStack()
    previous: dict[nn.Module, tuple[Controller, int] | None] = {}
    try:
        stack.enter_context(adapter.family.routed(model))  # families outside AttentionInterface swap blocks
        for site in head_adapter(model).sites:  # the routed blocks
            previous[site.module] = SITES.get(site.module)
            SITES[site.module] = (ctl, site.layer)
        for config, _ in saved:
            config._attn_implementation_internal = NAME
        yield ctl
    finally:
        for config, implementation in saved:
            config._attn_implementation_internal = implementation
        for module, entry in previous.items():
            if entry is None:
                SITES.pop(module, None)
            else:
                SITES[module] = entry
        stack.close()


def is_controlled(model: nn.Module) -> bool:
    """True while any config of `model` routes attention through prunehead."""
    return any(impl == NAME for _, impl in _implementations(model))
