"""Issue 17 (reliability round 2), library level: no data loss, no silent corruption, no code execution."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prunehead.errors import InputError
from prunehead.output_guard import atomic_dir, atomic_file, check_output, check_outputs, exclusive_temp, publish_dir

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- item 1: data loss

@pytest.mark.parametrize("out", [".", "./", "", "..", "/"])
def test_output_that_is_or_contains_the_working_directory_is_refused(tmp_path, monkeypatch, out):
    """Checked with `check_output`, which never deletes: run against a broken `atomic_dir`, "/" and ".."
    would remove the machine's root or the test's parent (this happened once, to /etc)."""
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(InputError, match="working directory|empty"):
        check_output(out, overwrite=True)


@pytest.mark.parametrize("out", [".", "./", ""])
def test_atomic_dir_on_the_working_directory_deletes_nothing(tmp_path, monkeypatch, out):
    work = tmp_path / "a" / "work"  # only paths inside tmp_path: a regression cannot reach further
    work.mkdir(parents=True)
    (work / "model.safetensors").write_text("precious")
    monkeypatch.chdir(work)
    with pytest.raises(InputError, match="working directory|empty"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "x").write_text("x")
    assert (work / "model.safetensors").read_text() == "precious"


def test_output_that_is_or_contains_an_input_is_refused(tmp_path):
    model = tmp_path / "runs" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    for out in (model, tmp_path / "runs"):
        with pytest.raises(InputError, match="input"):
            check_output(out, overwrite=True, inputs=[model])
    link = tmp_path / "link"
    link.symlink_to(model)
    with pytest.raises(InputError, match="input"):  # the same folder through a symlink
        check_output(link, overwrite=True, inputs=[model])
    with pytest.raises(InputError, match="part of the input"):  # eval --out model/config.json --overwrite
        check_output(model / "config.json", overwrite=True, inputs=[model])
    assert check_output(tmp_path / "runs" / "pruned", inputs=[model]) == tmp_path / "runs" / "pruned"
    assert check_output(model / "new.json", inputs=[model]) == model / "new.json"  # a new file beside it is fine
    assert (model / "config.json").exists()


def test_outputs_of_one_run_must_not_collide(tmp_path):
    """score --out s.png would overwrite its scores with the heat map; export --out d/export.json its model."""
    with pytest.raises(InputError, match="collides"):
        check_outputs(tmp_path / "s.png", (tmp_path / "s.png").with_suffix(".png"))
    with pytest.raises(InputError, match="collides"):
        check_outputs(tmp_path / "d" / "export.json", tmp_path / "d" / "export.json")
    with pytest.raises(InputError, match="collides"):
        check_outputs(tmp_path / "d", tmp_path / "d" / "x.json")
    with pytest.raises(InputError, match="collides"):
        check_output(tmp_path / "s.png", others=[tmp_path / "s.png"])
    assert check_outputs(tmp_path / "s.json", tmp_path / "s.png") == [tmp_path / "s.json", tmp_path / "s.png"]


def test_overwrite_keeps_files_the_command_does_not_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.json").write_text("old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "plan.json").write_text("new")
    assert (out / "notes.txt").read_text() == "mine" and (out / "plan.json").read_text() == "old"
    (out / "notes.txt").unlink()
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "plan.json").write_text("new")
        (tmp / "more.json").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "plan.json").read_text() == "new"


def test_overwrite_never_turns_a_file_into_a_folder_or_back(tmp_path):
    (tmp_path / "f").write_text("a file")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="not a folder"), atomic_dir(tmp_path / "f", overwrite=True) as tmp:
        (tmp / "x").write_text("x")
    with pytest.raises(InputError, match="is a folder"), atomic_file(tmp_path / "d", overwrite=True) as tmp:
        tmp.write_text("x")
    assert (tmp_path / "f").read_text() == "a file" and (tmp_path / "d").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with atomic_file("~/x.json") as tmp:
        tmp.write_text("{}")
    assert (tmp_path / "x.json").read_text() == "{}" and not (tmp_path / "~").exists()


def test_too_long_name_is_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="shorter"):
        check_output(tmp_path / ("n" * 245 + ".json"))


def test_output_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        check_output(tmp_path / "a-file" / "deeper" / "out.json")


# ----------------------------------------------------------------------------------------------- item 16: publish race

def test_publish_never_replaces_an_output_that_appeared_meanwhile(tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(InputError, match="appeared"), atomic_file(out) as tmp:
        tmp.write_text("new")
        out.write_text("someone else's")  # appears after the up-front check
    assert out.read_text() == "someone else's"
    folder = tmp_path / "folder"
    with pytest.raises(InputError, match="appeared"), atomic_dir(folder) as tmp:
        (tmp / "x").write_text("new")
        folder.mkdir()
        (folder / "theirs").write_text("theirs")
    assert [p.name for p in folder.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out.json"]


def test_publish_dir_is_one_rename(tmp_path):
    tmp = exclusive_temp(tmp_path, "out", directory=True)
    (tmp / "a").write_text("a")
    inode = tmp.stat().st_ino
    publish_dir(tmp, tmp_path / "out", overwrite=False)
    assert (tmp_path / "out").stat().st_ino == inode and not tmp.exists()


# ----------------------------------------------------------------------------------------------- item 7: temp names

def test_temp_names_never_follow_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    folder = tmp_path / "out"
    folder.mkdir()
    made = [exclusive_temp(folder, "x.json") for _ in range(3)]
    assert len(set(made)) == 3 and all(p.parent == folder and p.stat().st_size == 0 for p in made)
    for p in made:  # an attacker replaces the temp name with a link: a new call never reuses it
        p.unlink()
        p.symlink_to(victim)
    again = exclusive_temp(folder, "x.json")
    assert again not in made and not again.is_symlink()
    assert victim.read_text() == "keep"


def test_sigterm_removes_temporary_outputs(tmp_path):
    script = (
        "import sys, time, types\n"
        "package = types.ModuleType('prunehead')\n"  # skip the package's heavy __init__: outputs needs errors only
        f"package.__path__ = [{str(ROOT / 'prunehead')!r}]\n"
        "sys.modules['prunehead'] = package\n"
        "from prunehead.output_guard import atomic_dir, install_sigterm_handler\n"
        "install_sigterm_handler()\n"
        f"with atomic_dir({str(tmp_path / 'out')!r}) as tmp:\n"
        "    (tmp / 'big').write_text('x' * 1000)\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.iterdir())) == 1  # the temporary folder
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ finetune (items 2, 6, 8, 9, 15)

def _tones(root: Path, n: int = 4) -> Path:
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, freq in (("low", 300.0), ("high", 2500.0)):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                t = np.arange(4000) / 16000
                wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
                sf.write(root / split / label / f"{i}.wav", wave.astype(np.float32), 16000)
    return root


@pytest.fixture
def tones(tmp_path):
    return _tones(tmp_path / "data")


def _cfg(**kw):
    from prunehead.training.finetune import TrainConfig

    return TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 1e-3, "head_lr": 1e-3, "eval_split": None, **kw})


def _batches_that(monkeypatch, at: int, effect):
    """Wrap the training engine's make_batches so the `at`-th training batch (counted over the run) gets `effect`."""
    import prunehead.training.engine as train

    real, seen = train.make_batches, [0]

    def make_batches(*args, **kwargs):
        for batch in real(*args, **kwargs):
            seen[0] += 1
            yield effect(batch) if seen[0] == at else batch
    monkeypatch.setattr(train, "make_batches", make_batches)


