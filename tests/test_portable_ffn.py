"""Folders with pruned FFN neurons (and heads) load with plain transformers' remote code exactly, or not at all."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import transformers as tf

from prunehead import PruningPlan, load, plan_of, prune_, save_pretrained
from prunehead.families import family_for_type
from prunehead.units.ffn import PRUNED_FFN_KEY, ffn_sites, prune_ffn_
from prunehead.portable import FFN_SITES, REMOTE_FILE, SITES
from prunehead.portable.template import remove_neurons_
from tests.conftest import inputs_for, logits, tiny
from tests.test_portable import CASES, audio, private_modules_cache, same_generation, whisper_seq2seq  # noqa: F401 - autouse fixture

I = 64  # intermediate size of every tiny family
# Uneven widths: layer 0 loses 5 neurons, layer 1 all but neuron 17 (select_ffn's floor of 1).
FFN = {0: (0, 7, 8, 30, 63), 1: tuple(i for i in range(I) if i != 17)}
BOTH = PruningPlan(2, 4, {0: (0, 1, 2, 3), 1: (1, 3)}, FFN, I)  # an emptied attention layer as well
FFN_ONLY = PruningPlan(2, 4, {}, FFN, I)
NO_NEURONS = PruningPlan(2, 4, {}, {1: tuple(range(I))}, I)  # a plan file may empty a layer; prune_ffn_ allows it


def jitter_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """N(0, 0.1) noise on every parameter (non-zero biases: a bias sliced or dropped by mistake shows), eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def pruned(case: str, plan: PruningPlan) -> torch.nn.Module:
    arch, task, overrides, _ = CASES[case]
    return prune_ffn_(prune_(jitter_(tiny(arch, task=task, **overrides)), plan), plan)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_same(theirs: torch.nn.Module, ours: torch.nn.Module, arch: str) -> None:
    inputs = inputs_for(arch)
    torch.testing.assert_close(logits(theirs, inputs), logits(ours, inputs), atol=0, rtol=0)
    assert count(theirs) == count(ours)


@pytest.mark.parametrize("plan", [BOTH, FFN_ONLY], ids=["heads-and-ffn", "ffn-only"])
@pytest.mark.parametrize("case", CASES)
def test_remote_code_loads_ffn_pruned_folders_exactly(tmp_path, case, plan):
    arch, _, _, auto = CASES[case]
    model = pruned(case, plan)
    save_pretrained(model, tmp_path / "m")
    theirs, info = auto.from_pretrained(tmp_path / "m", trust_remote_code=True, output_loading_info=True)
    assert type(theirs).__module__.startswith("transformers_modules")  # the folder's code, not prunehead's
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    assert plan_of(theirs) == plan  # per-layer widths agree with the config's record
    assert [s.intermediate.out_features for s in ffn_sites(theirs)] == [I - 5, 1]
    assert_same(theirs, load(tmp_path / "m"), arch)
    assert_same(theirs, model, arch)  # and both equal the model that was saved


def test_a_layer_left_without_neurons_loads_exactly_and_quietly(tmp_path, recwarn):
    model = pruned("wav2vec2-audio-classification", NO_NEURONS)
    save_pretrained(model, tmp_path / "m")
    theirs = tf.AutoModelForAudioClassification.from_pretrained(tmp_path / "m", trust_remote_code=True)
    assert ffn_sites(theirs)[1].output.weight.shape == (32, 0)
    assert_same(theirs, model, "wav2vec2-tiny")
    assert not [w for w in recwarn if "zero-element" in str(w.message)]  # no re-initialisation of empty weights


def test_whisper_generation_with_pruned_heads_and_neurons(tmp_path):
    model = prune_ffn_(prune_(jitter_(whisper_seq2seq()), BOTH), BOTH)
    save_pretrained(model, tmp_path / "w")
    theirs, ours = same_generation(tmp_path / "w")
    assert count(theirs) == count(ours) == count(model)


def test_audio_classification_pipeline_with_pruned_heads_and_neurons(tmp_path):
    save_pretrained(pruned("wav2vec2-audio-classification", BOTH), tmp_path / "m")
    extractor = tf.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    extractor.save_pretrained(tmp_path / "m")
    got = tf.pipeline("audio-classification", model=str(tmp_path / "m"), trust_remote_code=True)(audio(), top_k=3)
    model = load(tmp_path / "m")
    probs = logits(model, dict(extractor(audio(), sampling_rate=16_000, return_tensors="pt"))).softmax(-1)[0]
    expected = {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}
    got = {r["label"]: r["score"] for r in got}
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), atol=1e-6)


def test_a_remote_model_saved_again_by_transformers_keeps_its_neurons(tmp_path):
    save_pretrained(pruned("bert-sequence-classification", BOTH), tmp_path / "m")
    remote = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "m", trust_remote_code=True)
    remote.save_pretrained(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["model_type"] == "prunehead-bert" and (tmp_path / "again" / REMOTE_FILE).exists()
    assert config[PRUNED_FFN_KEY] == {"0": list(FFN[0]), "1": list(FFN[1])}
    assert_same(load(tmp_path / "again"), remote, "bert-tiny")


@pytest.mark.parametrize("trust", [None, False])
def test_plain_transformers_refuses_an_ffn_pruned_folder(tmp_path, trust):
    save_pretrained(pruned("wav2vec2-audio-classification", FFN_ONLY), tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "prunehead-wav2vec2"
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        tf.AutoModelForAudioClassification.from_pretrained(tmp_path / "m", trust_remote_code=trust)
    with pytest.raises(ValueError):
        tf.AutoConfig.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("case", ["wav2vec2-audio-classification", "whisper-encoder-classification",
                                  "bert-sequence-classification"])
def test_the_transformers_class_itself_refuses_shrunk_feed_forward_layers(tmp_path, case):
    """Named directly (no auto class, no model_type check), the class meets narrower FFN weights: an error."""
    model = pruned(case, FFN_ONLY)
    save_pretrained(model, tmp_path / "m")
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        type(model).from_pretrained(tmp_path / "m")


def test_wavlm_stays_unportable_with_pruned_neurons(tmp_path):
    plan = PruningPlan(2, 4, {1: (2,)}, FFN, I)
    with pytest.warns(UserWarning, match="prunehead.load only"):
        save_pretrained(prune_ffn_(prune_(tiny("wavlm-tiny"), plan), plan), tmp_path / "m")
    assert not (tmp_path / "m" / REMOTE_FILE).exists()
    with pytest.raises(ValueError):
        tf.AutoModelForAudioClassification.from_pretrained(tmp_path / "m", trust_remote_code=True)
    assert plan_of(load(tmp_path / "m")) == plan


def test_the_template_removes_the_same_neurons_as_prune_ffn():
    """The remote code's slicing (original ids) equals torch-pruning's, weight for weight, before any load."""
    dense = jitter_(tiny("hubert-tiny"))
    ours = prune_ffn_(copy.deepcopy(dense), FFN_ONLY)
    theirs = copy.deepcopy(dense)
    remove_neurons_(theirs, "hubert", {str(l): list(ids) for l, ids in FFN.items()})
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(theirs.state_dict()[key], value, atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("model_type", sorted(SITES))
def test_the_template_ffn_layout_is_the_familys(model_type):
    assert FFN_SITES.keys() == SITES.keys()
    assert FFN_SITES[model_type] in family_for_type(model_type).ffn_paths
