"""Nothing from a model folder runs without an explicit opt-in.

A folder's `preprocessor_config.json`, `processor_config.json` or `tokenizer_config.json` (or a processor
entry of config.json's `auto_map`) may name Python code to run (`auto_map`). transformers then asks "run
the custom code? [y/N]" on a terminal (y runs it) and, without one, silently falls back to a default class.
prunehead refuses such a folder, naming the file, unless the user opts in: `PRUNEHEAD_TRUST_REMOTE_CODE=1`
(every command) or `trust_remote_code=True` (library); then the code runs, and only then.

prunehead's own pruned folders list model classes in config.json's `auto_map` (`modeling_prunehead.py`, for
plain transformers); prunehead never runs that file (it builds the model from its own classes), so those
entries are not custom code here.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from transformers.utils import cached_file

from ..errors import InputError

ENV = "PRUNEHEAD_TRUST_REMOTE_CODE"
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json")
PROCESSOR_CLASSES = ("AutoFeatureExtractor", "AutoProcessor", "AutoTokenizer")


def _file(spec: str, name: str) -> Path | None:
    """`name` of folder `spec`, or of hub id `spec` through the cache; None when it has none."""
    if Path(spec).is_dir():
        return Path(spec) / name if (Path(spec) / name).is_file() else None
    with contextlib.suppress(OSError, ValueError):
        found = cached_file(spec, name, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
        return Path(found) if found else None
    return None


def custom_code(spec: str | Path) -> list[str]:
    """The files of `spec` that name code to run, as "file (classes)"; empty when there are none."""
    found = []
    for name in (*PROCESSOR_FILES, "config.json"):
        path = _file(str(spec), name)
        try:
            data = json.loads(path.read_text()) if path is not None else None
        except (OSError, ValueError):
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        keys = [k for k in (auto_map if isinstance(auto_map, dict) else {})
                if name != "config.json" or k in PROCESSOR_CLASSES]
        if keys:
            found.append(f"{name} ({', '.join(keys)})")
    return found


def trusted(trust_remote_code: bool | None = None) -> bool:
    """The user's opt-in: `trust_remote_code` when given, else `PRUNEHEAD_TRUST_REMOTE_CODE=1`."""
    return bool(trust_remote_code) if trust_remote_code is not None else os.environ.get(ENV) == "1"


def check_custom_code(spec: str | Path, trust_remote_code: bool | None = None) -> bool:
    """True when `spec` names code to run and the user opted in; False when it names none.

    Raises:
        InputError: `spec` names code to run and the user did not opt in (nothing was run).
    """
    found = custom_code(spec)
    if found and not trusted(trust_remote_code):
        raise InputError(f"{spec} names code to run in {'; '.join(found)}; prunehead never runs code from a "
                         f"model folder unless you opt in: read that code, then set {ENV}=1, or remove "
                         "auto_map from the file to use the standard class")
    return bool(found)


def load_trusted_processor(spec: str) -> tuple[Any, Any]:
    """(feature extractor, tokenizer) of `spec`, running its custom code: only after `check_custom_code`."""
    import transformers as tf

    fe = tok = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        fe = tf.AutoFeatureExtractor.from_pretrained(spec, trust_remote_code=True)
    if _file(spec, "tokenizer_config.json") is not None or _file(spec, "vocab.json") is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            tok = tf.AutoTokenizer.from_pretrained(spec, trust_remote_code=True)
    return fe, tok