def test_training_stops_at_the_first_non_finite_loss_and_writes_nothing(tones, tmp_path, monkeypatch):
    from prunehead.training.finetune import NonFiniteLossError, finetune

    def poison(batch):
        batch["input_values"][0, 10] = float("nan")
        return batch
    _batches_that(monkeypatch, 3, poison)  # epoch 2, after a checkpoint of epoch 1
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 1"):
        finetune("arch:wav2vec2-tiny", str(tones), tmp_path / "m", _cfg(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no model, no .m.partial, no checkpoint


@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("head_lr", float("inf")), ("epochs", -3),
                                          ("epochs", 0), ("batch_size", 0), ("clip_seconds", -1.0),
                                          ("warmup", 2.0), ("max_seconds", float("nan"))])
def test_training_options_are_range_checked(field, value):
    with pytest.raises(InputError, match=f"--{field.replace('_', '-')}"):
        _cfg(**{field: value})


def test_recipe_values_must_be_finite(tmp_path):
    from prunehead.recipe import load_recipe

    for section, line in (("train", "lr = nan"), ("score", "lr = inf"), ("train", "epochs = 0")):
        recipe = tmp_path / f"{section}.toml"
        recipe.write_text(f'version = 2\ntask = "ks"\n[model]\npath = "arch:wav2vec2-tiny"\n[data]\nspec = "fsdd-ks"\n'
                          f"[{section}]\n{line}\n")
        with pytest.raises(InputError, match=rf"{section}\.toml \[{section}\].*{line.split()[0]}"):
            load_recipe(recipe)


