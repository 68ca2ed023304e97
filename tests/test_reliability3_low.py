"""Issue 26 (reliability round 3), the low items and the model card: each bad input is one clear line
naming the file (or a refusal), never a raw error. Everything written lives in the test's own tmp folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor

from prunehead.errors import DataError, InputError
from tests.conftest import run_main, tiny

LABELS = ("yes", "no")


def _model(folder: Path, **overrides) -> Path:
    model = tiny("wav2vec2-tiny", num_labels=2, id2label=dict(enumerate(LABELS)),
                 label2id={n: i for i, n in enumerate(LABELS)}, **overrides)
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


def _data(root: Path, split: str = "test") -> Path:
    for i, label in enumerate(LABELS):
        (root / split / label).mkdir(parents=True, exist_ok=True)
        sf.write(root / split / label / f"{i}.wav",
                 (0.1 * np.random.default_rng(i).standard_normal(4000)).astype(np.float32), 16000)
    return root


def _edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("r3-low")
    _model(root / "model")
    _data(root / "data")
    return root


# ------------------------------------------------------------------------------------------------ manifests

@pytest.mark.parametrize("rows, message", [
    (["a.wav,yes", "a.wav,no"], r"lists .*a\.wav twice.*row 1.*row 2"),
    (['{"path": "a.wav", "label": {"word": "yes"}}'], "row 1 has a dict"),
    (['{"path": "a.wav", "label": ["yes"]}'], "row 1 has a list"),
    (['{"path": "a.wav", "label": "ye\\u0000s"}'], "row 1 has a NUL"),
], ids=["conflicting-duplicates", "object-label", "list-label", "nul-label"])
def test_manifest_rows_that_cannot_be_labels_are_refused(tmp_path, rows, message):
    from prunehead.data import load_data

    sf.write(tmp_path / "a.wav", np.zeros(4000, np.float32) + 0.1, 16000)
    jsonl = rows[0].startswith("{")
    manifest = tmp_path / ("m.jsonl" if jsonl else "m.csv")
    manifest.write_text("\n".join(rows if jsonl else ["path,label", *rows]) + "\n")
    with pytest.raises(DataError, match=rf"m\.(csv|jsonl).*{message}"):
        load_data(str(manifest), "test")


# ------------------------------------------------------------------------------------------------ model folders

@pytest.mark.parametrize("changes, message", [
    ({"num_attention_heads": 0}, "num_attention_heads = 0"),
    ({"num_attention_heads": 2.7}, "num_attention_heads = 2.7"),
    ({"num_hidden_layers": True}, "num_hidden_layers = True"),
    ({"hidden_size": "32"}, "hidden_size = '32'"),
    ({"hidden_size": 2**20, "intermediate_size": 2**20}, "parameters"),
    ({"architectures": ["pipeline"]}, "names no known model class"),
    ({"prunehead_pruned_heads": {"0": [1.5]}}, "prunehead_pruned_heads"),
    ({"prunehead_pruned_heads": {"0": [True]}}, "prunehead_pruned_heads"),
], ids=["heads-0", "heads-float", "layers-bool", "width-str", "absurd-size", "pipeline", "float-id", "bool-id"])
def test_config_values_are_checked_naming_the_key(tmp_path, changes, message):
    from prunehead import load

    folder = _edit_config(_model(tmp_path / "m"), **changes)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load(folder)


def test_a_config_with_fewer_layers_than_its_weights_is_refused(tmp_path):
    from prunehead import load

    folder = _edit_config(_model(tmp_path / "m"), num_hidden_layers=1)  # the weights hold 2 layers
    with pytest.raises(InputError, match=r"layer\(s\) \[1\].*1 layers"):
        load(folder)


def test_a_pickled_bin_is_refused_without_torchs_advice(tmp_path):
    from prunehead import load

    folder = _model(tmp_path / "m")
    state = load(folder).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save({**state, "extra": Path("not a tensor")}, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="never unpickles") as caught:
        load(folder)
    assert "weights_only=False" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_sharded_index_may_not_name_files_outside_the_folder(tmp_path):
    from prunehead import load

    folder = _model(tmp_path / "inside" / "m")
    (folder / "model.safetensors").rename(tmp_path / "outside.safetensors")
    keys = list(load_outside_keys(tmp_path / "outside.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": dict.fromkeys(keys, "../../outside.safetensors")}))
    with pytest.raises(InputError, match="outside the model folder"):
        load(folder)


def load_outside_keys(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return list(handle.keys())


def test_loading_a_file_instead_of_a_folder_says_so(assets):
    from prunehead import load, save_scores

    scores = assets / "scores.json"
    save_scores(scores, torch.rand(2, 4), "random", "model")
    with pytest.raises(InputError, match=r"scores\.json is a file; pass the model folder"):
        load(scores)


# ------------------------------------------------------------------------------------------------ plan and score files

@pytest.mark.parametrize("changes, message", [
    ({"num_layers": 2.7}, '"num_layers" must be a whole number'),
    ({"num_heads": True}, '"num_heads" must be a whole number'),
    ({"pruned_heads": {"0": [2.7]}}, "head id 2.7"),
    ({"pruned_heads": {"x": [1]}}, "layer 'x'"),
    ({"pruned_heads": {"0": "13"}}, "must be a list"),
], ids=["float-size", "bool-size", "float-id", "bad-layer", "string-ids"])
def test_plan_files_with_non_whole_numbers_are_refused_naming_the_file(tmp_path, changes, message):
    from prunehead.pruning.plan import PruningPlan

    plan = {"format": "prunehead.plan", "version": 1, "num_layers": 2, "num_heads": 4, "pruned_heads": {}, **changes}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(InputError, match=rf"plan\.json.*{message}"):
        PruningPlan.load(tmp_path / "plan.json")


@pytest.mark.parametrize("text, message", [
    ('{"format": "prunehead.scores", "version": 1, "num_layers": 1, "num_heads": 2, "scores": [[1e400, 0.5]]}',
     "NaN or inf"),
    ('{"format": "prunehead.scores", "version": 1, "num_layers": 1, "num_heads": 2, "scores": [[1' + "0" * 400
     + ', 0.5]]}', "float range"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
], ids=["1e400", "huge-int", "deep"])
def test_score_files_with_huge_numbers_or_deep_nesting_name_the_file(tmp_path, text, message):
    from prunehead.pruning.score_files import load_scores

    (tmp_path / "s.json").write_text(text)
    with pytest.raises(InputError, match=rf"s\.json.*{message}"):
        load_scores(tmp_path / "s.json")


# ------------------------------------------------------------------------------------------------ options

@pytest.mark.parametrize("argv, message", [
    (["prune", "--max-drop", "nan"], "finite"),
    (["prune", "--ratio", "nan"], "finite"),
    (["prune", "--seed", "-1"], "'--seed'"),
    (["score", "--seed", "-1"], "'--seed'"),
])
def test_option_values_are_refused_with_the_right_reason(assets, tmp_path, argv, message):
    args = [*argv, "-m", assets / "model", "--out", tmp_path / "o"]
    code, _, err = run_main(*args, "-d", assets / "data", *(["--scorer", "gradient"] if argv[0] == "score" else []))
    assert code == 2 and message in err and "<= 1" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_negative_seed_is_refused_by_the_library(assets):
    from prunehead.workspace import open_workspace

    ws = open_workspace(str(assets / "model"), str(assets / "data"))
    with pytest.raises(InputError, match="--seed"):
        ws.draw(2, seed=-1)


def test_dtype_with_hib_runs_hib_in_float32(assets, tmp_path):
    out = tmp_path / "hib.json"
    with pytest.warns(UserWarning, match="hib always runs in float32"):
        code, _, err = run_main("score", "-m", assets / "model", "-d", assets / "data", "--split", "test", "--scorer",
                                "hib", "--steps", "1", "--samples", "2", "--dtype", "bfloat16", "--out", out)
    assert code == 0 and out.exists(), err
    assert "dtype" not in json.loads(out.read_text())["params"]


def test_export_checks_foreign_files_and_opset_before_tracing(assets, tmp_path, monkeypatch):
    import prunehead.export.pipeline as pipeline

    monkeypatch.setattr(pipeline, "export_onnx", lambda *a, **k: pytest.fail("traced before the checks"))
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_main("export", "onnx", "--model", assets / "model", "--out", out, "--overwrite")
    assert code == 1 and "notes.txt" in err, err
    code, _, err = run_main("export", "onnx", "--model", assets / "model", "--out", tmp_path / "e2", "--opset", "999")
    assert code == 1 and "--opset" in err and not (tmp_path / "e2").exists(), err


def test_a_folder_named_like_the_score_checkpoint_is_refused(assets, tmp_path):
    (tmp_path / "s.json.ckpt").mkdir()
    code, _, err = run_main("score", "-m", assets / "model", "-d", assets / "data", "--scorer", "gradient",
                            "--samples", "2", "--out", tmp_path / "s.json", "--resume")
    assert code == 1 and "s.json.ckpt is a folder" in err and "IsADirectoryError" not in err, err


# ------------------------------------------------------------------------------------------------ models from code

def test_the_gradient_scorer_refuses_a_nan_model():
    from prunehead.scorers import get_scorer
    from tests.conftest import ce, inputs_for

    model = tiny("wav2vec2-tiny")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    batch = {**inputs_for("wav2vec2-tiny"), "labels": torch.tensor([0, 1])}
    with pytest.raises(InputError, match="NaN or infinite weights"):
        get_scorer("gradient").score(model, [batch], ce)


def test_library_calls_keep_the_callers_train_mode(assets):
    import prunehead

    model = prunehead.load(assets / "model").train()
    prunehead.evaluate(model, str(assets / "data"), source=assets / "model")
    prunehead.score(model, prunehead.Data(str(assets / "data"), score_split="test"), prunehead.Ranking("gradient", samples=2))
    prunehead.prune(model, prunehead.Cut.heads(0.25), ranking=torch.rand(2, 4), data=str(assets / "data"))
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("call, message", [
    (lambda a: __import__("prunehead").evaluate(123, str(a / "data")), "expected a model"),
    (lambda a: __import__("prunehead").evaluate(str(a / "model"), 5), "data must be a data spec"),
    (lambda a: __import__("prunehead").select(torch.rand(2, 4), ratio="0.5"), "--ratio must be a number"),
    (lambda a: __import__("prunehead").select(torch.rand(2, 4), ratio=True), "--ratio must be a number"),
], ids=["model-int", "data-int", "ratio-str", "ratio-bool"])
def test_wrong_argument_types_are_named(assets, call, message):
    with pytest.raises(InputError, match=message):
        call(assets)


def test_meta_device_models_are_refused_and_nothing_is_saved(assets, tmp_path):
    import prunehead
    from prunehead.architectures import build_model

    with torch.device("meta"):
        model = build_model("wav2vec2-tiny", num_labels=2)
    with pytest.raises(InputError, match="meta device"):
        prunehead.evaluate(model, str(assets / "data"), source=assets / "model")
    with pytest.raises(InputError, match="meta device"):
        prunehead.save_pretrained(model, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


# ------------------------------------------------------------------------------------------------ full disk

def test_a_full_disk_while_synthesizing_says_so(tmp_path, monkeypatch):
    import prunehead.output_guard as outputs
    from prunehead.errors import DiskFullError
    import prunehead.data.synth as synth

    monkeypatch.setattr(synth, "tts", lambda text, voice, speed=1.0: np.zeros(8000, np.float32) + 0.1)

    def write(*args, **kwargs):
        monkeypatch.setattr(outputs, "free_bytes", lambda where: 0)
        raise sf.LibsndfileError(0, "System error.")  # libsndfile's words for ENOSPC
    monkeypatch.setattr(synth.sf, "write", write)
    with pytest.raises(DiskFullError, match="disk is full.*System error"):
        synth.synthesize("ks", tmp_path / "d", n_per_class=1, workers=1)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ model card

def test_a_pruned_folder_has_a_model_card_the_hub_parses(assets, tmp_path):
    from huggingface_hub import ModelCard

    source = tmp_path / "source"
    _model(source)
    (source / "README.md").write_text("---\nlicense: mit\n---\n# the source model\n")
    scores = tmp_path / "scores.json"
    from prunehead import save_scores

    save_scores(scores, torch.tensor([[0.1, 0.9, 0.2, 0.8], [0.7, 0.3, 0.6, 0.4]]), "hand", "source")
    out = tmp_path / "pruned"
    code, _, err = run_main("prune", "-m", source, "-s", scores, "--ratio", "0.5", "--data", assets / "data", "--out", out)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    card = ModelCard.load(out / "README.md")
    meta = card.data
    assert meta.library_name == "transformers" and meta.pipeline_tag == "audio-classification"
    assert {"pruned", "prunehead"} <= set(meta.tags) and meta.license == "mit"
    assert meta.base_model is None  # a local folder is no Hub id
    results = {r.metric_type: r for r in meta.eval_results}
    assert results["accuracy"].dataset_split == report["data"]["split"] == "test"
    assert results["accuracy"].metric_value == pytest.approx(report["metrics_after"]["accuracy"])
    text = card.text
    assert "trust_remote_code=True" in text and "AutoModelForAudioClassification" in text
    assert "| 0 | 2 of 4 | 0, 2 |" in text and "| 1 | 2 of 4 | 1, 3 |" in text  # the plan in words
    assert f"{report['before']['params']:,}" in text and f"{report['after']['macs']:,}" in text


def test_a_hub_model_is_the_cards_base_model(assets, tmp_path):
    from huggingface_hub import ModelCard

    import prunehead
    from prunehead.pruning.plan import PruningPlan
    from prunehead.portable.card import model_card

    model = prunehead.prune_(prunehead.load(assets / "model"), PruningPlan(2, 4, {0: (1,)}))
    prunehead.save_pretrained(model, tmp_path / "m")
    assert ModelCard.load(tmp_path / "m" / "README.md").data.tags == ["pruned", "prunehead"]  # library saves too
    card = model_card(model, tmp_path / "m", prunehead.plan_of(model), {"model": "facebook/wav2vec2-base"})
    assert ModelCard(str(card)).data.base_model == "facebook/wav2vec2-base"
