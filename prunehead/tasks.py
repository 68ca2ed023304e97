"""Tasks: what KS / SID / IC / ASR differ in, the per-sample objective and the metric.

A batch is `dict[str, Tensor]`: the model's inputs (`input_values`, `input_features` or `input_ids`,
optionally `attention_mask`) and `labels` ((B,) class ids, or (B, T) token ids padded with -100 for ASR).
Objectives follow method.md §1.5: cross-entropy against the gold label per sample; CTC per sample divided
by the target length (blank = pad_token_id, zero_infinity). Metrics: accuracy; for IC also per-slot
accuracy; for ASR WER (greedy CTC decoding, or `generate` for Whisper) and accuracy = 1 - WER.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from .progress import bar

from .checks import eval_mode
from .errors import InputError
from .metrics import load_metric, normalize_text
from .precision import autocast
from .scorers.base import model_device, to_device

TASKS = ("ks", "sid", "ic", "asr")
IC_SLOTS = ("action", "object", "location")

Batch = dict[str, torch.Tensor]


def is_seq2seq(model: nn.Module | None) -> bool:
    """True for encoder-decoder models (Whisper generation)."""
    return model is not None and bool(getattr(model.config, "is_encoder_decoder", False)) \
        and hasattr(model, "generate") and not type(model).__name__.endswith("ForAudioClassification")


class Task:
    """Classification (KS, SID): one label per utterance, cross-entropy objective, accuracy."""

    def __init__(self, name: str, model: nn.Module | None = None, tokenizer: Any = None):
        self.name, self.model, self.tokenizer = name, model, tokenizer

    def model_inputs(self, batch: Batch) -> Batch:
        """The batch without labels: what `model(**inputs)` takes."""
        return {k: v for k, v in batch.items() if k != "labels"}

    def objective(self, outputs: Any, batch: Batch) -> torch.Tensor:
        """Per-sample cross-entropy against the gold label. (B, C) logits -> (B,)."""
        return F.cross_entropy(outputs.logits.float(), batch["labels"], reduction="none")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], progress: bool = True,
                 dtype: str = "float32") -> dict[str, float]:
        """Accuracy and mean loss over `batches` (one forward pass per batch, eval mode).

        `dtype` ("float32" | "bfloat16" | "float16") autocasts the forward passes (prunehead.precision);
        the loss is computed from float32 logits.
        """
        device = model_device(model)
        preds, refs, losses = [], [], []
        for batch in bar(batches, desc=f"eval {self.name}", enable=progress, leave=False):
            batch = to_device(batch, device)
            with autocast(dtype, device), eval_mode(model):  # the caller's train / eval mode is kept
                outputs = model(**self.model_inputs(batch))
            losses += self.objective(outputs, batch).tolist()
            preds += outputs.logits.argmax(-1).tolist()
            refs += batch["labels"].tolist()
        if not refs:
            raise InputError("nothing to evaluate: the data set gave no batches")
        result = load_metric("accuracy").compute(predictions=preds, references=refs)
        return {**self._extra(model, preds, refs), **result, "loss": sum(losses) / len(losses),
                "samples": len(refs)}

    def _extra(self, model: nn.Module, preds: list[int], refs: list[int]) -> dict[str, float]:
        return {}


class IntentTask(Task):
    """IC: one product label "action|object|location"; reports per-slot and full-intent accuracy."""

    def _extra(self, model: nn.Module, preds: list[int], refs: list[int]) -> dict[str, float]:
        id2label = model.config.id2label
        split = [(id2label[p].split("|"), id2label[r].split("|")) for p, r in zip(preds, refs)]
        out = {f"{slot}_accuracy": sum(p[i] == r[i] for p, r in split) / len(split)
               for i, slot in enumerate(IC_SLOTS)}
        out["slot_accuracy"] = sum(out.values()) / len(IC_SLOTS)
        out["intent_accuracy"] = sum(p == r for p, r in zip(preds, refs)) / len(refs)
        return out


class ASRTask(Task):
    """ASR: CTC models (per-sample CTC / target length; greedy decoding) or Whisper (token CE; generate).

    The task must be bound to its model (`get_task("asr", model, tokenizer)`): CTC needs the model's
    frame lengths and blank id, Whisper its decoder start token; decoding needs the tokenizer.
    """

    def _model(self) -> nn.Module:
        if self.model is None:
            raise InputError("the ASR task needs its model: use get_task('asr', model, tokenizer)")
        return self.model

    def model_inputs(self, batch: Batch) -> Batch:
        inputs = super().model_inputs(batch)
        if is_seq2seq(self.model) and "labels" in batch:
            inputs["decoder_input_ids"] = self._shift(self._decoder_labels(batch))  # (B, T)
        return inputs

    def _decoder_labels(self, batch: Batch) -> torch.Tensor:
        """Labels without a leading decoder-start token (the model prepends it)."""
        labels, start = batch["labels"], self._model().config.decoder_start_token_id
        return labels[:, 1:] if bool((labels[:, 0] == start).all()) else labels

    def _shift(self, labels: torch.Tensor) -> torch.Tensor:
        config = self._model().config
        shifted = torch.full_like(labels, config.decoder_start_token_id)
        shifted[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] < 0, config.pad_token_id)
        return shifted

    def frame_lengths(self, batch: Batch, frames: int) -> torch.Tensor:
        """Valid output frames per sample: (B,)."""
        B = batch["labels"].shape[0]
        mask = batch.get("attention_mask")
        if mask is None:
            return torch.full((B,), frames, dtype=torch.long)
        lengths = self._model()._get_feat_extract_output_lengths(mask.sum(-1))
        return lengths.long().clamp(max=frames).cpu()

    def objective(self, outputs: Any, batch: Batch) -> torch.Tensor:
        """Per-sample loss (B,): CTC / target length, or mean token cross-entropy for Whisper."""
        logits = outputs.logits.float()  # (B, T, V)
        if is_seq2seq(self.model):
            labels = self._decoder_labels(batch)  # (B, T)
            ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")  # (B, T)
            return ce.sum(-1) / (labels >= 0).sum(-1).clamp(min=1)
        labels = batch["labels"]
        valid = labels >= 0
        target_lengths = valid.sum(-1)  # (B,)
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # (T, B, V)
        loss = F.ctc_loss(log_probs, labels[valid], self.frame_lengths(batch, logits.shape[1]),
                          target_lengths.cpu(), blank=self._model().config.pad_token_id,
                          reduction="none", zero_infinity=True)  # (B,)
        return loss / target_lengths.clamp(min=1)

    def _tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise InputError("ASR evaluation needs the model's tokenizer; save it beside the model "
                             "(vocab.json / tokenizer.json)")
        return self.tokenizer

    def transcribe(self, model: nn.Module, batch: Batch, outputs: Any = None) -> list[str]:
        """Greedy transcripts of one batch (argmax CTC, or `generate` for Whisper); reuses CTC `outputs`."""
        tok = self._tokenizer()
        if is_seq2seq(model):
            ids = model.generate(input_features=batch["input_features"], max_new_tokens=128)
            return tok.batch_decode(ids, skip_special_tokens=True)
        logits = (outputs or model(**Task.model_inputs(self, batch))).logits  # (B, T, V)
        ids = logits.argmax(-1)  # (B, T)
        lengths = self.frame_lengths(batch, ids.shape[1])
        ids = [row[:n].tolist() for row, n in zip(ids, lengths)]
        return tok.batch_decode(ids)  # groups repeats, drops the blank (= pad) token

    def references(self, batch: Batch) -> list[str]:
        """The batch's transcripts, decoded from its labels."""
        labels = batch["labels"]
        ids = [row[row >= 0].tolist() for row in labels]
        tok = self._tokenizer()
        kwargs = {} if is_seq2seq(self.model) else {"group_tokens": False}
        return tok.batch_decode(ids, skip_special_tokens=True, **kwargs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], progress: bool = True,
                 dtype: str = "float32") -> dict[str, float]:
        """WER, CER, accuracy = 1 - WER (HIB paper §4) and mean loss; `dtype` as for `Task.evaluate`."""
        if self.model is None:
            self.model = model
        device = model_device(model)
        hyps, refs, losses = [], [], []
        for batch in bar(batches, desc="eval asr", enable=progress, leave=False):
            batch = to_device(batch, device)
            with autocast(dtype, device), eval_mode(model):
                outputs = model(**self.model_inputs(batch))
                transcripts = self.transcribe(model, batch, outputs)
            losses += self.objective(outputs, batch).tolist()
            hyps += [normalize_text(t) for t in transcripts]
            refs += [normalize_text(t) for t in self.references(batch)]
        if not refs:
            raise InputError("nothing to evaluate: the data set gave no batches")
        wer = load_metric("wer").compute(predictions=hyps, references=refs)["wer"]
        cer = load_metric("cer").compute(predictions=hyps, references=refs)["cer"]
        return {"wer": wer, "cer": cer, "accuracy": 1.0 - wer, "loss": sum(losses) / len(losses),
                "samples": len(refs)}


def get_task(name: str, model: nn.Module | None = None, tokenizer: Any = None) -> Task:
    """The task called `name` (one of TASKS); ASR needs `model` and, to evaluate, `tokenizer`."""
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    cls = {"ic": IntentTask, "asr": ASRTask}.get(name, Task)
    return cls(name, model, tokenizer)


def infer_task(model: nn.Module) -> str:
    """"asr" for CTC and Whisper generation models, "ic" for "action|object|location" labels, else "ks"."""
    saved_as = (getattr(model.config, "architectures", None) or [""])[0]  # an ONNX graph's class
    if type(model).__name__.endswith("ForCTC") or saved_as.endswith("ForCTC") or is_seq2seq(model):
        return "asr"
    return classification_task(list((getattr(model.config, "id2label", None) or {}).values()))


def classification_task(names: list[str]) -> str:
    """"ic" if every class name is a product label "action|object|location", else "ks"."""
    return "ic" if names and all(str(n).count("|") == 2 for n in names) else "ks"