def test_finetune_checks_out_before_loading_anything(tones, tmp_path, monkeypatch):
    import prunehead.training.finetune as train

    monkeypatch.setattr(train, "load_data", lambda *a, **k: pytest.fail("data loaded before --out was checked"))
    (tmp_path / "a-file").write_text("x")
    for out, message in ((tmp_path / "a-file" / "m", "cannot write"), (tones, "input"), (tmp_path, "working")):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(InputError, match=message):
            train.finetune("arch:wav2vec2-tiny", str(tones), out, _cfg(), progress=False)


def test_finetune_output_is_atomic_and_an_interrupted_run_resumes(tones, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from prunehead.training.finetune import finetune

    full = finetune("arch:wav2vec2-tiny", str(tones), tmp_path / "full", _cfg(), progress=False)

    def interrupt(batch):
        raise KeyboardInterrupt
    _batches_that(monkeypatch, 3, interrupt)  # Ctrl-C in epoch 2
    with pytest.raises(KeyboardInterrupt):
        finetune("arch:wav2vec2-tiny", str(tones), tmp_path / "m", _cfg(), progress=False)
    assert not (tmp_path / "m").exists()  # no half-written model
    assert [p.name for p in (tmp_path / ".m.partial" / "checkpoints").iterdir()] == ["epoch-001.pt"]
    monkeypatch.undo()
    with pytest.raises(InputError, match="pass --resume"):
        finetune("arch:wav2vec2-tiny", str(tones), tmp_path / "m", _cfg(), progress=False)
    resumed = finetune("arch:wav2vec2-tiny", str(tones), tmp_path / "m", _cfg(), resume=True, progress=False)
    assert not (tmp_path / ".m.partial").exists() and resumed["epochs"] == full["epochs"] == 2
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "m" / "model.safetensors")
    for key in a:
        assert (a[key] == b[key]).all(), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "full", "m"]


def test_a_crafted_checkpoint_is_never_unpickled(tones, tmp_path):
    import torch

    from prunehead.training.finetune import finetune

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    out = tmp_path / "m"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": "prunehead.train-checkpoint", "model": Payload()}, out / "checkpoints" / "epoch-999.pt")
    with pytest.raises(InputError, match="not a prunehead training checkpoint"):
        finetune("arch:wav2vec2-tiny", str(tones), out, _cfg(), resume=True, progress=False)
    assert not marker.exists()


def test_checkpoint_temp_files_do_not_follow_planted_links(tmp_path):
    import torch

    from prunehead.training.finetune import _save_checkpoint, load_checkpoint

    victim = tmp_path / "victim"
    victim.write_text("keep")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".epoch-001.pt.tmp").symlink_to(victim)  # the old fixed temp name
    _save_checkpoint(folder, "epoch-001.pt", {"model": {"w": torch.ones(2)}, "epoch": 1})
    assert victim.read_text() == "keep"
    assert load_checkpoint(folder / "epoch-001.pt")["epoch"] == 1
    assert sorted(p.name for p in folder.iterdir()) == [".epoch-001.pt.tmp", "epoch-001.pt"]


