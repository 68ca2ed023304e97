"""Pruned folders load with plain transformers (remote code) exactly, or not at all; hub ids; old layouts; dtypes."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

from prunehead import PruningPlan, load, plan_of, prune_, save_pretrained
from prunehead.architectures import build_config
from prunehead.errors import InputError
from prunehead.portable import REMOTE_FILE
from tests.conftest import inputs_for, tiny

# 2 layers x 4 heads: layer 0 loses every head (bias-only block), layer 1 keeps heads 0 and 2.
UNEVEN = PruningPlan(2, 4, {0: (0, 1, 2, 3), 1: (1, 3)})
EMPTIED_ONLY = PruningPlan(2, 4, {1: (0, 1, 2, 3)})  # the case plain transformers would load silently wrong

CASES = {  # name: (architecture, task, config overrides, auto class)
    "wav2vec2-audio-classification": ("wav2vec2-tiny", "ks", {}, tf.AutoModelForAudioClassification),
    "hubert-ctc": ("hubert-tiny", "asr", {"vocab_size": 12}, tf.AutoModelForCTC),
    "data2vec-audio-classification": ("data2vec-audio-tiny", "ks", {}, tf.AutoModelForAudioClassification),
    "whisper-encoder-classification": ("whisper-encoder-tiny", "ks", {}, tf.AutoModelForAudioClassification),
    "bert-sequence-classification": ("bert-tiny", "ks", {}, tf.AutoModelForSequenceClassification),
}


@pytest.fixture(autouse=True)
def private_modules_cache(tmp_path, monkeypatch):
    """Remote code is copied into a per-test modules cache, and its modules are forgotten afterwards."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("transformers_modules"):
            del sys.modules[name]


def outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def saved(tmp_path: Path, arch: str, task: str, overrides: dict, plan: PruningPlan, name: str = "pruned") -> Path:
    folder = tmp_path / name
    save_pretrained(prune_(tiny(arch, task=task, **overrides), plan), folder)
    return folder


@pytest.mark.parametrize("case", CASES)
def test_remote_code_loads_exactly_what_prunehead_loads(tmp_path, case):
    arch, task, overrides, auto = CASES[case]
    folder = saved(tmp_path, arch, task, overrides, UNEVEN)
    ours = load(folder)
    theirs, info = auto.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    assert type(theirs).__module__.startswith("transformers_modules")  # the folder's code, not ours
    assert not any(info.values()), info  # nothing missing, unexpected (placeholders are expected) or mismatched
    assert plan_of(theirs) == UNEVEN
    inputs = inputs_for(arch)
    torch.testing.assert_close(outputs(theirs, inputs), outputs(ours, inputs), atol=0, rtol=0)
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())


def test_automodel_gives_the_pruned_backbone(tmp_path):
    folder = saved(tmp_path, "wav2vec2-tiny", "ks", {}, UNEVEN)
    backbone = tf.AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(backbone).__name__ == "PrunedWav2Vec2Model"
    inputs = inputs_for("wav2vec2-tiny")
    with torch.no_grad():
        torch.testing.assert_close(backbone(**inputs).last_hidden_state,
                                   load(folder).wav2vec2(**inputs).last_hidden_state, atol=0, rtol=0)


def test_modeling_file_imports_only_torch_and_transformers(tmp_path):
    folder = saved(tmp_path, "wav2vec2-tiny", "ks", {}, UNEVEN)
    tree = ast.parse((folder / REMOTE_FILE).read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert roots == {"__future__", "re", "typing", "torch", "transformers"}


@pytest.mark.parametrize("trust", [None, False])
def test_plain_transformers_refuses_a_folder_with_an_emptied_layer(tmp_path, trust):
    folder = saved(tmp_path, "wav2vec2-tiny", "ks", {}, EMPTIED_ONLY)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        tf.AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=trust)
    with pytest.raises(ValueError):
        tf.AutoConfig.from_pretrained(folder)


@pytest.mark.parametrize("case", ["wav2vec2-audio-classification", "whisper-encoder-classification",
                                  "bert-sequence-classification"])
def test_the_transformers_class_itself_refuses_an_emptied_layer(tmp_path, case):
    """Named directly (no auto class, no model_type check) the class meets 0-size placeholders: an error."""
    arch, task, overrides, _ = CASES[case]
    model = tiny(arch, task=task, **overrides)
    folder = saved(tmp_path, arch, task, overrides, EMPTIED_ONLY)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        type(model).from_pretrained(folder)


