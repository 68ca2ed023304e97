"""Prune to an accuracy budget (--max-drop) and choose the scorer by measurement (--scorer auto)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import prunehead
from prunehead import AccuracyBudget, Data
from prunehead.commands.prune_request import request_from_flags
from prunehead.pruning.budget import best_curve, max_drop_plan
from prunehead.cli import app
from prunehead.workspace import Workspace
from tests.conftest import DEAD, dead_head_workspace

runner = CliRunner()
N_DEAD = sum(len(h) for h in DEAD.values())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    ws, scores = dead_head_workspace(root, {"train": 12, "validation": 9, "test": 9}, "train")
    return root, ws, scores


def _cli(*args) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def test_max_drop_zero_removes_the_dead_heads_and_reports_what_an_independent_eval_finds(setup, tmp_path):
    root, _, _ = setup
    out = tmp_path / "pruned"
    _cli("prune", "-m", root / "model", "-s", root / "gradient.json", "--max-drop", 0, "-d", root / "data",
         "--batch-size", 8, "--out", out)
    report = json.loads((out / "report.json").read_text())
    removed = prunehead.plan_of(prunehead.load(out)).pruned_heads
    assert all(set(heads) <= set(removed.get(layer, ())) for layer, heads in DEAD.items())  # dead heads gone
    assert report["heads_removed"] >= N_DEAD and report["selection"]["split"] == "validation"
    search = report["max_drop"]
    assert search["chosen"]["accuracy"] >= search["unpruned"]["accuracy"] - 1e-12
    validation = prunehead.evaluate(str(out), str(root / "data"), split="validation")
    test = prunehead.evaluate(str(out), str(root / "data"), split="test")
    assert search["chosen"]["accuracy"] == pytest.approx(validation["accuracy"])
    assert report["metrics_after"]["accuracy"] == pytest.approx(test["accuracy"])  # the test split, apart
    assert report["data"]["split"] == "test"


def test_selection_never_reads_the_test_split_when_there_is_a_validation_split(setup, monkeypatch):
    root, _, _ = setup
    seen: list[str] = []
    original = Workspace.evaluate

    def spy(self, model=None, progress=False):
        seen.append(self.split)
        return original(self, model, progress)

    monkeypatch.setattr(Workspace, "evaluate", spy)
    result = prunehead.prune(str(root / "model"), AccuracyBudget(0.0), ranking=root / "gradient.json",
                             data=Data(str(root / "data"), batch_size=8))
    probes = len(result.report["max_drop"]["probes"])
    assert seen == ["validation"] * probes + ["test", "test"]  # decided on validation, then test reported


def test_bisection_probes_match_gated_evaluations(setup):
    """Every probe's metric is the gated metric of the plan with that many lowest-scored heads removed."""
    _, ws, scores = setup
    search = max_drop_plan(ws.model, scores, ws.evaluate, 0.0)
    assert search.probes[0]["count"] == 0 and len(search.probes) <= 5  # 0, then log2(8) + 1 at most
    for probe in search.probes:
        plan = prunehead.select(scores, ratio=probe["count"] / 8)
        with prunehead.controlled(ws.model) as ctl, ctl.gating(plan.keep_mask()):
            assert probe["accuracy"] == ws.evaluate()["accuracy"]
    within = [p["count"] for p in search.probes if search.unpruned - p["accuracy"] <= 0]
    assert search.count == max(within) >= N_DEAD


def test_scorer_auto_reports_every_candidate_and_keeps_the_best(setup, tmp_path):
    root, _, _ = setup
    out = tmp_path / "auto"
    _cli("prune", "-m", root / "model", "--scorer", "auto", "--auto-scorers", "gradient,attention",
         "--max-drop", 0, "-d", root / "data", "--samples", 12, "--batch-size", 8, "--out", out)
    report = json.loads((out / "report.json").read_text())
    candidates = report["auto"]["candidates"]
    assert set(candidates) == {"gradient", "attention"}
    keys = {n: (c["chosen"]["heads_removed"], c["chosen"]["accuracy"]) for n, c in candidates.items()}
    assert report["auto"]["chosen"] == report["scorer"] == max(keys, key=keys.get)
    assert report["heads_removed"] == keys[report["scorer"]][0]