# ------------------------------------------------------------------------------------ score resume (items 4, 5, 7, 11)

def test_run_key_changes_with_the_weights_the_audio_and_the_options(tmp_path):
    import copy

    import torch

    from prunehead.scorers.parallel import model_fingerprint, run_key
    from tests.conftest import tiny

    a = tiny("wav2vec2-tiny")
    same = tiny("wav2vec2-tiny")
    other = copy.deepcopy(a)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-6  # one weight, one ulp-scale change
    assert model_fingerprint(a) == model_fingerprint(same) != model_fingerprint(other)
    clip = tmp_path / "0.wav"
    clip.write_bytes(b"RIFF-one")
    key = run_key(a, [str(clip)], scorer="hib", steps=3)
    assert key == run_key(same, [str(clip)], scorer="hib", steps=3)
    assert key != run_key(other, [str(clip)], scorer="hib", steps=3)
    assert key != run_key(a, [str(clip)], scorer="hib", steps=4)
    clip.write_bytes(b"RIFF-two")  # same path and size, new audio
    assert key != run_key(a, [str(clip)], scorer="hib", steps=3)


def test_resume_with_replaced_weights_is_refused(tmp_path):
    import copy

    import torch

    from prunehead.scorers import get_scorer
    from prunehead.scorers.parallel import run, run_key
    from tests.conftest import ce, tiny

    model = tiny("wav2vec2-tiny")
    g = torch.Generator().manual_seed(0)
    batches = [{"input_values": torch.randn(2, 3200, generator=g), "labels": torch.tensor([0, 1])} for _ in range(2)]
    path = tmp_path / "s.json.ckpt"
    run(get_scorer("gradient"), model, batches[:1], ce, checkpoint=path, key=run_key(model, ["x"], scorer="gradient"))
    replaced = copy.deepcopy(model)
    with torch.no_grad():
        for p in replaced.parameters():
            p.mul_(1.01)
    with pytest.raises(InputError, match="other parameters, data or model"):
        run(get_scorer("gradient"), replaced, batches, ce, checkpoint=path,
            key=run_key(replaced, ["x"], scorer="gradient"), resume=True)


def test_score_checkpoints_never_follow_planted_links_nor_unpickle_code(tmp_path):
    import torch

    from prunehead.scorers.parallel import Checkpoint

    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / "s.json.ckpt"
    (tmp_path / ".s.json.ckpt.tmp").symlink_to(victim)  # the old fixed temp name
    store = Checkpoint(path, "k")
    store.add(0, torch.arange(2), torch.zeros(2, 3))
    assert victim.read_text() == "keep" and Checkpoint(path, "k").load() == 1
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    torch.save({"format": "prunehead.score-checkpoint", "key": "k", "batches": Payload()}, path)
    with pytest.raises(InputError, match="not a score checkpoint"):
        Checkpoint(path, "k").load()
    assert not marker.exists()
    Checkpoint(path, "k", 1, 2).add(0, torch.arange(1), torch.zeros(1, 3))
    assert [p.name for p in Checkpoint.files(path)] == ["s.json.ckpt", "s.json.ckpt.rank1-of-2"]


# ----------------------------------------------------------------------------------------------- score files (item 12)

def _score_file(tmp_path, **changes):
    data = {"format": "prunehead.scores", "version": 1, "scorer": "hand", "model": "m", "num_layers": 2,
            "num_heads": 2, "scores": [[0.1, 0.2], [0.3, 0.4]], **changes}
    path = tmp_path / "hand.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not ...}))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"version": 2}, "version 2"), ({"version": 0}, "version 0"), ({"version": ...}, "version None"),
    ({"version": True}, "version True"), ({"version": "1"}, "version '1'"),
    ({"scores": [[True, 0.2], [0.3, False]]}, "true/false"),
    ({"num_layers": True, "num_heads": 2, "scores": [[0.1, 0.2]]}, "file says True x 2"),
], ids=["v2", "v0", "missing", "bool-version", "str-version", "bool-scores", "bool-size"])
def test_score_files_with_unknown_versions_or_booleans_are_refused(tmp_path, changes, message):
    from prunehead.pruning.score_files import load_scores

    with pytest.raises(InputError, match=message):
        load_scores(_score_file(tmp_path, **changes))


