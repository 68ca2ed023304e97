"""Tasks: per-sample objectives against hand computations, metrics against known answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jiwer
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunehead.errors import InputError
from prunehead.metrics import load_metric, normalize_text
from prunehead.tasks import get_task, infer_task
from prunehead.training.models import char_tokenizer
from tests.conftest import tiny


class FixedLogits(nn.Module):
    """A stand-in model that returns given logits whatever the input (one row per sample)."""

    def __init__(self, logits: torch.Tensor, id2label: dict[int, str] | None = None):
        super().__init__()
        self.logits = logits
        self.weight = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(id2label=id2label or {}, pad_token_id=0, is_encoder_decoder=False)

    def forward(self, input_values: torch.Tensor, **_: object) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits[input_values[:, 0].long()])


def test_cross_entropy_per_sample_is_minus_log_softmax_of_gold():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    loss = get_task("ks").objective(SimpleNamespace(logits=logits), {"labels": torch.tensor([1, 2])})
    expected = [math.log(sum(math.exp(v) for v in row)) - row[g] for row, g in zip(logits.tolist(), [1, 2])]
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_ctc_objective_per_sample_matches_unpadded_single_runs():
    tok = char_tokenizer(["abc", "ba"])
    model = tiny("wav2vec2-tiny", task="asr", vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    task = get_task("asr", model, tok)
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(8000, generator=g), torch.randn(5000, generator=g)]
    texts = ["abc ba", "ab"]
    padded = {"input_values": torch.stack([waves[0], F.pad(waves[1], (0, 3000))]),
              "attention_mask": torch.tensor([[1] * 8000, [1] * 5000 + [0] * 3000]),
              "labels": torch.tensor([tok(texts[0]).input_ids, tok(texts[1]).input_ids + [-100] * 4])}
    with torch.no_grad():
        batch_loss = task.objective(model(**task.model_inputs(padded)), padded)
        for i in range(2):
            ids = torch.tensor([tok(texts[i]).input_ids])
            logits = model(input_values=waves[i][None]).logits  # (1, T, V)
            single = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), ids, [logits.shape[1]], [ids.shape[1]],
                                blank=0, reduction="sum") / ids.shape[1]
            torch.testing.assert_close(batch_loss[i], single, rtol=1e-4, atol=1e-4)


def test_ctc_impossible_alignment_gives_zero_not_inf():
    tok = char_tokenizer(["ab"])
    model = tiny("wav2vec2-tiny", task="asr", vocab_size=len(tok), pad_token_id=0)
    batch = {"input_values": torch.randn(1, 400), "labels": torch.tensor([tok("ab" * 20).input_ids])}
    loss = get_task("asr", model, tok).objective(model(input_values=batch["input_values"]), batch)
    assert loss.tolist() == [0.0]


def test_greedy_ctc_decoding_and_wer():
    tok = char_tokenizer(["ab"])  # <pad>=0 <unk>=1 |=2 '=... a b
    a, b, sep = tok.convert_tokens_to_ids(["a", "b", "|"])
    frames = [a, a, 0, a, b, sep, b, b, 0]  # -> "aab b" with repeats collapsed across the blank
    logits = F.one_hot(torch.tensor([frames]), len(tok)).float()  # (1, T, V)
    model = FixedLogits(logits)
    task = get_task("asr", model, tok)
    labels = torch.tensor([tok("aab a").input_ids])
    result = task.evaluate(model, [{"input_values": torch.zeros(1, 1), "labels": labels}], progress=False)
    assert result["wer"] == pytest.approx(0.5) and result["accuracy"] == pytest.approx(0.5)
    assert result["samples"] == 1


def test_intent_task_reports_slot_and_intent_accuracy():
    names = {0: "on|lights|kitchen", 1: "off|lights|kitchen", 2: "on|music|none"}
    preds = torch.tensor([0, 0, 2, 1])  # sample i predicts class preds[i]
    model = FixedLogits(F.one_hot(preds, 3).float(), names)
    gold = torch.tensor([0, 1, 0, 1])
    batch = {"input_values": torch.arange(4.0)[:, None], "labels": gold}
    result = get_task("ic").evaluate(model, [batch], progress=False)
    assert result["intent_accuracy"] == result["accuracy"] == 0.5
    assert result["action_accuracy"] == 0.75  # on/on, on/off, on/on, off/off
    assert result["object_accuracy"] == 0.75  # music vs lights once
    assert result["location_accuracy"] == 0.75
    assert result["slot_accuracy"] == pytest.approx(0.75)


def test_metrics_load_offline_and_match_known_values():
    assert load_metric("accuracy").compute(predictions=[1, 2, 3, 4], references=[1, 2, 0, 0]) == {"accuracy": 0.5}
    refs, hyps = ["the cat sat", "a dog"], ["the bat sat down", "a dog"]
    wer = load_metric("wer").compute(predictions=hyps, references=refs)["wer"]
    assert wer == pytest.approx(2 / 5) == pytest.approx(jiwer.wer(refs, hyps))
    assert load_metric("cer").compute(predictions=["abd"], references=["abc"])["cer"] == pytest.approx(1 / 3)
    assert normalize_text("Hello, World!  It's") == "hello world it's"


def test_infer_and_get_task():
    assert infer_task(tiny("wav2vec2-tiny", task="asr", vocab_size=8)) == "asr"
    assert infer_task(tiny("wav2vec2-tiny", num_labels=2)) == "ks"
    ic = tiny("wav2vec2-tiny", num_labels=2, id2label={0: "on|lights|none", 1: "off|lights|none"})
    assert infer_task(ic) == "ic"
    with pytest.raises(InputError, match="unknown task 'kws'; choose one of: ks, sid, ic, asr"):
        get_task("kws")
    with pytest.raises(InputError, match="needs its model"):
        get_task("asr").objective(SimpleNamespace(logits=torch.zeros(1, 3, 4)),
                                  {"labels": torch.tensor([[1]]), "attention_mask": torch.ones(1, 10)})


@pytest.mark.slow
def test_whisper_generate_transcribes_librispeech_clip(shared):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from prunehead.data import read_audio

    path = shared / "models" / "whisper-tiny.en"
    model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    processor = WhisperProcessor.from_pretrained(path)
    wave = read_audio(shared / "data" / "libri-1088-134315-0000.wav")
    features = processor(wave, sampling_rate=16000, return_tensors="pt")
    text = processor.tokenizer.batch_decode(model.generate(**features, max_new_tokens=128),
                                            skip_special_tokens=True)[0]
    task = get_task("asr", model, processor.tokenizer)
    batch = {**features, "labels": processor.tokenizer([text], return_tensors="pt").input_ids}
    result = task.evaluate(model, [batch], progress=False)
    assert result["wer"] == 0.0 and len(text.split()) > 20
    with torch.no_grad():
        assert float(task.objective(model(**task.model_inputs(batch)), batch)[0]) < 1.0
