"""Mixed precision by name: `autocast("bfloat16", device)` around forward (and backward) passes.

`torch.autocast` runs matmuls and convolutions in the lower precision and keeps reductions, norms,
softmax and losses in float32; parameters stay float32. "float32" is no autocast at all, so it gives
exactly the float32 results.

Effect on scores (measured on tiny models in tests/test_device.py; bfloat16 has an 8-bit mantissa,
float16 10 bits with a narrower range): the ranking of heads with clearly different scores is kept, heads
whose scores differ by less than about 1 % of the score range can swap. Occlusion by accuracy can flip a
prediction whose logits are nearly tied. HIB optimizes its own float32 logits A_r and is not autocast.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_dtype(name: str) -> torch.dtype:
    """The torch dtype called `name`; InputError listing the choices otherwise."""
    if name not in DTYPES:
        raise InputError(f"unknown --dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    return DTYPES[name]


def autocast(name: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context running forward passes on `device` in precision `name` ("float32" | "bfloat16" | "float16").

    Raises:
        InputError: an unknown name, or a lower precision on a device without autocast support.
    """
    dtype = check_dtype(name)
    device_type = torch.device(device).type
    if dtype == torch.float32:
        return contextlib.nullcontext()
    if not torch.amp.is_autocast_available(device_type):
        raise InputError(f"mixed precision ({name}) is not available on device {device_type!r}; use --dtype float32")
    return torch.autocast(device_type, dtype=dtype)
