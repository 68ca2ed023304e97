"""The application layer: each command equals its library function, every command draws the same samples,
decisions need no surgery, options fail before anything loads, one table of task defaults."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

import prunehead
from prunehead import Cut, Data, Ranking
from prunehead.cli import app
from prunehead.pruning.plan import PruningPlan, select
from prunehead.scorers import get_scorer
from prunehead.scorers.base import SampleScorer
from prunehead.scorers.hib import TABLE1
from tests.conftest import ce, dead_head_workspace, inputs_for, run_main, same_metrics, tiny

runner = CliRunner()
CLIP = "0.25"  # the tone clips are 0.5 s: cropping changes every score


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    ws, _ = dead_head_workspace(root, {"train": 12, "test": 6}, "train")
    return root, ws


def _cli(*args) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def test_score_library_equals_cli(setup, tmp_path):
    root, _ = setup
    out = tmp_path / "s.json"
    _cli("score", "-m", root / "model", "-d", root / "data", "--scorer", "gradient", "--samples", 5, "--seed", 3,
         "--clip-seconds", CLIP, "--out", out)
    here = prunehead.score(str(root / "model"), Data(str(root / "data"), clip_seconds=float(CLIP)),
                           Ranking("gradient", samples=5, seed=3))
    written = json.loads(out.read_text())
    assert written["scores"] == here.scores.tolist() and written["sample_paths"] == here.sample_paths
    assert written["params"] == here.params and len(here.sample_paths) == 5
    assert torch.equal(prunehead.load_scores(out), here.scores)


def test_evaluate_library_equals_cli_and_a_hand_loop(setup, tmp_path):
    root, ws = setup
    out = tmp_path / "m.json"
    _cli("eval", "-m", root / "model", "-d", root / "data", "--split", "test", "--batch-size", 4, "--out", out)
    here = prunehead.evaluate(str(root / "model"), Data(str(root / "data"), batch_size=4), split="test")
    written = json.loads(out.read_text())
    assert {k: written[k] for k in here} == here
    model = prunehead.load(root / "model")  # independent: one clip at a time, argmax vs the gold label
    test = prunehead.open_workspace(model, str(root / "data"), "test", batch_size=1, source=str(root / "model"))
    with torch.no_grad():
        hits = [int(model(b["input_values"]).logits.argmax(-1) == b["labels"]) for b in test.batches()]
    assert here["accuracy"] == pytest.approx(sum(hits) / len(hits))


def test_prune_library_equals_cli(setup, tmp_path):
    root, _ = setup
    out = tmp_path / "pruned"
    _cli("prune", "-m", root / "model", "-s", root / "gradient.json", "--ratio", 0.5, "-d", root / "data",
         "--batch-size", 8, "--out", out)
    here = prunehead.prune(str(root / "model"), Cut.heads(0.5), ranking=root / "gradient.json",
                           data=Data(str(root / "data"), batch_size=8))
    report = json.loads((out / "report.json").read_text())
    assert (out / "heads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the scores, pruned heads crossed out
    assert report["pruned_heads"] == here.report["pruned_heads"] == here.plan.to_json()["pruned_heads"]
    assert report["metrics_after"] == here.report["metrics_after"]
    assert report["metrics_before"] == here.report["metrics_before"]
    x = inputs_for("wav2vec2-tiny")
    with torch.no_grad():
        torch.testing.assert_close(prunehead.load(out)(**x).logits, here.model.cpu()(**x).logits)


def test_every_command_draws_the_same_samples_with_the_same_options(setup, tmp_path):
    """score and prune --scorer score the same clips (cropped alike); prune --data and sweep evaluate alike."""
    root, _ = setup
    common = ["-m", root / "model", "-d", root / "data", "--clip-seconds", CLIP]
    _cli("score", *common, "--scorer", "gradient", "--samples", 6, "--seed", 1, "--out", tmp_path / "s.json")
    _cli("prune", *common, "--scorer", "gradient", "--samples", 6, "--seed", 1, "--ratio", 0.25,
         "--out", tmp_path / "p")
    _cli("sweep", *common, "-s", tmp_path / "s.json", "--ratios", "0,0.25", "--out", tmp_path / "c")
    scored = json.loads((tmp_path / "s.json").read_text())
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    curve = json.loads((tmp_path / "c" / "curve.json").read_text())
    assert report["score_samples"] == scored["sample_paths"]
    assert report["rounds"][0]["scores"] == scored["scores"]  # the same cropped clips, the same matrix
    uncropped = prunehead.score(str(root / "model"), str(root / "data"), Ranking("gradient", samples=6, seed=1))
    assert uncropped.scores.tolist() != scored["scores"]  # so the crop reached the scorer
    # the sweep evaluates the unpruned model on its gated path (prunehead's attention, all gates 1), prune the plain
    # model: equal in exact arithmetic, float rounding apart on some CPUs (AVX-512: 2e-8 of the loss)
    assert same_metrics(report["metrics_before"], curve["unpruned"])
    point = curve["curves"]["gradient"][1]
    assert point["heads_removed"] == report["heads_removed"] and point["accuracy"] == report["metrics_after"]["accuracy"]


def test_dry_run_decides_without_surgery_and_plan_applies_it(setup, tmp_path, monkeypatch):
    root, _ = setup
    decided = prunehead.prune(str(root / "model"), Cut.heads(0.5), ranking=root / "gradient.json", dry_run=True)
    assert decided.model is None
    assert decided.plan == select(prunehead.load_scores(root / "gradient.json"), ratio=0.5)
    import prunehead.pruning.iterative as iterative
    import prunehead.surgery as surgery
    import prunehead.units.heads as heads

    def no_surgery(*args, **kwargs):
        raise AssertionError("--dry-run must not prune a model")

    with monkeypatch.context() as patch:
        for module, name in ((surgery, "prune_"), (surgery, "prune_heads_"), (iterative, "prune_heads_"),
                             (heads, "prune_heads_"), (heads.HEADS, "remove_")):
            patch.setattr(module, name, no_surgery)
        _cli("prune", "-m", root / "model", "-s", root / "gradient.json", "--ratio", 0.5, "--dry-run",
             "--out", tmp_path / "plan")
    assert PruningPlan.load(tmp_path / "plan" / "plan.json") == decided.plan
    _cli("prune", "-m", root / "model", "--plan", tmp_path / "plan" / "plan.json", "--out", tmp_path / "applied")
    _cli("prune", "-m", root / "model", "-s", root / "gradient.json", "--ratio", 0.5, "--out", tmp_path / "scored")
    x = inputs_for("wav2vec2-tiny")
    applied, scored = prunehead.load(tmp_path / "applied"), prunehead.load(tmp_path / "scored")
    assert prunehead.plan_of(applied) == decided.plan
    with torch.no_grad():
        torch.testing.assert_close(applied(**x).logits, scored(**x).logits)


@pytest.mark.parametrize("argv, fragment", [
    (["prune", "--scorer", "attention", "--option", "variant=nope", "-d", "x", "--ratio", "0.2"], "variant"),
    (["prune", "--scorer", "hib", "--option", "noise=NaN", "-d", "x", "--ratio", "0.2"], "finite"),
    (["score", "--scorer", "hib", "--option", "granularity=nope", "-d", "x"], "HIB granularity"),
    (["score", "--scorer", "nope", "-d", "x"], "unknown scorer"),
])
def test_scorer_options_fail_before_the_model_loads(tmp_path, argv, fragment):
    """The model path does not exist: an error about the option proves nothing was loaded first."""
    code, out, err = run_main(*argv, "-m", tmp_path / "missing-model", "--out", tmp_path / "o")
    assert code == 1 and fragment in err and "cannot load" not in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["prune", "--rounds", "0"], ["prune", "--ratio", "nan"], ["score", "--samples", "0"],
    ["eval", "--batch-size", "0", "-d", "x"], ["finetune", "--lr", "nan", "-d", "x", "-o", "o"],
    ["prune", "--recover-lr", "0"], ["sweep", "--clip-seconds", "-1", "-d", "x", "-s", "s.json"],
])
def test_bad_values_are_usage_errors_in_one_line(argv):
    code, out, err = run_main(*argv, "-m", "m", *(["-o", "o"] if "-o" not in argv else []))
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err


def test_version_help_and_errors_answer_without_importing_torch():
    import subprocess

    probe = ("import sys; from prunehead.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
             "print('torch' in sys.modules, code, file=sys.stderr)")
    for argv, expect in ((["--version"], "prunehead "), (["prune", "-h"], "--rounds"),
                         (["prune", "-m", "m", "-o", "o", "--ratio", "2"], "error: ")):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60)
        assert expect in done.stdout + done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("False"), done.stderr


def test_task_defaults_come_from_one_table():
    for task, values in TABLE1.items():
        scorer = get_scorer("hib", task=task)
        assert (scorer.beta, scorer.steps) == (values["beta"], values["steps"])
    assert get_scorer("hib", task="asr", beta=3.0).beta == 3.0  # given values win
    assert get_scorer("gradient", task="asr").params() == get_scorer("gradient").params()
    assert prunehead.build_scorer("hib", {"steps": 1}, task="sid", seed=4).params()["seed"] == 4


def test_library_score_applies_the_task_table(setup):
    root, ws = setup
    result = prunehead.score(ws, Data(str(root / "data"), task="sid"), Ranking("hib", samples=1, options={"steps": 1}))
    assert result.params["beta"] == TABLE1["sid"]["beta"] and result.params["steps"] == 1


class _WrongRows(SampleScorer):
    name = "wrong-rows"

    def score_batch(self, model, batch, objective, ids, context):
        return torch.zeros(len(ids) + 1, 2, 4)


def test_one_runner_checks_every_scorer_result():
    """Scorer.score is the single-process case of parallel.run: its row-count check applies to both."""
    from prunehead.scorers.parallel import run

    model, batch = tiny("wav2vec2-tiny"), {**inputs_for("wav2vec2-tiny"), "labels": torch.tensor([0, 1])}
    for call in (lambda: _WrongRows().score(model, [batch], ce), lambda: run(_WrongRows(), model, [batch], ce)):
        with pytest.raises(RuntimeError, match="returned 3 rows for 2 samples"):
            call()
    scorer = get_scorer("attention")
    torch.testing.assert_close(scorer.score(model, [batch], ce), run(scorer, model, [batch], ce).scores)


def test_evaluate_and_sweep_take_a_dtype(setup):
    root, _ = setup
    args = (str(root / "model"), Data(str(root / "data"), batch_size=8))
    exact = prunehead.evaluate(*args, split="test")
    assert prunehead.evaluate(*args, split="test", dtype="float32") == exact
    low = prunehead.evaluate(*args, split="test", dtype="bfloat16")
    assert low["loss"] == pytest.approx(exact["loss"], abs=0.05) and low["loss"] != exact["loss"]
    curve = prunehead.sweep(*args, [root / "gradient.json"], ratios=[0.0], dtype="bfloat16")
    assert curve["unpruned"]["loss"] == pytest.approx(low["loss"], abs=1e-3)
    with pytest.raises(prunehead.InputError, match="dtype"):
        prunehead.evaluate(*args, dtype="float8")


def test_ctrl_c_prints_the_resume_command_and_it_finishes_the_same_matrix(setup, tmp_path, monkeypatch):
    """Interrupted after the first batch: exit 130, the hint is the same command plus --resume, and running
    it gives the matrix of an uninterrupted run (the summary says how much came from the checkpoint)."""
    from prunehead.scorers.gradient import GradientScorer

    root, _ = setup
    out = tmp_path / "s.json"
    argv = ["score", "-m", str(root / "model"), "-d", str(root / "data"), "--scorer", "gradient", "--samples", "8",
            "--batch-size", "4", "--out", str(out)]
    original, calls = GradientScorer.score_batch, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GradientScorer, "score_batch", interrupted)
    monkeypatch.setattr(sys, "argv", ["prunehead", *argv])
    code, _, err = run_main(*argv)
    assert code == 130 and not out.exists() and out.with_name("s.json.ckpt").exists()
    hint = err.strip().splitlines()[-1]
    assert hint.startswith("interrupted; continue with: prunehead score ") and hint.endswith(" --resume")
    monkeypatch.setattr(GradientScorer, "score_batch", original)
    import shlex

    code, printed, err = run_main(*shlex.split(hint.split("continue with: prunehead ", 1)[1]))
    assert code == 0 and "4 of them from the checkpoint" in printed, err
    fresh = prunehead.score(str(root / "model"), Data(str(root / "data"), batch_size=4), Ranking("gradient", samples=8))
    assert json.loads(out.read_text())["scores"] == fresh.scores.tolist()


def test_a_recipe_prune_section_is_the_target_and_flags_override_it(setup, tmp_path):
    """`prune --recipe R` takes the recipe's data, [score] scorer, samples and seed and [prune] target: the plan
    equals the one the same flags give; a target flag replaces the recipe's target, --samples its samples."""
    root, _ = setup
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'version = 2\ntask = "ks"\n[model]\npath = "arch:wav2vec2-tiny"\n[data]\nspec = "{root / "data"}"\n'
                      '[score]\nscorer = "gradient"\nsamples = 5\nseed = 2\n[prune]\nkind = "cut"\n'
                      'amounts.heads = { ratio = 0.5 }\n')
    _cli("prune", "-m", root / "model", "--recipe", recipe, "--out", tmp_path / "a")
    _cli("prune", "-m", root / "model", "-d", root / "data", "--scorer", "gradient", "--samples", 5, "--seed", 2,
         "--ratio", 0.5, "--dry-run", "--out", tmp_path / "b")
    _cli("prune", "-m", root / "model", "--recipe", recipe, "--samples", 4, "--ratio", 0.25, "--out", tmp_path / "c")
    plans = [PruningPlan.load(tmp_path / name / "plan.json") for name in "abc"]
    assert plans[0] == plans[1] and plans[0].num_pruned == 4 and plans[2].num_pruned == 2
    rankings = [json.loads((tmp_path / name / "report.json").read_text())["rankings"]["heads"] for name in "ac"]
    assert (rankings[0]["samples"], rankings[0]["seed"]) == (5, 2) and (rankings[1]["samples"], rankings[1]["seed"]) == (4, 2)