def test_score_files_record_the_model_and_warn_on_another(tmp_path, recwarn):
    import warnings

    import torch

    from prunehead.pruning.score_files import load_scores, save_scores
    from prunehead.scorers.parallel import model_fingerprint
    from tests.conftest import tiny

    scored, other = tiny("wav2vec2-tiny", seed=0), tiny("wav2vec2-tiny", seed=1)
    path = tmp_path / "s.json"
    save_scores(path, torch.rand(2, 4), "random", "m", model_fingerprint=model_fingerprint(scored))
    assert json.loads(path.read_text())["model_fingerprint"] == model_fingerprint(scored)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scores(path, model_fingerprint=model_fingerprint(scored))
        load_scores(_score_file(tmp_path), model_fingerprint=model_fingerprint(other))  # hand-written: accepted
    with pytest.warns(UserWarning, match="another model") as caught:
        load_scores(path, model_fingerprint=model_fingerprint(other))
    assert len(caught) == 1 and "\n" not in str(caught[0].message)


# ----------------------------------------------------------------------------------------------- ranges (item 15)

def test_min_heads_per_layer_that_blocks_the_ratio_warns():
    import warnings

    import torch

    from prunehead.pruning.plan import select

    scores = torch.rand(3, 4)
    with pytest.warns(UserWarning, match="removing 0 of the 6 heads.*--min-heads-per-layer 4"):
        assert select(scores, ratio=0.5, min_heads_per_layer=4).num_pruned == 0
    with pytest.warns(UserWarning, match="removing 3 of the 6 heads"):
        assert select(scores, ratio=0.5, scope="per_layer", min_heads_per_layer=3).num_pruned == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select(scores, ratio=0.5, min_heads_per_layer=2).num_pruned == 6


@pytest.mark.parametrize("spec", ["0:1:0.0000001", ",".join(["0.5"] * 1001)])
def test_sweeps_of_more_than_1000_points_are_refused(spec):
    from prunehead.experiments.curves import parse_ratios

    with pytest.raises(InputError, match="at most 1000"):
        parse_ratios(spec)
    assert len(parse_ratios("0:0.999:0.001")) == 1000  # the limit itself is accepted


# ----------------------------------------------------------------------------------------------- data synth (item 8)

