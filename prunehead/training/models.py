"""The models and processors training starts from: a model directory, hub id or `arch:<name>`, with the
task head for the labels (kept when it already fits), the feature extractor / tokenizer, and the device."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers as tf
from torch import nn

from .. import surgery
from ..architectures import build_model
from ..data import model_label_names
from ..errors import InputError
from ..families import family_for_type, family_of
from ..heads import PRUNED_HEADS_KEY
from .config import FEATURE_FILES, TOKENIZER_FILES


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence transformers' load reports (unused decoder weights, new heads)."""
    level = tf.logging.get_verbosity()
    tf.logging.set_verbosity_error()
    try:
        yield
    finally:
        tf.logging.set_verbosity(level)


# ----------------------------------------------------------------------------------------------- loading

def load_processor(spec: str) -> tuple[Any, Any]:
    """(feature_extractor, tokenizer) saved with a model directory / hub id; None for what is missing."""
    if spec.startswith("arch:"):
        return None, None
    local = Path(spec).is_dir()
    fe = tok = None
    if not local or any((Path(spec) / f).exists() for f in FEATURE_FILES):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            fe = tf.AutoFeatureExtractor.from_pretrained(spec)
    if not local or any((Path(spec) / f).exists() for f in TOKENIZER_FILES):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            tok = tf.AutoTokenizer.from_pretrained(spec)
    return fe, tok


def char_tokenizer(texts: list[str]) -> tf.Wav2Vec2CTCTokenizer:
    """A character CTC tokenizer for `texts`: <pad> (= CTC blank, id 0), <unk>, "|" between words, chars."""
    from ..metrics import normalize_text

    chars = sorted({c for t in texts for c in normalize_text(t)} - {" "})
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        return tf.Wav2Vec2CTCTokenizer(str(Path(tmp) / "vocab.json"), pad_token="<pad>", unk_token="<unk>",
                                       word_delimiter_token="|", bos_token=None, eos_token=None)


def _label_kwargs(labels: list[str]) -> dict[str, Any]:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {n: i for i, n in enumerate(labels)}}


def _has_head(config: tf.PretrainedConfig, task: str, labels: list[str] | None) -> bool:
    """True if the saved model already has the head this task needs (the same label names, in any id order)."""
    arch = (getattr(config, "architectures", None) or [""])[0]
    if task == "asr":
        return arch.endswith("ForCTC") or arch == "WhisperForConditionalGeneration"
    return arch.endswith(("ForSequenceClassification", "ForAudioClassification")) \
        and sorted(model_label_names(config)) == sorted(labels or [])


def load_model(spec: str, task: str, labels: list[str] | None = None, tokenizer: Any = None) -> nn.Module:
    """The model to fine-tune: as saved if it has this task's head, else its backbone with a new head.

    Pruned models (and models whose head matches) load through `prunehead.load`, keeping their plan.
    """
    head = _label_kwargs(labels) if labels else {}
    ctc = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "ctc_loss_reduction": "mean"} if task == "asr" and tokenizer is not None else {}
    if spec.startswith("arch:"):
        return build_model(spec[5:], task, **(head or {"num_labels": 2}), **ctc)
    config = surgery.load_config(spec)  # pruned folders carry a model_type only prunehead and remote code read
    if _has_head(config, task, labels):
        return surgery.load(spec)
    if getattr(config, PRUNED_HEADS_KEY, None) or getattr(config, "prunehead_pruned_ffn", None):
        raise InputError(f"{spec} is pruned and its head does not fit these labels; fine-tune it on the data "
                         "it was trained for (same label names)")
    with _quiet():
        if task == "asr":
            return tf.AutoModelForCTC.from_pretrained(spec, dtype=torch.float32, ignore_mismatched_sizes=True, **ctc)
        classifier = family_for_type(config.model_type).audio_classifier()
        return classifier.from_pretrained(spec, dtype=torch.float32, ignore_mismatched_sizes=True, **head)


def freeze_feature_encoder_(model: nn.Module) -> None:
    """Stop gradients into the convolutional front end (the model's family knows where it is)."""
    family_of(model).freeze_front_end_(model)


# ----------------------------------------------------------------------------------------------- training

def pick_device(device: str | None = None) -> torch.device:
    """`device`, else CUDA when present, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
