"""Mixed precision by name: `autocast("bfloat16", device)` around forward (and backward) passes.

`torch.autocast` runs matmuls and convolutions in the lower precision and keeps reductions, norms,
softmax and losses in float32; parameters stay float32. "float32" is no autocast at all, so it gives
exactly the float32 results.

Effect on scores (bfloat16 keeps 8 mantissa bits, ~3 significant digits; float16 10 bits, narrower range).
Measured with bfloat16 on the CPU on the random-init tiny wav2vec2 / Whisper / BERT of the tests: gradient
scores (scaled to [0, 1]) move by up to 0.004, attention maxima by up to 2e-4 (probabilities), occlusion's
loss rise by up to 1e-4, the mean loss by 3e-5. Heads whose scores are closer than that can swap
places; on these untrained models that is many (their attention is nearly uniform), on trained models with
spread-out scores few. Occlusion by accuracy can flip a prediction whose logits are nearly tied.
HIB optimizes its own float32 logits A_r and is not autocast.
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