@pytest.mark.parametrize("failure", [RuntimeError("espeak died"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_synth_appears_complete_or_not_at_all(tmp_path, monkeypatch, failure):
    import numpy as np

    import prunehead.data.synth as synth

    calls = [0]

    def tts(text, voice, speed=1.0):
        calls[0] += 1
        if calls[0] == 5:
            raise failure
        return np.zeros(8000, np.float32) + 0.1

    monkeypatch.setattr(synth, "tts", tts)
    with pytest.raises(type(failure)):
        synth.synthesize("ks", tmp_path / "d", n_per_class=2, workers=1)
    assert list(tmp_path.iterdir()) == []
    calls[0] = -10**6
    out = synth.synthesize("ks", tmp_path / "d", n_per_class=2, workers=2)
    assert (out / "synth.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert len(list((out / "train").rglob("*.wav"))) == 2 * 12 and len(list((out / "test").rglob("*.wav"))) == 12


# ----------------------------------------------------------------------------------------------- HIB options (item 15)

@pytest.mark.parametrize("options", [{"noise": float("nan")}, {"lr": float("inf")}, {"beta": float("nan")},
                                     {"steps": -1}, {"lr": 0.0}], ids=["noise-nan", "lr-inf", "beta-nan",
                                                                      "steps-neg", "lr-0"])
def test_hib_options_are_checked_at_construction(options):
    from prunehead.scorers.hib import HIBScorer

    with pytest.raises(InputError, match="HIB"):
        HIBScorer(**options)


# ----------------------------------------------------------------------------------------------- item 1 through the CLI

@pytest.mark.parametrize("command", ["prune", "prune-dry-run", "sweep"])
@pytest.mark.parametrize("out", [".", "./", ""])
def test_out_dot_overwrite_keeps_the_working_directory(tmp_path, monkeypatch, command, out):
    import numpy as np
    import soundfile as sf
    import torch
    from transformers import Wav2Vec2FeatureExtractor
    from typer.testing import CliRunner

    from prunehead import save_scores
    from prunehead.cli import app
    from tests.conftest import tiny

    model = tiny("wav2vec2-tiny", num_labels=2, id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    model.save_pretrained(tmp_path / "model")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(tmp_path / "model")
    for label in ("a", "b"):
        (tmp_path / "data" / "test" / label).mkdir(parents=True)
        sf.write(tmp_path / "data" / "test" / label / "0.wav", np.zeros(4000, np.float32) + 0.1, 16000)
    save_scores(tmp_path / "scores.json", torch.rand(2, 4), "random", "model")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    argv = {"prune": ["prune", "-m", "model", "-s", "scores.json", "--ratio", "0.5"],
            "prune-dry-run": ["prune", "-m", "model", "-s", "scores.json", "--ratio", "0.5", "--dry-run"],
            "sweep": ["sweep", "-m", "model", "-d", "data", "-s", "scores.json", "--ratios", "0.5"]}[command]
    result = CliRunner().invoke(app, [*argv, "--out", out, "--overwrite"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------------------------------------------
# The commands use these guarantees (CLI wiring of the checks above).


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A dead-head model + tone data, and a finished gradient score file."""
    from tests.conftest import dead_head_workspace

    root = tmp_path_factory.mktemp("wired")
    dead_head_workspace(root, {"train": 6, "test": 3}, "train")
    return root


def _main(*args):
    from tests.conftest import run_main

    return run_main(*args)


def test_score_resume_does_not_replace_a_finished_file_without_overwrite(scored):
    out = scored / "gradient.json"
    before = out.read_bytes()
    code, _, err = _main("score", "-m", scored / "model", "-d", scored / "data", "--scorer", "attention",
                         "--resume", "--out", out)
    assert code == 1 and "--overwrite" in err and out.read_bytes() == before


def test_score_output_colliding_with_its_heat_map_is_refused(scored, tmp_path):
    code, _, err = _main("score", "-m", scored / "model", "-d", scored / "data", "--scorer", "attention",
                         "--out", tmp_path / "s.png")
    assert code == 1 and "collides" in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["eval", "prune", "score"])
def test_an_output_inside_an_input_is_refused(scored, command):
    inside = scored / "model" / "config.json"  # an existing file of the input, even with --overwrite
    before = inside.read_bytes()
    extra = {"eval": ["-d", scored / "data"], "prune": ["-s", scored / "gradient.json", "--ratio", "0.2"],
             "score": ["-d", scored / "data", "--scorer", "attention"]}[command]
    code, _, err = _main(command, "-m", scored / "model", *extra, "--out", inside, "--overwrite")
    assert code == 1 and "input" in err and inside.read_bytes() == before


def test_a_failed_score_run_leaves_no_checkpoint(scored, tmp_path):
    out = tmp_path / "s.json"
    code, _, err = _main("score", "-m", scored / "model", "-d", scored / "data", "--split", "test", "--scorer",
                         "occlusion", "--option", "metric=7", "--out", out)  # fails inside the scorer
    assert code == 1 and not list(tmp_path.iterdir()), err


def test_prune_warns_when_the_scores_were_made_on_other_weights(scored, tmp_path):
    import warnings

    import torch

    from prunehead import Cut, prune, save_scores
    from tests.conftest import tiny

    other = tmp_path / "other.json"
    from prunehead.scorers.parallel import model_fingerprint

    save_scores(other, torch.rand(2, 4), "random", "x", model_fingerprint=model_fingerprint(tiny("wav2vec2-tiny")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune(str(scored / "model"), Cut.heads(0.25), ranking=other, dry_run=True)
    assert len(caught) == 1 and "other.json" in str(caught[0].message), [str(w.message) for w in caught]