def test_old_layout_loads_silently_wrong_in_transformers_but_right_in_prunehead(tmp_path):
    """Why the folder must refuse plain loading: main's old layout (plain model_type) re-initialises the layer."""
    folder = saved(tmp_path, "wav2vec2-tiny", "ks", {}, EMPTIED_ONLY)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="wav2vec2")
    config.pop("auto_map")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / REMOTE_FILE).unlink()
    weights = folder / "model.safetensors"  # main's old folders had no 0-size placeholders either
    save_file({k: v for k, v in load_file(weights).items() if v.numel()}, weights, metadata={"format": "pt"})
    inputs = inputs_for("wav2vec2-tiny")
    expected = outputs(prune_(tiny("wav2vec2-tiny"), EMPTIED_ONLY), inputs)
    silently_wrong = tf.AutoModelForAudioClassification.from_pretrained(folder)  # no error: random attention
    assert (outputs(silently_wrong, inputs) - expected).abs().max() > 1e-4
    torch.testing.assert_close(outputs(load(folder), inputs), expected, atol=0, rtol=0)


def test_a_remote_model_saved_by_transformers_keeps_its_code(tmp_path):
    folder = saved(tmp_path, "hubert-tiny", "ks", {}, UNEVEN)
    remote = tf.AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True)
    remote.save_pretrained(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["model_type"] == "prunehead-hubert" and (tmp_path / "again" / REMOTE_FILE).exists()
    inputs = inputs_for("hubert-tiny")
    torch.testing.assert_close(outputs(load(tmp_path / "again"), inputs), outputs(remote, inputs), atol=0, rtol=0)


def test_unpruned_models_are_saved_plain(tmp_path):
    save_pretrained(tiny("bert-tiny"), tmp_path / "dense")
    config = json.loads((tmp_path / "dense" / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config
    assert not (tmp_path / "dense" / REMOTE_FILE).exists()


def whisper_seq2seq() -> tf.WhisperForConditionalGeneration:
    torch.manual_seed(0)
    model = tf.WhisperForConditionalGeneration(build_config("whisper-encoder-tiny")).eval()
    model.generation_config = tf.GenerationConfig(decoder_start_token_id=1, eos_token_id=2, pad_token_id=0,
                                                  bos_token_id=1)
    return model


def test_whisper_generation_with_a_pruned_encoder(tmp_path):
    save_pretrained(prune_(whisper_seq2seq(), UNEVEN), tmp_path / "w")
    same_generation(tmp_path / "w")


def same_generation(folder):
    """Assert that transformers' remote-code Whisper and prunehead.load of `folder` give identical logits and
    generations; returns (theirs, ours)."""
    ours = load(folder)
    theirs = tf.AutoModelForSpeechSeq2Seq.from_pretrained(folder, trust_remote_code=True)
    features = inputs_for("whisper-encoder-tiny")["input_features"]
    decoder = torch.tensor([[1, 5, 7], [1, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_features=features, decoder_input_ids=decoder).logits,
                                   ours(input_features=features, decoder_input_ids=decoder).logits, atol=0, rtol=0)
        settings = dict(max_new_tokens=6, do_sample=False)
        assert torch.equal(theirs.generate(features, **settings), ours.generate(features, **settings))
    return theirs, ours


def audio(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(16_000 * seconds)).astype(np.float32)


def test_audio_classification_pipeline(tmp_path):
    folder = saved(tmp_path, "wav2vec2-tiny", "ks", {}, UNEVEN)
    extractor = tf.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    extractor.save_pretrained(folder)
    run = tf.pipeline("audio-classification", model=str(folder), trust_remote_code=True)
    got = {r["label"]: r["score"] for r in run(audio(), top_k=3)}
    model = load(folder)
    probs = outputs(model, dict(extractor(audio(), sampling_rate=16_000, return_tensors="pt"))).softmax(-1)[0]
    expected = {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), atol=1e-6)


def test_ctc_speech_recognition_pipeline(tmp_path):
    vocab = {"<pad>": 0, "|": 1, **{c: i + 2 for i, c in enumerate("abcdefghij")}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = tf.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), pad_token="<pad>", word_delimiter_token="|")
    folder = saved(tmp_path, "wav2vec2-tiny", "asr", {"vocab_size": 12}, UNEVEN)
    tokenizer.save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    text = tf.pipeline("automatic-speech-recognition", model=str(folder), trust_remote_code=True)(audio(1.0))["text"]
    extractor = tf.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    logits = outputs(load(folder), dict(extractor(audio(1.0), sampling_rate=16_000, return_tensors="pt")))
    assert text == tokenizer.decode(logits.argmax(-1)[0])


def test_text_classification_pipeline(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(95))]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = tf.BertTokenizer(str(tmp_path / "vocab.txt"))
    folder = saved(tmp_path, "bert-tiny", "ks", {}, UNEVEN)
    tokenizer.save_pretrained(folder)
    sentence = "w3 w17 w42 w8"
    got = tf.pipeline("text-classification", model=str(folder), trust_remote_code=True)(sentence, top_k=None)
    probs = outputs(load(folder), dict(tokenizer(sentence, return_tensors="pt"))).softmax(-1)[0]
    assert {r["label"]: round(r["score"], 6) for r in got} == \
        {f"LABEL_{i}": round(float(p), 6) for i, p in enumerate(probs)}


# -- hub ids, offline ---------------------------------------------------------------------------------------


def cache_repo(cache: Path, repo: str, files: Path, revision: str = "0123456789abcdef0123456789abcdef01234567") -> None:
    """Lay out `files` as the cached snapshot of hub repo `repo` (models--org--name/snapshots/<hash>, refs/main)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in files.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    import huggingface_hub.constants as hub

    cache = tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_ids_load_from_the_cache_offline(tmp_path, offline_cache):
    pruned = saved(tmp_path, "data2vec-audio-tiny", "ks", {}, UNEVEN)
    tiny("data2vec-audio-tiny").save_pretrained(tmp_path / "plain")
    cache_repo(offline_cache, "org/pruned", pruned)
    cache_repo(offline_cache, "org/plain", tmp_path / "plain")
    inputs = inputs_for("data2vec-audio-tiny")
    from_hub = load("org/pruned")
    assert plan_of(from_hub) == UNEVEN
    torch.testing.assert_close(outputs(from_hub, inputs), outputs(load(pruned), inputs), atol=0, rtol=0)
    torch.testing.assert_close(outputs(load("org/plain"), inputs), outputs(tiny("data2vec-audio-tiny"), inputs),
                               atol=0, rtol=0)
    remote = tf.AutoModelForAudioClassification.from_pretrained("org/pruned", trust_remote_code=True)
    torch.testing.assert_close(outputs(remote, inputs), outputs(from_hub, inputs), atol=0, rtol=0)
    with pytest.raises(InputError, match="org/missing"):
        load("org/missing")


# -- other layouts and checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_transformers4_pruned_heads_folder_loads_as_pruned(tmp_path, weights):
    """What TextPruner / nn_pruning / bertology wrote: plain model_type, `pruned_heads`, 0-size emptied q/k/v."""
    model = prune_(tiny("bert-tiny"), UNEVEN)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    for name in ("query", "key", "value"):  # transformers 4 kept empty projections in an emptied layer
        state[f"bert.encoder.layer.0.attention.self.{name}.weight"] = torch.zeros(0, 32)
        state[f"bert.encoder.layer.0.attention.self.{name}.bias"] = torch.zeros(0)
    folder = tmp_path / "tf4"
    folder.mkdir()
    if weights.endswith(".safetensors"):
        save_file(state, folder / weights)
    else:  # the pickled format most transformers-4 tools wrote
        torch.save(state, folder / weights)
    config = tiny("bert-tiny").config.to_dict()
    config.update(architectures=["BertForSequenceClassification"], pruned_heads={"0": [0, 1, 2, 3], "1": [3, 1]})
    (folder / "config.json").write_text(json.dumps(config))
    reloaded = load(folder)
    assert plan_of(reloaded) == UNEVEN
    inputs = inputs_for("bert-tiny")
    torch.testing.assert_close(outputs(reloaded, inputs), outputs(model, inputs), atol=0, rtol=0)


def test_plain_folder_with_missing_weights_is_refused_in_one_line(tmp_path):
    tiny("wav2vec2-tiny").save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("classifier")}
    save_file(state, weights)
    with pytest.raises(InputError, match="classifier.bias, classifier.weight") as err:
        load(tmp_path / "m")
    assert "\n" not in str(err.value)


def test_a_pruned_fp16_checkpoint_is_saved_as_fp16_unless_asked(tmp_path):
    tiny("hubert-tiny").half().save_pretrained(tmp_path / "fp16")
    model = load(tmp_path / "fp16")
    assert next(model.parameters()).dtype == torch.float32
    prune_(model, UNEVEN)
    save_pretrained(model, tmp_path / "kept")
    save_pretrained(model, tmp_path / "fp32", dtype=torch.float32)
    assert {v.dtype for v in load_file(tmp_path / "kept" / "model.safetensors").values()} == {torch.float16}
    assert {v.dtype for v in load_file(tmp_path / "fp32" / "model.safetensors").values()} == {torch.float32}
    inputs = inputs_for("hubert-tiny")
    torch.testing.assert_close(outputs(load(tmp_path / "kept"), inputs), outputs(model, inputs), atol=0, rtol=0)
    built = prune_(tiny("hubert-tiny"), UNEVEN)  # built in code: saved in its own dtype
    save_pretrained(built, tmp_path / "built")
    assert {v.dtype for v in load_file(tmp_path / "built" / "model.safetensors").values()} == {torch.float32}


def test_whisper_tiny_en_stays_fp16_when_pruned(tmp_path, shared):
    source = shared / "models" / "whisper-tiny.en"
    model = prune_(load(source), PruningPlan(4, 6, {0: (1, 4), 2: tuple(range(6))}))
    save_pretrained(model, tmp_path / "pruned", source=source)
    assert {v.dtype for v in load_file(tmp_path / "pruned" / "model.safetensors").values()} == {torch.float16}
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["dtype"] == "float16"
    assert (tmp_path / "pruned" / "tokenizer.json").exists()
    assert plan_of(load(tmp_path / "pruned")) == plan_of(model)


@pytest.mark.slow
def test_whisper_tiny_en_speech_recognition_pipeline_with_a_pruned_encoder(tmp_path, shared):
    import re

    import soundfile as sf

    source = shared / "models" / "whisper-tiny.en"
    save_pretrained(prune_(load(source), PruningPlan(4, 6, {1: (2,), 2: (3,)})), tmp_path / "p", source=source)
    wav, _ = sf.read(shared / "data" / "libri-1088-134315-0000.wav", dtype="float32")
    wav = wav[:8 * 16_000]
    run = tf.pipeline("automatic-speech-recognition", model=str(tmp_path / "p"), trust_remote_code=True,
                      dtype=torch.float32)
    assert run.type == "seq2seq_whisper"  # the pipeline sees a Whisper model, not a generic seq2seq one
    text = re.sub(r"<\|[^|]*\|>", "", run(wav, generate_kwargs={"max_new_tokens": 40})["text"]).strip()
    processor = tf.WhisperProcessor.from_pretrained(source)
    ids = load(tmp_path / "p").generate(processor(wav, sampling_rate=16_000, return_tensors="pt").input_features,
                                          max_new_tokens=40)
    assert text == processor.batch_decode(ids, skip_special_tokens=True)[0].strip() and len(text) > 20


def test_recipes_parse_with_tomli_on_python_3_10(monkeypatch, tmp_path):
    """Below 3.11 recipe.py takes its TOML parser from the `tomli` package (pyproject: a 3.10-only dependency)."""
    import dataclasses
    import importlib.util
    import tomllib
    import types

    import prunehead.recipe

    fake = types.ModuleType("tomli")
    fake.loads, fake.TOMLDecodeError = tomllib.loads, tomllib.TOMLDecodeError
    monkeypatch.setitem(sys.modules, "tomli", fake)
    monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
    spec = importlib.util.spec_from_file_location("prunehead._recipe_py310", prunehead.recipe.__file__)
    copy = importlib.util.module_from_spec(spec)  # a separate copy: prunehead.recipe stays as imported
    monkeypatch.setitem(sys.modules, spec.name, copy)
    spec.loader.exec_module(copy)
    assert copy.tomllib is fake and prunehead.recipe.tomllib is tomllib
    shipped = sorted((Path(__file__).parents[1] / "recipes").glob("*.toml"))[0]
    assert dataclasses.asdict(copy.load_recipe(shipped)) == dataclasses.asdict(prunehead.recipe.load_recipe(shipped))
