"""Masks learned under a MAC budget (#25, `--method l0`): the expected-MAC model against FlopCounterMode counts
of physical prunes, the Lagrangian reaching the target on a tiny model, planted dead heads closing, folding
the gates, the CLI round trip and its flags."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

import prunehead
from prunehead.cli import app
from prunehead.cost import count_macs, example_inputs
from prunehead.pruning.learned import expected_macs
from prunehead.pruning.order import removal_order
from prunehead.pruning.plan import PruningPlan
from prunehead.pruning.targets import LearnedBudget, target_from_json, target_json
from prunehead.units.kinds import KINDS, remove_all_

from conftest import DEAD, dead_head_workspace, tiny

runner = CliRunner()


@pytest.mark.parametrize("units", [("heads", "ffn"), ("heads", "ffn", "layers"), ("heads", "conv")])
def test_expected_macs_equal_the_measured_macs_of_binary_masks(units):
    model = tiny("wav2vec2-tiny", num_hidden_layers=3)
    grids = {kind: KINDS[kind].grid(model) for kind in units}
    order = removal_order(model, {kind: torch.zeros(*grid) for kind, grid in grids.items()},
                          min_per_layer=dict.fromkeys(units, 0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        probs = {kind: (torch.rand(*grid, generator=gen) > 0.4).float() for kind, grid in grids.items()}
        if "conv" in probs:
            probs["conv"][:, 0] = 1.0  # a conv layer keeps a channel
        plan = PruningPlan(*grids.get("heads", KINDS["heads"].grid(model)))
        for kind, p in probs.items():
            closed = {l: tuple(int(i) for i in torch.nonzero(p[l] == 0).flatten()) for l in range(p.shape[0])}
            plan = KINDS[kind].with_removed(plan, {l: ids for l, ids in closed.items() if ids}, p.shape[1])
        pruned = remove_all_(copy.deepcopy(model), plan)
        assert float(expected_macs(order, probs)) == pytest.approx(count_macs(pruned, example_inputs(pruned))["total"])


def test_the_target_round_trips_and_checks_its_fields():
    budget = LearnedBudget(0.5, ("heads", "ffn", "layers"), epochs=2)
    assert target_from_json(target_json(budget)) == budget
    for bad in ({"fraction": 0.0}, {"fraction": 0.5, "epochs": 0}, {"fraction": 0.5, "units": ("heads", "heads")}):
        with pytest.raises(prunehead.InputError):
            LearnedBudget(**bad)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from prunehead.training.config import TrainConfig
    from prunehead.training.finetune import fit_

    root = tmp_path_factory.mktemp("learned")
    ws, _ = dead_head_workspace(root, {"train": 24, "test": 9}, "train")
    fit_(ws.model, str(root / "data"), TrainConfig(epochs=8, lr=3e-3, head_lr=3e-3, batch_size=4, eval_split=None,
                                                    freeze_feature_encoder=False), source=str(root / "model"))
    prunehead.save_pretrained(ws.model, root / "trained")
    for name in ("preprocessor_config.json",):
        (root / "trained" / name).write_text((root / "model" / name).read_text())
    return root


def test_the_lagrangian_reaches_the_target_and_dead_heads_close(setup):
    root = setup
    target = LearnedBudget(0.95, ("heads", "ffn"), epochs=12, lr=1e-4, gate_lr=0.2)  # floor: 0.91
    result = prunehead.prune(str(root / "trained"), target, data=prunehead.specs.Data(str(root / "data"),
                                                                                      batch_size=8))
    info = result.report["l0"]
    assert abs(info["expected_mac_fraction"] - 0.95) < 0.02, info["expected_mac_fraction"]  # stated tolerance
    measured = result.report["after"]["macs"] / result.report["before"]["macs"]
    assert 0.9 < measured <= 0.95, (measured, info["history"][-1])  # within the budget, never above it
    dead = {(l, h) for l, heads in DEAD.items() for h in heads}
    removed = {(l, h) for l, heads in result.plan.pruned_heads.items() for h in heads}
    assert dead <= removed, (dead, removed)
    assert info["history"][-1]["step"] == info["steps"]
    assert info["ranked_to_budget"] == (info["closed_mac_fraction"] > 0.95)  # the gates alone met the budget or not


def test_gates_that_miss_the_budget_are_cut_to_it_in_log_alpha_order_and_say_so():
    """A learner whose gates never moved (all open: closed fraction 1) plans within the target by the ranking,
    and reports that it did."""
    from prunehead.pruning.learned import MaskLearner

    model = tiny("wav2vec2-tiny", num_hidden_layers=2)
    learner = MaskLearner(model, ("heads", "ffn"), 0.95, steps=1, lr=1e-4, gate_lr=0.1)  # floor: 0.91
    with torch.no_grad():
        learner.gates["ffn"].log_alpha[0, :8] = -1.0  # the lowest: the ranking takes these first
    plan = learner.plan()
    report = learner.report()
    assert report["ranked_to_budget"] and report["closed_mac_fraction"] == pytest.approx(1.0)
    pruned = remove_all_(copy.deepcopy(model), plan)
    inputs = example_inputs(model)
    assert count_macs(pruned, inputs)["total"] <= 0.95 * count_macs(model, inputs)["total"]
    assert set(range(8)) <= set(plan.pruned_ffn[0])


def _track(gains, steps=120, target=0.35):
    """A 3-layer tiny wav2vec2, every kind gated, distilling its own copy on fixed random audio: the largest
    |expected MACs - target| once the annealed target stopped moving."""
    from prunehead.pruning.learned import MaskLearner

    teacher = tiny("wav2vec2-tiny", num_hidden_layers=3).eval()
    student = copy.deepcopy(teacher).train()
    learner = MaskLearner(student, ("heads", "ffn", "conv", "layers"), target, steps=steps, lr=1e-4, gate_lr=0.1,
                          gains=gains)
    audio = torch.randn(16, 4, 2000, generator=torch.Generator().manual_seed(1))

    def loss(x):
        def of(model):  # (4,): every hidden state against the teacher's
            with torch.no_grad():
                t = teacher(input_values=x, output_hidden_states=True).hidden_states
            s = model(input_values=x, output_hidden_states=True).hidden_states
            return sum(((a - b) ** 2).mean((1, 2)) for a, b in zip(s, t))
        return of

    for i in range(steps):
        learner.step(loss(audio[i % 16]), 4)
    return max(abs(h["expected_mac_fraction"] - target) for h in learner.history[steps // 2:])


def test_the_pi_multiplier_holds_the_target_where_plain_ascent_swings():
    """Known answer: once the annealed target stops moving (steps 60-120) the expected MACs should sit on it.
    The PI controller (default gains) stays within 0.03; the integral term alone (the plain ascent of
    earlier versions) swings by more than 0.1 on the same run (measured: 0.022 and 0.233). Runs this short
    leave most gates between 0 and 1, so the closed gates are not asked to meet the budget here."""
    from prunehead.pruning.learned import KI, KP

    assert _track((KP, KI)) < 0.03
    assert _track((0.0, 10.0)) > 0.1


def test_cli_method_l0_round_trips_and_its_flags_fail_in_one_line(setup, tmp_path):
    root = setup
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "-m", str(root / "trained"), "-d", str(root / "data"), "--method", "l0",
                                 "--target-macs", "0.96", "--units", "heads,ffn,layers", "--l0-epochs", "2",
                                 "--batch-size", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["kind"] == "learned_budget" and report["l0"]["units"] == ["heads", "ffn", "layers"]
    assert f"l0: the closed gates leave {report['l0']['closed_mac_fraction']:.3f} of the dense MACs" in result.output
    assert (out / "l0.png").stat().st_size > 0
    fresh = prunehead.evaluate(str(out), str(root / "data"), split="test")
    assert fresh["accuracy"] == report["metrics_after"]["accuracy"]
    for args, message in ((["--method", "l0"], "give --target-macs F and --data"),
                          (["--method", "l0", "--target-macs", "0.5", "-d", "x", "--ratio", "0.2"], "drop --ratio"),
                          (["--l0-epochs", "3", "--ratio", "0.2", "-s", "s.json"], "add it"),
                          (["--method", "magic"], "--method must be one of")):
        result = runner.invoke(app, ["prune", "-m", str(root / "trained"), "--out", str(tmp_path / "x"), *args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)


def test_a_learning_step_and_the_plan_run_on_the_meta_device():
    from prunehead.pruning.learned import MaskLearner

    model = tiny("wav2vec2-tiny").to("meta")
    learner = MaskLearner(model, ("heads", "ffn", "layers"), 0.95, steps=2, lr=1e-4, gate_lr=0.1)
    inputs = {k: v.to("meta") for k, v in example_inputs(model, 1.0, batch=2).items()}
    record = learner.step(lambda m: m(**inputs).logits.sum(-1), 2)
    assert record["step"] == 1


def _learn(root, out, **kwargs):
    target = LearnedBudget(0.95, ("heads", "ffn"), epochs=2, lr=1e-3, gate_lr=0.2)
    return prunehead.prune(str(root / "trained"), target, data=prunehead.specs.Data(str(root / "data"), batch_size=5),
                           **kwargs)


def test_a_resumed_run_ends_with_the_masks_and_weights_of_an_uninterrupted_one(setup, tmp_path, monkeypatch):
    """Ctrl-C in the 2nd epoch (24 clips at batch 5: 5 steps an epoch): the step finishes, the state is saved,
    Interrupted names the command; --resume then ends exactly where the uninterrupted run ends."""
    import signal

    from prunehead.errors import Interrupted
    from prunehead.pruning.learned import MaskLearner
    from prunehead.specs import Checkpointing

    whole = _learn(setup, tmp_path)
    step = MaskLearner.step

    def interrupted_at_7(self, *args, **kwargs):
        if self.done == 6:
            signal.raise_signal(signal.SIGINT)  # arrives mid-step: the step still finishes
        return step(self, *args, **kwargs)

    checkpoint = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        patch.setattr(MaskLearner, "step", interrupted_at_7)
        with pytest.raises(Interrupted, match="saved after step 7 .* prunehead again"):
            _learn(setup, tmp_path, checkpoint=Checkpointing(checkpoint, hint="prunehead again"))
    assert checkpoint.is_file()
    resumed = _learn(setup, tmp_path, checkpoint=Checkpointing(checkpoint, resume=True))
    assert resumed.report["l0"]["resumed_steps"] == 7 and whole.report["l0"]["resumed_steps"] == 0
    assert resumed.plan == whole.plan and resumed.plan.num_pruned + resumed.plan.num_pruned_ffn > 0
    assert resumed.report["l0"]["history"] == whole.report["l0"]["history"]
    one, two = whole.model.state_dict(), resumed.model.state_dict()
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    other = LearnedBudget(0.9, ("heads", "ffn"), epochs=2)  # another run's checkpoint is refused
    with pytest.raises(prunehead.InputError, match="other parameters"):
        prunehead.prune(str(setup / "trained"), other, data=prunehead.specs.Data(str(setup / "data"), batch_size=5),
                        checkpoint=Checkpointing(checkpoint, resume=True))


def test_torchrun_with_two_cpu_processes_learns_the_masks_of_one(setup, tmp_path):
    """`torchrun --nproc-per-node 2 prunehead prune --method l0` == one process (no dropout: its noise is drawn
    per process). Batch 23 of 24 clips: the second batch's single row leaves rank 1 a stand-in row."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_engine import _free_port

    model = tmp_path / "model"
    shutil_copy = __import__("shutil").copytree
    shutil_copy(setup / "trained", model)
    config = json.loads((model / "config.json").read_text())
    config.update({k: 0.0 for k in config if "dropout" in k or k in ("layerdrop", "mask_time_prob", "mask_feature_prob")})
    (model / "config.json").write_text(json.dumps(config))
    args = ["prune", "-m", str(model), "-d", str(setup / "data"), "--method", "l0", "--target-macs", "0.93",
            "--units", "heads,ffn", "--l0-epochs", "3", "--l0-lr", "1e-3", "--l0-gate-lr", "0.3", "--batch-size", "23"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRUNEHEAD_PROGRESS": "0"}
    script = Path(sys.executable).parent / "prunehead"
    for name, launch in (("one", []), ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                              "--master-port", str(_free_port())])):
        done = subprocess.run([*launch, str(script), *args, "--out", str(tmp_path / name)], capture_output=True,
                              text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("wrote ") == 1  # rank 0 writes and reports
    one, two = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("one", "two"))
    assert one["l0"]["processes"] == 1 and two["l0"]["processes"] == 2
    assert json.loads((tmp_path / "one" / "plan.json").read_text()) == json.loads((tmp_path / "two" / "plan.json").read_text())
    for a, b in zip(one["l0"]["history"], two["l0"]["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["expected_mac_fraction"] == pytest.approx(
            b["expected_mac_fraction"], abs=1e-5)
    assert one["metrics_after"]["accuracy"] == two["metrics_after"]["accuracy"]
    from safetensors.torch import load_file

    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], atol=2e-5, rtol=1e-4, msg=key)
    assert not (tmp_path / "one.ckpt").exists() and not (tmp_path / "two.ckpt").exists()  # done: removed


