"""The speed / accuracy frontier (`prunehead sweep --ffn-ratios`): a point equals the physically pruned model
(metric and MACs), the Pareto flags equal a brute-force check, the (0, 0) point is the unpruned model, the
taylor default scores the train split, latency is written for every point and batch size, and option
mistakes are one-line errors before anything loads."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from prunehead import PruningPlan, load, prune_, save_pretrained, save_scores
from prunehead.cost import count_macs, example_inputs
from prunehead.units.ffn import prune_ffn_
from prunehead.experiments.frontier import pareto_flags
from prunehead.scorers.ffn import score_ffn
from prunehead import Data, Frontier, Ranking
from prunehead.workspace import open_workspace
from prunehead.experiments.frontier import run_frontier
from prunehead.heads import head_adapter
from tests.conftest import FAMILIES, dead_head_workspace, inputs_for, logits, run_main, tiny

I = 64  # FFN neurons per layer of the tiny wav2vec2
HEAD_RATIOS, FFN_RATIOS = [0.0, 0.25, 0.5], [0.0, 0.5]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 2 x 4 wav2vec2 with N(0, 0.3) noise on every weight (so pruning moves the loss), tone data with a
    train and a test split, its head scores (no fingerprint) and the frontier of HEAD_RATIOS x FFN_RATIOS."""
    root = tmp_path_factory.mktemp("frontier")
    dead_head_workspace(root, {"test": 24, "train": 12}, "test")
    model = load(str(root / "model"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    save_pretrained(model, root / "jit", source=root / "model")
    heads = torch.rand(2, 4, generator=gen)
    save_scores(root / "heads.json", heads, "made-up", "jit")
    from prunehead import sweep

    result = sweep(str(root / "jit"), Data(str(root / "data"), batch_size=8), [root / "heads.json"], ratios=HEAD_RATIOS,
                   metric="loss", frontier=Frontier(tuple(FFN_RATIOS), Ranking("magnitude")))
    return root, heads, result


def _lowest(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k lowest entries of a vector (ties: the lower index first), by a stable sort."""
    return sorted(torch.argsort(scores, stable=True)[:k].tolist())


def _plan(heads: torch.Tensor, neurons: torch.Tensor, head_ratio: float, ffn_ratio: float) -> PruningPlan:
    """The plan written out by hand: floor(r * 8) heads over the model, floor(r * 64) neurons in each layer."""
    flat = _lowest(heads.flatten(), int(head_ratio * 8 + 1e-9))
    pruned_heads: dict[int, list[int]] = {}
    for index in flat:
        pruned_heads.setdefault(index // 4, []).append(index % 4)
    k = int(ffn_ratio * I + 1e-9)
    pruned_ffn = {l: tuple(_lowest(neurons[l], k)) for l in range(2) if k}
    return PruningPlan(2, 4, {l: tuple(h) for l, h in pruned_heads.items()}, pruned_ffn, I)


def test_every_point_equals_the_physically_pruned_model(setup):
    root, heads, result = setup
    ws = open_workspace(str(root / "jit"), str(root / "data"), "test", batch_size=8)
    neurons = score_ffn(load(str(root / "jit")), scorer="magnitude")
    dense = load(str(root / "jit"))
    dense_macs = count_macs(dense, example_inputs(dense, 1.0))["total"]
    assert result["dense_macs"] == dense_macs
    assert [(p["head_ratio"], p["ffn_ratio"]) for p in result["points"]] == \
        [(h, f) for h in HEAD_RATIOS for f in FFN_RATIOS]
    losses = set()
    for point in result["points"]:
        plan = _plan(heads, neurons, point["head_ratio"], point["ffn_ratio"])
        pruned = prune_ffn_(prune_(load(str(root / "jit")), plan), plan)
        assert (point["heads_removed"], point["neurons_removed"]) == (plan.num_pruned, plan.num_pruned_ffn)
        assert point["loss"] == pytest.approx(ws.evaluate(pruned)["loss"], abs=1e-5)
        macs = count_macs(pruned, example_inputs(pruned, 1.0))["total"]
        assert point["macs"] == macs and point["mac_fraction"] == pytest.approx(macs / dense_macs, rel=1e-12)
        assert point["latency_ms"] is None and point["speedup"] is None and point["pareto_speedup"] is None
        losses.add(round(point["loss"], 6))
    assert len(losses) > 3  # the points differ: the test can tell a wrong plan


@pytest.mark.parametrize("arch", FAMILIES)
def test_each_family_point_equals_its_physically_pruned_model(arch):
    """The engine on every family, with the sum of the logits as the 'metric' (it moves with any change)."""
    model = tiny(arch).eval()
    inputs = inputs_for(arch)
    assert (head_adapter(model).num_layers, head_adapter(model).num_heads) == (2, 4)  # as `_plan` assumes
    gen = torch.Generator().manual_seed(1)
    heads, neurons = torch.rand(2, 4, generator=gen), torch.rand(2, I, generator=gen)
    result = run_frontier(model, lambda m: {"sum": float(logits(m, inputs).sum())}, {"heads": heads, "ffn": neurons},
                          {"heads": [0.5], "ffn": [0.0, 0.5]}, metric="sum", progress=False)
    dense_macs = count_macs(model, example_inputs(model, 1.0))["total"]
    for point in result["points"]:
        plan = _plan(heads, neurons, point["head_ratio"], point["ffn_ratio"])
        pruned = prune_ffn_(prune_(copy.deepcopy(model), plan), plan)
        assert point["sum"] == pytest.approx(float(logits(pruned, inputs).sum()), abs=1e-4)
        assert point["macs"] == count_macs(pruned, example_inputs(pruned, 1.0))["total"]
        assert point["mac_fraction"] == pytest.approx(point["macs"] / dense_macs)
    assert result["points"][0]["sum"] != result["points"][1]["sum"]


def test_pareto_flags_equal_a_brute_force_check(setup):
    _, _, result = setup
    points = result["points"]
    for p in points:  # lower loss is better; lower MACs too
        beaten = any(q["loss"] <= p["loss"] and q["mac_fraction"] <= p["mac_fraction"]
                     and (q["loss"] < p["loss"] or q["mac_fraction"] < p["mac_fraction"]) for q in points)
        assert p["pareto"] == (not beaten)
    assert any(p["pareto"] for p in points) and not all(p["pareto"] for p in points)


def _brute(gain: list[float], cost: list[float]) -> list[bool]:
    return [not any(gain[j] >= gain[i] and cost[j] <= cost[i] and (gain[j] > gain[i] or cost[j] < cost[i])
                    for j in range(len(gain))) for i in range(len(gain))]


def test_pareto_flags_known_answer_and_random_ties():
    #           a    b    c    d    e (= d)  f
    gain = [0.9, 0.8, 0.95, 0.7, 0.7, 0.8]
    cost = [1.0, 0.5, 1.0, 0.3, 0.3, 0.6]
    assert pareto_flags(gain, cost) == [False, True, True, True, True, False]
    rng = random.Random(0)
    for _ in range(300):  # small integer grids: many ties in gain, cost or both
        n = rng.randint(1, 12)
        gain = [float(rng.randint(0, 4)) for _ in range(n)]
        cost = [float(rng.randint(0, 4)) for _ in range(n)]
        assert pareto_flags(gain, cost) == _brute(gain, cost)


def test_the_zero_point_is_the_unpruned_model(setup):
    root, _, result = setup
    zero = result["points"][0]
    assert (zero["head_ratio"], zero["ffn_ratio"], zero["heads_removed"], zero["neurons_removed"]) == (0, 0, 0, 0)
    unpruned = open_workspace(str(root / "jit"), str(root / "data"), "test", batch_size=8).evaluate()
    assert zero["loss"] == pytest.approx(unpruned["loss"], abs=1e-6)
    assert result["unpruned"]["loss"] == zero["loss"] and zero["mac_fraction"] == 1.0


def test_taylor_default_scores_the_train_split(setup):
    root, _, _ = setup
    from prunehead import sweep

    ws = open_workspace(str(root / "jit"), str(root / "data"), "train")
    taylor = score_ffn(ws.model, ws.draw(200, 0, 8).batches, ws.task.objective, scorer="taylor")
    data = Data(str(root / "data"), batch_size=8)
    by_default = sweep(str(root / "jit"), data, [root / "heads.json"], ratios=[0.25], metric="loss",
                       frontier=Frontier((0.5,)))
    given = sweep(str(root / "jit"), data, [root / "heads.json"], ratios=[0.25], metric="loss",
                  frontier=Frontier((0.5,), Ranking(scores=taylor)))
    magnitude = sweep(str(root / "jit"), data, [root / "heads.json"], ratios=[0.25], metric="loss",
                      frontier=Frontier((0.5,), Ranking("magnitude")))
    assert by_default["ffn_scorer"] == "taylor" and given["ffn_scorer"] is None
    assert by_default["points"][0]["loss"] == given["points"][0]["loss"] != magnitude["points"][0]["loss"]


def test_a_pruned_model_counts_its_removed_units_and_the_dense_macs(setup, tmp_path):
    root, heads, _ = setup
    from prunehead import sweep

    before = PruningPlan(2, 4, {0: (1,)}, {1: tuple(range(10))}, I)
    pruned = prune_ffn_(prune_(load(str(root / "jit")), before), before)
    save_pretrained(pruned, tmp_path / "pruned", source=root / "model")
    result = sweep(str(tmp_path / "pruned"), Data(str(root / "data"), batch_size=8), [root / "heads.json"],
                   ratios=[0.0, 0.5], metric="loss", frontier=Frontier((0.0, 0.5), Ranking("magnitude")))
    dense = load(str(root / "jit"))
    dense_macs = count_macs(dense, example_inputs(dense, 1.0))["total"]
    zero = result["points"][0]
    assert (zero["heads_removed"], zero["neurons_removed"]) == (1, 10)
    assert result["dense_macs"] == dense_macs
    assert zero["mac_fraction"] == pytest.approx(count_macs(pruned, example_inputs(pruned, 1.0))["total"] / dense_macs)
    last = result["points"][-1]
    assert (last["heads_removed"], last["neurons_removed"]) == (4, 64)  # the removed count towards the ratio


def test_per_layer_without_ratios_goes_over_k_heads_per_layer(setup):
    root, _, _ = setup
    from prunehead import sweep

    result = sweep(str(root / "jit"), Data(str(root / "data"), batch_size=8), [root / "heads.json"], scope="per_layer",
                   metric="loss", frontier=Frontier((0.0,), Ranking("magnitude")))
    assert [p["heads_removed"] for p in result["points"]] == [0, 2, 4, 6]
    assert result["scope"] == "per_layer" and [p["neurons_removed"] for p in result["points"]] == [0] * 4


def test_the_cli_writes_the_frontier_and_prune_builds_its_points(setup, tmp_path):
    root, _, _ = setup
    save_scores(tmp_path / "ffn.json", score_ffn(load(str(root / "jit")), scorer="magnitude"), "magnitude", "jit",
                units="ffn")
    out = tmp_path / "frontier"
    code, stdout, stderr = run_main("sweep", "-m", root / "jit", "-d", root / "data", "-s", root / "heads.json",
                                    "--ratios", "0,0.5", "--ffn-ratios", "0:0.5:0.5", "--ffn-scores",
                                    tmp_path / "ffn.json", "--metric", "loss", "--batch-size", "8", "--out", out)
    assert code == 0, stderr
    frontier = json.loads((out / "frontier.json").read_text())
    assert frontier["format"] == "prunehead.frontier" and frontier["ffn_score_file"] == str(tmp_path / "ffn.json")
    assert [(p["head_ratio"], p["ffn_ratio"]) for p in frontier["points"]] == [(0, 0), (0, 0.5), (0.5, 0), (0.5, 0.5)]
    table = (out / "frontier.md").read_text()
    assert table.startswith("| head ratio | FFN ratio |") and table in stdout + "\n"
    assert (out / "frontier.png").stat().st_size > 1000
    # what the README promises: `prune` with the point's ratios (heads global, neurons per layer) builds it
    code, _, stderr = run_main("prune", "-m", root / "jit", "-s", root / "heads.json", "--ratio", "0.5",
                               "--ffn-ratio", "0.5", "--ffn-scores", tmp_path / "ffn.json", "--data", root / "data",
                               "--batch-size", "8", "--out", tmp_path / "pruned")
    assert code == 0, stderr
    report = json.loads((tmp_path / "pruned" / "report.json").read_text())
    point = frontier["points"][3]
    assert report["metrics_after"]["loss"] == pytest.approx(point["loss"], abs=1e-5)
    assert report["after"]["macs"] == point["macs"] and report["after"]["params"] == point["params"]


@pytest.mark.parametrize("args, message", [
    (["--ffn-ratios", "0,0.5", "-s", "{root}/heads.json"], "exactly one --scores file (got 2)"),
    (["--ffn-ratios", "0:2:1"], "--ffn-ratios '0:2:1': every ratio must be within [0, 1]"),
    (["--ffn-ratios", "half"], "--ffn-ratios 'half': use START:STOP:STEP"),
    (["--ffn-ratios", "0.5", "--batch-sizes", "1,8"], "add --latency or drop --batch-sizes"),
    (["--ffn-ratios", "0.5", "--latency", "--batch-sizes", "1,x"], "--batch-sizes '1,x'"),
    (["--latency"], "--latency belongs to the frontier: add --ffn-ratios"),
    (["--ffn-ratios", "0.5", "--ffn-scorer", "random"], "--ffn-scorer must be one of taylor, magnitude"),
])
def test_option_mistakes_are_one_line_errors(setup, tmp_path, args, message):
    root, _, _ = setup
    out = tmp_path / "never"
    code, _, stderr = run_main("sweep", "-m", root / "jit", "-d", root / "data", "-s", root / "heads.json",
                               "--out", out, *[a.format(root=root) for a in args])
    assert code == 1 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists()


@pytest.mark.slow
def test_latency_is_written_for_every_point_and_batch_size(setup, tmp_path):
    root, _, _ = setup
    out = tmp_path / "timed"
    code, stdout, stderr = run_main("sweep", "-m", root / "jit", "-d", root / "data", "-s", root / "heads.json",
                                    "--ratios", "0", "--ffn-ratios", "0,0.5", "--ffn-scorer", "magnitude",
                                    "--latency", "--batch-sizes", "1,2", "--repeats", "2", "--seconds", "0.5",
                                    "--metric", "loss", "--out", out)
    assert code == 0, stderr
    frontier = json.loads((out / "frontier.json").read_text())
    assert frontier["latency"]["batch_sizes"] == [1, 2] and set(frontier["latency"]["dense_ms"]) == {"1", "2"}
    for point in frontier["points"]:
        assert set(point["latency_ms"]) == set(point["speedup"]) == set(point["pareto_speedup"]) == {"1", "2"}
        assert all(ms > 0 for ms in point["latency_ms"].values()) and all(x > 0 for x in point["speedup"].values())
    assert frontier["points"][0]["speedup"] == {"1": 1.0, "2": 1.0}  # (0, 0) is the dense model itself
    assert "ms @ batch 2 (speedup)" in stdout and (out / "frontier.png").stat().st_size > 1000
