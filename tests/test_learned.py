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


def test_cli_method_l0_round_trips_and_its_flags_fail_in_one_line(setup, tmp_path):
    root = setup
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "-m", str(root / "trained"), "-d", str(root / "data"), "--method", "l0",
                                 "--target-macs", "0.96", "--units", "heads,ffn,layers", "--l0-epochs", "2",
                                 "--batch-size", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["kind"] == "learned_budget" and report["l0"]["units"] == ["heads", "ffn", "layers"]
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