def test_cli_resume_flags_and_an_interrupted_run_s_checkpoint(setup, tmp_path):
    out = tmp_path / "pruned"
    (tmp_path / "pruned.ckpt").write_bytes(b"an interrupted run")
    base = ["prune", "-m", str(setup / "trained"), "-d", str(setup / "data"), "--out", str(out)]
    for args, message in ((["--method", "l0", "--target-macs", "0.9"], "holds an interrupted run; pass --resume"),
                          (["--method", "l0", "--target-macs", "0.9", "--resume"], "is not a --method l0 checkpoint"),
                          (["--ratio", "0.2", "--scorer", "random", "--resume"], "other methods keep no checkpoint")):
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)
    assert (tmp_path / "pruned.ckpt").read_bytes() == b"an interrupted run"  # refused, never deleted


def test_a_ranking_cut_far_beyond_the_closed_gates_is_warned(capsys):
    """The failed Whisper run of docs/results.md: gates closed to 0.839, ranked to 0.35 untrained."""
    from prunehead.commands.prune import _decision

    info = {"target": 0.35, "closed_mac_fraction": 0.839, "ranked_to_budget": True}
    _decision({"l0": info})
    assert "warning: the ranking removed 0.49 of the dense MACs" in capsys.readouterr().err
    _decision({"l0": {**info, "closed_mac_fraction": 0.364}})  # a rounding's worth: no warning
    assert "warning" not in capsys.readouterr().err


