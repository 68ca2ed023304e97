"""`load_data`: a data spec in, a decoded in-memory Dataset out (audio, length, path, label or text)."""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from ..errors import DataError, InputError
from .audio import MAX_CLIP_SECONDS, Item, decode_items, sampling_rate_of
from .labels import merged_label_names
from .sources import resolve

CLIP_KEY = "prunehead_clip_seconds"  # feature-extractor attribute: the clip length a model was trained on


def load_data(spec: str, split: str = "test", processor: Any = None, task: str | None = None,
              on_error: str = "stop", clip_seconds: float | None = None,
              label_column: str | None = None, max_samples: int | None = None, seed: int = 0,
              min_samples: int = 0) -> datasets.Dataset:
    """Load `split` of a data spec (see `prunehead.data`) as a Dataset, decoded into memory.

    Columns: `audio` (float32 mono at the processor's rate), `length` (samples), `path`, and `label`
    (ClassLabel with the label names) or `text` (transcript, for ASR).

    Args:
        processor: feature extractor or processor; only its sampling rate is used here.
        task: "asr" requires transcripts, other tasks labels; None accepts what the data has.
        on_error: "stop" raises on the first undecodable file; "skip" drops it with a warning naming it.
        clip_seconds: centre-crop / zero-pad every clip to this length (exact batches for KS). Default:
            for labelled clips, the length the model was fine-tuned with (`CLIP_KEY` on its feature
            extractor), else none; transcribed sentences are never cropped unless asked.
        label_column: the manifest / hub column holding the target (default: `label`, else `text`).
        max_samples, seed: decode only a seeded random subset of this many utterances (kept in order).
        min_samples: refuse (or with `on_error="skip"`, drop) clips shorter than this, after cropping /
            padding: what a model's front end needs for one frame (`prunehead.families.min_input_samples`).
    """
    if on_error not in ("stop", "skip"):
        raise InputError(f"on_error must be 'stop' or 'skip', not {on_error!r}")
    if clip_seconds is not None and not (math.isfinite(clip_seconds) and 0 < clip_seconds <= MAX_CLIP_SECONDS):
        raise InputError(f"--clip-seconds must be a number of seconds above 0 and at most {MAX_CLIP_SECONDS:.0f}, "
                         f"not {clip_seconds}")
    if max_samples is not None and (isinstance(max_samples, bool) or max_samples < 1):
        raise InputError(f"--samples must be at least 1, not {max_samples}")
    check_seed(seed)
    if any(not part.strip() for part in spec.split("+")):
        raise DataError(f"data spec {spec!r} has an empty part; name a folder, manifest or data set (use ./ for "
                        "the current folder)")
    sources = [resolve(part.strip(), split, label_column) for part in spec.split("+")]
    columns = {s.column for s in sources}
    if len(columns) > 1:
        raise DataError(f"{spec}: cannot join data with labels and data with transcripts")
    column = columns.pop()
    if task is not None and column != ("text" if task == "asr" else "label"):
        raise DataError(f"{spec} has {column}s but task {task!r} needs "
                        f"{'texts' if task == 'asr' else 'labels'}; pick matching data or --task")
    items = [item for s in sources for item in s.items]
    if not items:
        raise DataError(f"{spec} split {split!r} holds no audio files; check the path and --split")
    if max_samples is not None and max_samples < len(items):
        keep = np.sort(np.random.default_rng(seed).choice(len(items), max_samples, replace=False))
        items = [items[i] for i in keep]
    rate = sampling_rate_of(processor)
    if clip_seconds is None and column == "label":  # never crop transcribed sentences
        clip_seconds = getattr(processor, CLIP_KEY, None)
    clip = round(clip_seconds * rate) if clip_seconds else None
    _check_memory(len(items), clip, clip_seconds)
    waves, kept = decode_items(items, rate, on_error, clip, min_samples)
    if not waves:
        raise DataError(f"{spec} split {split!r}: no file could be decoded")
    names = merged_label_names(sources) if column == "label" else None
    meta = {"spec": spec, "split": split, "sampling_rate": rate}
    return _dataset(waves, [items[i] for i in kept], names, meta)


def check_seed(seed: object) -> int:
    """A seed numpy accepts: a whole number >= 0 (InputError naming --seed otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"--seed must be a whole number >= 0, not {seed!r}")
    return int(seed)


def memory_bytes() -> int:
    """This machine's physical memory in bytes (a huge number where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _check_memory(count: int, clip: int | None, seconds: float | None) -> None:
    """InputError before decoding when `count` clips padded to `clip` samples would not fit in half the memory."""
    if clip is None:
        return
    need, have = count * clip * 4, memory_bytes()  # float32
    if need > have // 2:
        raise InputError(f"--clip-seconds {seconds:g} pads {count} clips to {need / 2**30:.1f} GiB of audio, more "
                         f"than half this machine's {have / 2**30:.1f} GiB; choose a shorter --clip-seconds")


def _dataset(waves: list[np.ndarray], items: list[Item], names: tuple[str, ...] | None,
             meta: dict[str, Any]) -> datasets.Dataset:
    """The Arrow table, built directly (`Dataset.from_dict` is ~100x slower for audio arrays)."""
    columns: dict[str, pa.Array] = {"audio": pa.array(waves, type=pa.list_(pa.float32())),
                                    "length": pa.array([len(w) for w in waves], type=pa.int64()),
                                    "path": pa.array([i.name for i in items], type=pa.string())}
    features = datasets.Features({"audio": datasets.Sequence(datasets.Value("float32")),
                                  "length": datasets.Value("int64"), "path": datasets.Value("string")})
    if names is not None:
        index = {n: i for i, n in enumerate(names)}
        features["label"] = datasets.ClassLabel(names=list(names))
        columns["label"] = pa.array([index[i.target] for i in items], type=pa.int64())
    else:
        features["text"] = datasets.Value("string")
        columns["text"] = pa.array([i.target for i in items], type=pa.string())
    info = datasets.DatasetInfo(description=json.dumps(meta), features=features)
    return datasets.Dataset(pa.table(columns), info=info).with_format("numpy")
