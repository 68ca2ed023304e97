"""Metrics as `evaluate` modules that load without network.

`evaluate.load("accuracy")` fetches a script from the hub. The built-ins here are `evaluate.Metric`
subclasses defined in the package, so `load_metric("accuracy")`, `"wer"` and `"cer"` work offline;
any other name goes through `evaluate.load` (online, as usual).
"""

from __future__ import annotations

import re
import unicodedata

import datasets
import evaluate
import jiwer
import numpy as np

_INT_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
_TEXT_FEATURES = datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})


def normalize_text(text: str) -> str:
    """The form WER is computed on: Unicode NFC, case-folded, letters and digits of any script (é, ü,
    Cyrillic ...) and apostrophes kept, everything else a space, single spaces."""
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())
    return " ".join(re.sub(r"[^\w']+|_", " ", folded).split())


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to the references."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(description="accuracy", citation="", inputs_description="class ids",
                                   features=_INT_FEATURES)

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}


def error_rate(predictions: list[str], references: list[str], unit: str = "word") -> float:
    """Corpus (S + D + I) / N by jiwer, over words or characters; an empty reference adds insertions only."""
    size = (lambda text: len(text.split())) if unit == "word" else len
    pairs = [(r, p) for r, p in zip(references, predictions) if r.strip()]
    extra = sum(size(p) for r, p in zip(references, predictions) if not r.strip())
    if not pairs:
        return float(extra > 0)
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    out = process([r for r, _ in pairs], [p for _, p in pairs])
    return (out.substitutions + out.deletions + out.insertions + extra) / sum(size(r) for r, _ in pairs)


class WordErrorRate(evaluate.Metric):
    """Corpus word error rate (jiwer) of transcripts."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(description="word error rate", citation="", inputs_description="strings",
                                   features=_TEXT_FEATURES)

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return {"wer": error_rate(predictions, references)}


class CharErrorRate(evaluate.Metric):
    """Corpus character error rate (jiwer over characters; spaces count as characters)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(description="character error rate", citation="", inputs_description="strings",
                                   features=_TEXT_FEATURES)

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return {"cer": error_rate(predictions, references, unit="char")}


BUILTIN = {"accuracy": Accuracy, "wer": WordErrorRate, "cer": CharErrorRate}


def load_metric(name: str) -> evaluate.EvaluationModule:
    """A built-in offline metric by name, else `evaluate.load(name)` (needs network for hub metrics)."""
    if name in BUILTIN:
        return BUILTIN[name](keep_in_memory=True)
    return evaluate.load(name)