def test_bad_budget_options_fail_before_loading(tmp_path):
    result = runner.invoke(app, ["prune", "-m", str(tmp_path / "missing"), "-s", "x.json", "--max-drop", "0.01",
                                 "--ratio", "0.2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "drop --ratio" in result.output


def test_sweep_marks_the_best_scorer(setup, tmp_path):
    root, _, _ = setup
    _cli("sweep", "-m", root / "model", "-d", root / "data", "-s", root / "gradient.json", root / "anti.json",
         "--ratios", "0,0.25,0.5", "--batch-size", 8, "--out", tmp_path / "c")
    result = json.loads((tmp_path / "c" / "curve.json").read_text())
    means = {n: sum(p["accuracy"] for p in pts) / len(pts) for n, pts in result["curves"].items() if n != "random"}
    assert result["best"] == max(means, key=means.get) == best_curve(result)
    assert f"{result['best']} (best)" in (tmp_path / "c" / "curve.md").read_text()


def test_target_macs_meets_the_budget_with_the_least_units_and_the_cheapest_first():
    """Known answers on a tiny wav2vec2: the planned MACs equal a FlopCounterMode count of the pruned model,
    the budget is met, one unit fewer would miss it, and units go in score order within each kind."""
    import torch

    from prunehead.pruning.order import target_macs_plan
    from prunehead.cost import count_macs, example_inputs
    from prunehead.units.ffn import prune_ffn_
    from tests.conftest import tiny

    model = tiny("wav2vec2-tiny")
    g = torch.Generator().manual_seed(0)
    heads, neurons = torch.rand(2, 4, generator=g), torch.rand(2, 64, generator=g)
    x = example_inputs(model)
    dense = count_macs(model, x)["total"]
    plan, info = target_macs_plan(model, {"heads": heads, "ffn": neurons}, 0.95)  # the conv front end is most of this model
    pruned = prune_ffn_(prunehead.prune_(copy_of(model), plan), plan)
    after = count_macs(pruned, x)["total"]
    assert after == info["planned_macs"] <= 0.95 * dense  # the plan's arithmetic is what the counter finds
    assert after + max(info["head_macs"], info["neuron_macs"]) > 0.95 * dense  # the last unit was needed
    assert plan.num_pruned and plan.num_pruned_ffn  # both kinds compete
    for layer, removed in plan.pruned_ffn.items():  # within a kind, the lowest scores go first
        kept = [n for n in range(64) if n not in removed]
        assert max(neurons[layer, list(removed)]) <= min(neurons[layer, kept]) or not kept
    with pytest.raises(prunehead.InputError, match="target-macs"):
        target_macs_plan(model, {"heads": heads, "ffn": neurons}, 1.5)
    with pytest.raises(prunehead.InputError, match="out of reach"):
        target_macs_plan(model, {"heads": heads, "ffn": neurons}, 0.5)


def copy_of(model):
    import copy

    return copy.deepcopy(model)


def test_prune_target_macs_through_the_cli_meets_the_budget(setup, tmp_path):
    """The saved model's MACs (report.json, counted with FlopCounterMode) are within the budget."""
    root, _, _ = setup
    out = tmp_path / "macs"
    _cli("prune", "-m", root / "model", "-s", root / "gradient.json", "--target-macs", 0.97, "--ffn-scorer",
         "magnitude", "-d", root / "data", "--batch-size", 8, "--out", out)
    report = json.loads((out / "report.json").read_text())
    assert report["after"]["macs"] <= 0.97 * report["target_macs"]["dense_macs"]
    assert report["after"]["macs"] == report["target_macs"]["planned_macs"]
    loaded = prunehead.load(out)
    assert prunehead.plan_of(loaded).num_pruned_ffn > 0
    result = runner.invoke(app, ["prune", "-m", str(root / "model"), "-s", str(root / "gradient.json"),
                                 "--target-macs", "0.9", "--ratio", "0.2", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "--target-macs chooses" in result.output


def test_scorer_auto_refuses_options_it_would_drop(tmp_path):
    result = runner.invoke(app, ["prune", "-m", str(tmp_path / "missing"), "--scorer", "auto", "--option",
                                 "variant=entropy", "--max-drop", "0.01", "-d", "x", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "drop --option" in result.output


DEAD_NEURONS = {0: tuple(range(0, 64, 2)), 1: tuple(range(1, 64, 4))}  # output columns zeroed: exactly dead


def test_max_drop_over_heads_and_neurons_removes_the_free_prefix_and_stops_at_the_first_costly_unit(setup, tmp_path):
    """--units both: known answers on a model with dead heads and dead FFN neurons. Every unit of the order's
    dead prefix goes (each leaves the metric exactly as it was), the chosen model's metric equals an
    independent evaluation of the saved (physically pruned) model, and removing one unit more breaks the
    budget, also measured on a physically pruned model."""
    import torch

    from prunehead.pruning.order import removal_order
    from prunehead.units.ffn import ffn_sites, prune_ffn_

    root, _, scores = setup
    model = prunehead.load(root / "model")
    with torch.no_grad():
        for site in ffn_sites(model):
            site.output.weight[:, list(DEAD_NEURONS[site.layer])] = 0.0
    prunehead.save_pretrained(model, tmp_path / "model")
    neurons = torch.rand(2, 64, generator=torch.Generator().manual_seed(0)) + 1.0
    for layer, ids in DEAD_NEURONS.items():
        neurons[layer, list(ids)] = 0.0
    order = removal_order(model, {"heads": scores, "ffn": neurons})
    dead = {("head", l, h) for l, hs in DEAD.items() for h in hs} | \
        {("ffn", l, n) for l, ns in DEAD_NEURONS.items() for n in ns}
    free = next(i for i, (kind, layer, unit, _) in enumerate(order.units) if (kind, layer, unit) not in dead)
    assert free > 0 and {u[0] for u in order.units[:free]} == {"head", "ffn"}  # both kinds in the free prefix

    result = prunehead.prune(str(tmp_path / "model"), AccuracyBudget(0.0, units=("heads", "ffn")),
                             ranking={"heads": scores, "ffn": neurons}, data=Data(str(root / "data"), batch_size=8))
    search = result.report["max_drop"]
    count = search["chosen"]["count"]
    assert count >= free and result.plan == order.plan_at(count)
    validation = prunehead.evaluate(result.model, str(root / "data"), split="validation")
    assert search["chosen"]["accuracy"] == pytest.approx(validation["accuracy"], abs=1e-12)
    assert search["unpruned"]["accuracy"] == pytest.approx(
        prunehead.evaluate(str(tmp_path / "model"), str(root / "data"), split="validation")["accuracy"])
    assert result.report["after"]["macs"] == search["chosen"]["planned_macs"]  # the MAC arithmetic is exact
    if count < len(order.units):
        one_more = order.plan_at(count + 1)
        bigger = prune_ffn_(prunehead.prune_(prunehead.load(tmp_path / "model"), one_more), one_more)
        worse = prunehead.evaluate(bigger, str(root / "data"), split="validation")["accuracy"]
        assert search["unpruned"]["accuracy"] - worse > 0.0


def test_units_options_fail_in_one_line_before_loading():
    for kwargs, message in [({"units": "neurons", "max_drop": 0.1}, "--units must be heads, ffn, conv"),
                            ({"units": "both", "ratio": 0.2, "scores": "s.json"}, "give --max-drop"),
                            ({"units": "both", "max_drop": 0.1, "scope": "per_layer", "scores": "s.json",
                              "data": "d"}, "drop --per-layer"),
                            ({"units": "ffn", "max_drop": 0.1, "scorer": "gradient", "data": "d"}, "drop --scores"),
                            ({"units": "both", "max_drop": 0.1, "data": "d"}, "ranks heads too"),
                            ({"units": "ffn", "max_drop": 0.1, "ffn_ratio": 0.2, "data": "d"}, "drop --ffn-ratio")]:
        with pytest.raises(prunehead.InputError, match=message):
            request_from_flags(kwargs)  # the prune command's flags -> values, before anything loads


def test_prune_max_drop_units_ffn_through_the_cli_removes_only_neurons(setup, tmp_path):
    root, _, _ = setup
    out = tmp_path / "ffn"
    result = runner.invoke(app, ["prune", "-m", str(root / "model"), "--max-drop", "0.5", "--units", "ffn",
                                 "--ffn-scorer", "magnitude", "-d", str(root / "data"), "--batch-size", "8",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    loaded = prunehead.load(out)
    assert prunehead.plan_of(loaded).num_pruned == 0  # heads untouched
    assert prunehead.plan_of(loaded).num_pruned_ffn == report["max_drop"]["chosen"]["neurons_removed"] > 0
    assert report["max_drop"]["units"] == "ffn" and "FFN neurons" in result.output


def test_the_removal_order_cuts_each_kind_to_a_quantile_in_proportion_to_the_macs_it_holds():
    """Known answer of the pricing rule: wherever the order is cut, the rank quantiles reached in the heads
    (q_h) and in the neurons (q_n) satisfy q_h / q_n = T_h / T_n (T = the MACs each kind holds), up to one
    unit of each kind."""
    import torch

    from prunehead.pruning.order import removal_order
    from tests.conftest import tiny

    model = tiny("wav2vec2-tiny")
    g = torch.Generator().manual_seed(1)
    order = removal_order(model, {"heads": torch.rand(2, 4, generator=g), "ffn": torch.rand(2, 64, generator=g)},
                          min_per_layer={"ffn": 0})
    n_h, n_n = 8, 128
    t_h, t_n = n_h * order.head_macs, n_n * order.neuron_macs
    for cut in range(1, len(order.units) + 1):
        kinds = [u[0] for u in order.units[:cut]]
        q_h, q_n = (kinds.count("head") - 1) / (n_h - 1), (kinds.count("ffn") - 1) / (n_n - 1)
        if q_h < 0 or q_n < 0:
            continue
        price = max(q_h / t_h, q_n / t_n)  # the cut's price: every unit below it went, none above
        assert q_h / t_h <= price and q_n / t_n <= price
        assert (q_h + 1 / (n_h - 1)) / t_h > price or kinds.count("head") == n_h  # the next head costs more
        assert (q_n + 1 / (n_n - 1)) / t_n > price or kinds.count("ffn") == n_n  # the next neuron costs more
