"""Class names: merge them across joined sources, read them from a data set, renumber to a model's order."""

from __future__ import annotations

import re
from typing import Any

import datasets
import numpy as np

from ..errors import DataError
from .sources import Source


def merged_label_names(sources: list[Source]) -> tuple[str, ...]:
    """Fixed orders first (in spec order), then any other names sorted."""
    names: list[str] = []
    for s in sources:
        names += [n for n in s.label_names if n not in names]
    extra = sorted({i.target for s in sources for i in s.items} - set(names))
    return (*names, *extra)


def model_label_names(config: Any) -> list[str]:
    """A model's class names in id order (`config.id2label[0]`, `[1]`, ...), whatever order config.json
    lists them in: a config written with sorted string keys lists "10" before "2"."""
    id2label = getattr(config, "id2label", None) or {}
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise DataError(f"the model's id2label has non-integer ids {sorted(map(str, id2label))[:4]}; "
                        "fix config.json (ids 0..K-1)") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(f"the model's id2label ids are {sorted(by_id)[:6]}, not 0..{len(by_id) - 1}; "
                        "fix config.json (ids 0..K-1)")
    return [by_id[i] for i in range(len(by_id))]


def label_names(dataset: datasets.Dataset) -> list[str]:
    """Class names of a classification dataset (index = label id)."""
    feature = dataset.features.get("label")
    if not isinstance(feature, datasets.ClassLabel):
        raise DataError("this data set has no class labels (it holds transcripts); use a classification data set")
    return list(feature.names)


def align_labels(dataset: datasets.Dataset, names: list[str]) -> datasets.Dataset:
    """Renumber `label` to a model's class order `names` (matched by name); unnamed LABEL_i keep ids."""
    own = label_names(dataset)
    if own == names:
        return dataset
    if all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        if len(own) > len(names):
            raise DataError(f"the data has {len(own)} classes but the model only {len(names)}; use matching data")
        return dataset
    mapping = np.array([names.index(n) if n in names else -1 for n in own])
    new = mapping[np.asarray(dataset["label"])]
    if (new < 0).any():
        unknown = sorted({own[i] for i in np.asarray(dataset["label"])[new < 0]})
        raise DataError(f"labels {unknown} of the data are not among the model's labels {names}; "
                        "evaluate on data with the model's classes")
    dataset = dataset.remove_columns("label")
    return dataset.add_column("label", new.tolist(), feature=datasets.ClassLabel(names=names)).with_format("numpy")
