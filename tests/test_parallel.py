"""Scoring at scale: two gloo processes merge to the single-process matrix; checkpoints resume exactly;
`prunehead score` end to end (score file, heat map, bit-identical reruns, Ctrl-C + --resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from typer.testing import CliRunner

from prunehead.cli import app
from prunehead.errors import InputError
from prunehead.scorers import get_scorer
from prunehead.scorers.hib import HIBScorer
from prunehead.scorers.parallel import Checkpoint, run
from tests.conftest import ce, tiny

SCORERS = {"hib": {"steps": 3}, "gradient": {}, "attattr": {"points": 3}}




def job():
    """The same model and 5 batches (odd count: ranks get unequal shares) in every process."""
    model = tiny("wav2vec2-tiny")
    g = torch.Generator().manual_seed(0)
    batches = []
    for size in (2, 1, 2, 2, 1):
        mask = torch.ones(size, 3200, dtype=torch.long)
        mask[0, 2400:] = 0
        batches.append({"input_values": torch.randn(size, 3200, generator=g) * mask, "attention_mask": mask,
                        "labels": torch.randint(0, 3, (size,), generator=g)})
    return model, batches


def _worker(rank: int, world_size: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        model, batches = job()
        outcomes = {name: run(get_scorer(name, **params), model, batches, ce) for name, params in SCORERS.items()}
        if rank == 0:
            torch.save({n: (o.scores, o.results, o.ids, o.world_size) for n, o in outcomes.items()},
                       f"{folder}/merged.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_merge_to_the_single_process_matrix(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    merged = torch.load(tmp_path / "merged.pt")
    model, batches = job()
    for name, params in SCORERS.items():
        scores, results, ids, world_size = merged[name]
        single = get_scorer(name, **params).score(model, batches, ce)
        single_run = run(get_scorer(name, **params), model, batches, ce)
        assert world_size == 2
        assert torch.equal(ids, torch.arange(8))
        assert torch.equal(scores, single), name
        assert torch.equal(results, single_run.results), name


# ----------------------------------------------------------------------------------------------- checkpoints

class Interrupting(HIBScorer):
    """HIB that is 'killed' (KeyboardInterrupt) when it starts batch number `stop_at`."""

    def __init__(self, stop_at: int | None, **kwargs):
        super().__init__(**kwargs)
        self.stop_at, self.calls = stop_at, 0

    def score_batch(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().score_batch(*args, **kwargs)


def test_resume_after_interrupt_gives_the_uninterrupted_matrix(tmp_path):
    model, batches = job()
    full = run(Interrupting(None, steps=3), model, batches, ce)
    path = tmp_path / "scores.json.ckpt"
    with pytest.raises(KeyboardInterrupt):
        run(Interrupting(3, steps=3), model, batches, ce, checkpoint=path, key="k")
    assert len(torch.load(path)["batches"]) == 2
    resumed_scorer = Interrupting(None, steps=3)
    resumed = run(resumed_scorer, model, batches, ce, checkpoint=path, key="k", resume=True)
    assert resumed_scorer.calls == 3  # only the 3 unfinished batches were scored
    assert torch.equal(resumed.scores, full.scores)
    assert torch.equal(resumed.results, full.results)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    model, batches = job()
    path = tmp_path / "c.ckpt"
    Checkpoint(path, "one").add(0, torch.arange(2), torch.zeros(2, 2, 4))
    with pytest.raises(InputError, match="other parameters"):
        run(get_scorer("gradient"), model, batches, ce, checkpoint=path, key="two", resume=True)


# ----------------------------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def cli_assets(tmp_path_factory):
    from prunehead.surgery import save_pretrained

    root = tmp_path_factory.mktemp("score_cli")
    save_pretrained(tiny("wav2vec2-tiny"), root / "model")
    rng = np.random.default_rng(0)
    for label in ("a", "b", "c"):
        for i in range(3):
            path = root / "data" / "train" / label / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.3 * rng.standard_normal(3200 + 400 * i)).astype(np.float32), 16_000)
    return root


def score_cli(root: Path, *args: str):
    base = ["score", "--model", str(root / "model"), "--data", str(root / "data"), "--device", "cpu"]
    return CliRunner().invoke(app, [*base, *args])


def test_score_writes_the_file_and_heat_map(cli_assets, tmp_path):
    out = tmp_path / "scores.json"
    result = score_cli(cli_assets, "--scorer", "hib", "--steps", "2", "--samples", "5", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["format"] == "prunehead.scores" and data["scorer"] == "hib"
    assert np.array(data["scores"]).shape == (2, 4) and np.array(data["spread"]).shape == (2, 4)
    assert data["samples"] == 5 and len(data["sample_paths"]) == 5
    assert data["params"]["steps"] == 2 and data["params"]["beta"] == 1.0  # KS defaults from Table 1
    assert set(data["versions"]) >= {"prunehead", "torch", "transformers"} and data["device"] == "cpu"
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("*.ckpt*"))


def test_same_seed_gives_a_bit_identical_file_and_ctrl_c_resumes_to_it(cli_assets, tmp_path, monkeypatch):
    args = ["--scorer", "hib", "--steps", "2", "--samples", "6", "--batch-size", "2"]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert score_cli(cli_assets, *args, "--out", str(first)).exit_code == 0
    calls = {"n": 0}
    original = HIBScorer.score_batch

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(HIBScorer, "score_batch", interrupted)
    result = score_cli(cli_assets, *args, "--out", str(second))
    assert result.exit_code == 130 and not second.exists()
    assert (tmp_path / "b.json.ckpt").exists()
    monkeypatch.setattr(HIBScorer, "score_batch", original)
    assert score_cli(cli_assets, *args, "--out", str(second), "--resume").exit_code == 0
    assert second.read_bytes() == first.read_bytes()
    assert not (tmp_path / "b.json.ckpt").exists()


def test_reference_samples_set_hibs_sigma(cli_assets, tmp_path):
    out = [tmp_path / f"{k}.json" for k in ("own", "ref")]
    args = ["--scorer", "hib", "--steps", "2", "--samples", "3"]
    assert score_cli(cli_assets, *args, "--out", str(out[0])).exit_code == 0
    assert score_cli(cli_assets, *args, "--reference-samples", "9", "--out", str(out[1])).exit_code == 0
    own, ref = (json.loads(p.read_text()) for p in out)
    assert ref["reference_samples"] == 9 and ref["sample_paths"] == own["sample_paths"]
    assert ref["scores"] != own["scores"]  # another sigma, another noise level
    result = score_cli(cli_assets, "--scorer", "gradient", "--reference-samples", "9", "--out", str(tmp_path / "g.json"))
    assert result.exit_code == 1 and "hib only" in result.output


@pytest.mark.parametrize("args, message", [
    (["--scorer", "nope"], "unknown scorer 'nope'"),
    (["--scorer", "attention", "--steps", "3"], "takes no option 'steps'"),
    (["--scorer", "attention", "--option", "variant"], "KEY=VALUE"),
])
def test_bad_options_fail_with_one_line(cli_assets, tmp_path, args, message):
    result = score_cli(cli_assets, *args, "--out", str(tmp_path / "s.json"))
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "s.json").exists()


def test_existing_output_needs_overwrite(cli_assets, tmp_path):
    out = tmp_path / "s.json"
    out.write_text("{}")
    result = score_cli(cli_assets, "--scorer", "attention", "--out", str(out))
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert score_cli(cli_assets, "--scorer", "attention", "--out", str(out), "--overwrite").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_process_resumes_to_the_uninterrupted_file(cli_assets, tmp_path, sig):
    """A real SIGKILL / SIGTERM (a scheduler's preemption) in the middle of HIB, then --resume: the same bytes
    as an uninterrupted run."""
    args = ["--scorer", "hib", "--steps", "40", "--samples", "9", "--batch-size", "1", "--device", "cpu",
            "--model", str(cli_assets / "model"), "--data", str(cli_assets / "data")]
    cmd = [sys.executable, "-c", "from prunehead.cli import main; main()", "score", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, "--out", str(tmp_path / "full.json")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "r.json")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "r.json.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and len(torch.load(ckpt)["batches"]) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed; give it more work"
    proc.send_signal(sig)
    proc.wait()
    assert ckpt.exists()  # kept for --resume
    subprocess.run([*cmd, "--out", str(tmp_path / "r.json"), "--resume"], check=True, env=env, capture_output=True)
    assert (tmp_path / "r.json").read_bytes() == (tmp_path / "full.json").read_bytes()


@pytest.mark.slow
def test_torchrun_launch_of_the_cli_matches_one_process(cli_assets, tmp_path):
    """`torchrun --nproc-per-node 2 $(which prunehead) score ...` on CPU (gloo) == the one-process scores."""
    import shutil

    script = shutil.which("prunehead")
    if script is None:
        pytest.skip("the prunehead console script is not installed")
    args = ["score", "--scorer", "hib", "--steps", "3", "--samples", "7", "--batch-size", "2", "--device", "cpu",
            "--model", str(cli_assets / "model"), "--data", str(cli_assets / "data")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([script, *args, "--out", str(tmp_path / "one.json")], check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
                    script, *args, "--out", str(tmp_path / "two.json")], check=True, env=env, capture_output=True)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["scores"] == one["scores"] and two["spread"] == one["spread"]


def test_recipe_settings_and_flag_overrides(cli_assets, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'version = 2\nname = "tiny"\ntask = "ks"\n[model]\npath = "{cli_assets / "model"}"\n'
                      f'[data]\nspec = "{cli_assets / "data"}"\n[score]\nscorer = "hib"\nbeta = 0.5\nsteps = 2\n'
                      'samples = 4\n')
    out = tmp_path / "s.json"
    result = CliRunner().invoke(app, ["score", "--recipe", str(recipe), "--steps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["scorer"] == "hib" and data["samples"] == 4
    assert data["params"]["beta"] == 0.5 and data["params"]["steps"] == 1  # the flag wins over the recipe


def test_split_half_is_the_spearman_of_the_even_and_odd_sample_scores():
    """Against scipy on a real run (8 samples, gradient and HIB), and known answers: identical halves give 1,
    halves with reversed rankings give -1, fewer than 4 samples give None."""
    from scipy.stats import spearmanr

    from prunehead.scorers.parallel import split_half

    model, batches = job()
    batches = batches + job()[1][:3]  # 8 samples
    for name, params in (("gradient", {}), ("hib", {"steps": 2})):
        scorer = get_scorer(name, **params)
        outcome = run(scorer, model, batches, ce)
        even, odd = (scorer.reduce(outcome.results[i::2]).flatten().numpy() for i in (0, 1))
        assert outcome.split_half == pytest.approx(spearmanr(even, odd).statistic, abs=1e-4)
    mean = HIBScorer(steps=1)  # its reduce is the plain mean over samples
    same = torch.rand(1, 2, 4).repeat(6, 1, 1)  # (N, L, H): every sample alike
    assert split_half(mean, same) == 1.0
    ramp = torch.arange(8.0).reshape(1, 2, 4)
    flipped = torch.cat([ramp, 7 - ramp, ramp, 7 - ramp])
    assert split_half(mean, flipped) == -1.0
    assert split_half(mean, same[:3]) is None
