"""Batches out: the feature extractor a model implies, collation of padded model inputs and labels."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import datasets
import numpy as np
import torch

from ..errors import InputError
from .audio import DEFAULT_RATE


def default_feature_extractor(config: Any) -> Any:
    """The feature extractor a model config implies (used when a model directory ships none): its family's."""
    from ..errors import UnsupportedModelError
    from ..families import family_for_type

    try:
        family = family_for_type(config.model_type)
    except UnsupportedModelError:
        raise InputError(f"no default feature extractor for model type {config.model_type!r}; "
                         "save the model's feature extractor beside it") from None
    return family.feature_extractor(config, DEFAULT_RATE)


def split_processor(obj: Any) -> tuple[Any, Any]:
    """(feature_extractor, tokenizer) from a processor, a feature extractor, a tokenizer, a model or a pair."""
    import transformers as tf

    if isinstance(obj, tuple):
        return obj
    if isinstance(obj, tf.PreTrainedModel):
        return default_feature_extractor(obj.config), None
    if isinstance(obj, tf.PreTrainedTokenizerBase):
        return None, obj
    if hasattr(obj, "feature_extractor"):
        return obj.feature_extractor, getattr(obj, "tokenizer", None)
    return obj, None


def _order(dataset: datasets.Dataset, batch_size: int, shuffle: bool, seed: int, equal_length: bool) -> list[list[int]]:
    n = len(dataset)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    if not equal_length:
        return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    lengths = dataset["length"]
    buckets: dict[int, list[int]] = {}
    for i in order:
        buckets.setdefault(int(lengths[i]), []).append(int(i))
    return [b[i:i + batch_size] for b in buckets.values() for i in range(0, len(b), batch_size)]


def _text_labels(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    if tokenizer is None:
        raise InputError("ASR batches need the model's tokenizer; pass a processor with a tokenizer")
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_attention_mask=True)
    return enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)  # (B, T_max)


def collate(rows: dict[str, Any], feature_extractor: Any, tokenizer: Any = None) -> dict[str, torch.Tensor]:
    """One batch from a slice of a dataset: model inputs (+ attention_mask if the extractor makes one), labels."""
    import transformers as tf

    waves = list(rows["audio"])
    padding = {} if isinstance(feature_extractor, tf.WhisperFeatureExtractor) else {"padding": "longest"}
    feats = feature_extractor(waves, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt", **padding)
    batch = {k: v for k, v in feats.items() if isinstance(v, torch.Tensor)}
    if "label" in rows:
        batch["labels"] = torch.as_tensor(np.asarray(rows["label"]), dtype=torch.long)  # (B,)
    elif "text" in rows:
        batch["labels"] = _text_labels(tokenizer, [str(t) for t in rows["text"]])
    return batch


class _Collated(torch.utils.data.Dataset):
    """Batch i of a fixed order, collated when asked for (in a DataLoader worker when there are workers).

    `augment` perturbs each clip with a generator seeded by (seed, i, position in the batch), whichever
    process builds it. `shard=(rank, world)` keeps the rows rank::world of each batch (data-parallel
    training) and adds `weight` (1 per row; a shard left empty gets the batch's first row at weight 0, so
    every process runs a step) and `global_size` (rows of the whole batch).
    """

    def __init__(self, dataset: datasets.Dataset, order: list[list[int]], fe: Any, tok: Any,
                 augment: Callable | None = None, seed: int = 0, shard: tuple[int, int] | None = None):
        self.dataset, self.order, self.fe, self.tok = dataset, order, fe, tok
        self.augment, self.seed, self.shard = augment, seed, shard

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rows, positions, weight = self.order[i], list(range(len(self.order[i]))), None
        if self.shard is not None:
            rank, world = self.shard
            positions = positions[rank::world]
            weight = torch.ones(len(positions)) if positions else torch.zeros(1)  # (b,)
            positions = positions or [0]
        picked = self.dataset[[rows[j] for j in positions]]
        if self.augment is not None:
            audio = [self.augment.clip(np.asarray(w, dtype=np.float32), np.random.default_rng((self.seed, i, j, 1)))
                     for w, j in zip(picked["audio"], positions)]
            picked = {**picked, "audio": audio}
        batch = collate(picked, self.fe, self.tok)
        if weight is not None:
            batch |= {"weight": weight, "global_size": torch.tensor(len(rows))}
        return batch


def make_batches(dataset: datasets.Dataset, model_or_processor: Any, batch_size: int, shuffle: bool = False,
                 seed: int = 0, equal_length: bool = False, workers: int = 0,
                 pin_memory: bool = False, augment: Any = None,
                 shard: tuple[int, int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Yield padded batches (`dict[str, Tensor]`) over `dataset`.

    Args:
        model_or_processor: a processor, feature extractor, (feature_extractor, tokenizer) pair (the
            tokenizer encodes ASR labels), or a model (its default feature extractor is used).
        shuffle, seed: a seeded permutation of the rows.
        equal_length: only rows of identical length share a batch (no padding at all).
        workers: feature extraction in this many DataLoader worker processes (0: in this process); the
            batches and their order are the same either way.
        pin_memory: page-locked batches, for fast non-blocking copies to a GPU.
        augment: perturbs each clip (`prunehead.data.augment.Augment`), seeded by (seed, batch, position).
        shard: (rank, world): only this process's rows of each batch, with `weight` and `global_size`
            (see `_Collated`); the batches are the same whatever the world size.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    if workers < 0:
        raise InputError(f"workers must be 0 or more, not {workers}")
    fe, tok = split_processor(model_or_processor)
    order = _order(dataset, batch_size, shuffle, seed, equal_length)
    batches = _Collated(dataset, order, fe, tok=tok, augment=augment, seed=seed, shard=shard)
    if workers == 0 and not pin_memory:
        yield from (batches[i] for i in range(len(batches)))
        return
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers,
                                         pin_memory=pin_memory and torch.cuda.is_available(),
                                         generator=torch.Generator().manual_seed(seed))  # seeded worker RNGs
    yield from loader