def test_a_ranking_past_the_closed_gates_takes_the_least_open_units_over_every_kind():
    """Known answer: closed FFN neurons in layer 0 leave 2.5 neurons' MACs above the target; the next least
    open units are four neurons of layer 1 (log_alpha -1), every layer gate is open (1.0, below the rest's 3):
    the plan is the closed neurons plus exactly three of those four, nothing else (the removal order's
    per-kind quantile, used before, took a head here, and two of the four layers of a Whisper run whose
    closed gates were 0.002 above the target: 0.228 of the MACs, test 1.00 -> 0.44)."""
    from prunehead.pruning.learned import MaskLearner

    model = tiny("wav2vec2-tiny", num_hidden_layers=3)
    learner = MaskLearner(model, ("heads", "ffn", "layers"), 1.0, steps=1, lr=1e-4, gate_lr=0.1)
    with torch.no_grad():
        for gate in learner.gates.values():
            gate.log_alpha.fill_(3.0)
        learner.gates["layers"].log_alpha.fill_(1.0)
        learner.gates["ffn"].log_alpha[0, :10] = -5.0  # test-time gate 0: closed
        learner.gates["ffn"].log_alpha[1, :4] = -1.0  # open (gate 0.2), the least open of the rest
    assert learner.plan().pruned_ffn == {0: tuple(range(10))} and not learner.ranked
    neuron = learner.order.unit_macs["ffn"] / learner.order.dense_macs
    learner.target = learner.closed_fraction - 2.5 * neuron
    plan = learner.plan()
    assert learner.ranked and not plan.pruned_layers and not plan.pruned_heads
    assert plan.pruned_ffn[0] == tuple(range(10)) and len(plan.pruned_ffn[1]) == 3
    assert set(plan.pruned_ffn[1]) <= {0, 1, 2, 3}
    inputs = example_inputs(model)
    ratio = count_macs(remove_all_(copy.deepcopy(model), plan), inputs)["total"] / count_macs(model, inputs)["total"]
    assert learner.target - neuron < ratio <= learner.target
