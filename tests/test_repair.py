"""Training-free repair (`--repair bias|lsq`): the refit equals the closed-form least-squares solution, the
bias fold equals the removed units' mean contribution, and the CLI's folder re-evaluates to what it reported."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

import prunehead
from prunehead.cli import app
from prunehead.heads import head_adapter
from prunehead.pruning.plan import PruningPlan
from prunehead.pruning.repair import calibrate, repair_
from prunehead.units.ffn import ffn_sites
from prunehead.units.kinds import remove_all_

from conftest import dead_head_workspace, tiny

runner = CliRunner()
PLAN = PruningPlan(2, 4, {0: (1,), 1: (0, 2)}, {0: tuple(range(0, 64, 3)), 1: tuple(range(1, 64, 4))}, 64)


def _batches() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"input_values": torch.randn(4, 16000, generator=gen)} for _ in range(3)]


def _inputs_of(model: torch.nn.Module, linear: torch.nn.Module) -> torch.Tensor:
    """(tokens, n) float64: the inputs of `linear` over `_batches()`, captured by a hook."""
    seen = []
    handle = linear.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for batch in _batches():
            model(**batch)
    handle.remove()
    return torch.cat(seen).double()


def _kept_columns_ffn(layer: int) -> list[int]:
    return [i for i in range(64) if i not in PLAN.pruned_ffn[layer]]


def test_lsq_is_the_closed_form_least_squares_refit_of_each_pruned_projection():
    model = tiny("wav2vec2-tiny")
    pruned = remove_all_(copy.deepcopy(model), PLAN)
    report = repair_(pruned, model, calibrate(model, _batches()), "lsq")
    for layer in (0, 1):  # FFN output projections: x (tokens, I) -> y (tokens, D)
        full, cut = ffn_sites(model)[layer].output, ffn_sites(pruned)[layer].output
        x = _inputs_of(model, full)
        y = (x @ full.weight.double().T + full.bias.double()).detach()
        a = torch.cat([x[:, _kept_columns_ffn(layer)], torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        solution = torch.linalg.lstsq(a, y).solution  # (|K| + 1, D)
        torch.testing.assert_close(cut.weight.double(), solution[:-1].T, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cut.bias.double(), solution[-1], atol=1e-4, rtol=1e-4)
        optimum = (a @ solution - y).pow(2).sum() / len(x)
        variance = (y - y.mean(0)).pow(2).sum() / len(x)
        row = next(r for r in report["projections"] if r["units"] == "ffn" and r["layer"] == layer)
        assert row["error_after"] == pytest.approx(float(optimum / variance), rel=1e-3, abs=1e-9)
        assert row["error_after"] < row["error_before"]
    heads = [r for r in report["projections"] if r["units"] == "heads"]
    assert {r["layer"] for r in heads} == {0, 1} and all(r["error_after"] <= r["error_before"] for r in heads)


def test_bias_folds_the_removed_units_mean_contribution():
    model = tiny("wav2vec2-tiny")
    pruned = remove_all_(copy.deepcopy(model), PLAN)
    repair_(pruned, model, calibrate(model, _batches()), "bias")
    adapter = head_adapter(model)
    for layer in (0, 1):
        full = ffn_sites(model)[layer].output
        x = _inputs_of(model, full)
        removed = list(PLAN.pruned_ffn[layer])
        expected = full.bias.double() + full.weight.double()[:, removed] @ x[:, removed].mean(0)
        torch.testing.assert_close(ffn_sites(pruned)[layer].output.bias.double(), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ffn_sites(pruned)[layer].output.weight, full.weight[:, _kept_columns_ffn(layer)])
        out = adapter.sites[layer].out  # heads: the removed heads' columns of out_proj
        x = _inputs_of(model, out)
        d = adapter.head_dim
        cols = [c for h in PLAN.pruned_heads[layer] for c in range(h * d, (h + 1) * d)]
        expected = out.bias.double() + out.weight.double()[:, cols] @ x[:, cols].mean(0)
        torch.testing.assert_close(head_adapter(pruned).sites[layer].out.bias.double(), expected, atol=1e-5,
                                   rtol=1e-5)


def test_an_exact_cut_is_left_as_it_is():
    model = tiny("wav2vec2-tiny")
    with torch.no_grad():  # head 1 of layer 0 contributes nothing: its out_proj columns are 0
        d = head_adapter(model).head_dim
        head_adapter(model).sites[0].out.weight[:, d:2 * d] = 0
    plan = PruningPlan(2, 4, {0: (1,)})
    pruned = remove_all_(copy.deepcopy(model), plan)
    before = copy.deepcopy(pruned.state_dict())
    report = repair_(pruned, model, calibrate(model, _batches()), "lsq")
    assert report["projections"][0]["error_before"] == pytest.approx(0, abs=1e-12)
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("repair")
    dead_head_workspace(root, {"train": 12, "validation": 9, "test": 9}, "train")
    return root


def test_cli_repair_reports_and_round_trips(setup, tmp_path):
    root = setup
    out = tmp_path / "repaired"
    result = runner.invoke(app, ["prune", "-m", str(root / "model"), "-d", str(root / "data"), "-s",
                                 str(root / "gradient.json"), "--ratio", "0.5", "--ffn-ratio", "0.5", "--ffn-scorer",
                                 "magnitude", "--repair", "lsq", "--repair-samples", "8", "--batch-size", "8",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "after repair" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["repair"]["method"] == "lsq" and report["repair"]["samples"] == 8
    assert report["repair"]["split"] == "train"
    fresh = prunehead.evaluate(str(out), str(root / "data"), split="test")
    assert fresh["accuracy"] == report["metrics_after_repair"]["accuracy"]
    assert fresh["loss"] == pytest.approx(report["metrics_after_repair"]["loss"], abs=1e-6)
    assert "after repair" in (out / "README.md").read_text()


def test_repair_options_fail_in_one_line():
    from prunehead.commands.prune_request import request_from_flags

    with pytest.raises(prunehead.InputError, match="give --data"):
        request_from_flags({"ratio": 0.2, "scores": "s.json", "repair": "lsq"})
    with pytest.raises(prunehead.InputError, match="--repair must be bias or lsq"):
        request_from_flags({"ratio": 0.2, "scores": "s.json", "repair": "svd", "data": "d"})
    with pytest.raises(prunehead.InputError, match="--recover-epochs"):
        prunehead.Recovery(0)  # no repair, no epochs: nothing to do
    assert prunehead.Recovery(0, repair="bias").epochs == 0
