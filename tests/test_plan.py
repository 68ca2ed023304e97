"""select() known answers, ties, limits and the JSON formats."""

from __future__ import annotations

import json
import math

import pytest
import torch

from prunehead.errors import InputError
from prunehead.pruning.plan import PruningPlan, select
from prunehead.pruning.score_files import load_scores, save_scores


def test_global_ratio_removes_floor_of_lowest_scores():
    scores = torch.arange(12.0).reshape(3, 4)  # head (l, h) has score 4l + h
    plan = select(scores, ratio=0.4, scope="global")
    assert plan.num_pruned == math.floor(0.4 * 12) == 4
    assert plan.pruned_heads == {0: (0, 1, 2, 3)}


def test_per_layer_ratio_and_heads():
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, -1.0, 4.0]])
    assert select(scores, ratio=0.5, scope="per_layer").pruned_heads == {0: (1, 3), 1: (0, 2)}
    assert select(scores, heads=1, scope="per_layer").pruned_heads == {0: (3,), 1: (2,)}
    assert select(scores, ratio=0.3, scope="per_layer").pruned_heads == {0: (3,), 1: (2,)}  # floor(1.2)


def test_ties_break_by_layer_then_head():
    scores = torch.zeros(2, 3)
    assert select(scores, ratio=0.5, scope="global").pruned_heads == {0: (0, 1, 2)}
    assert select(scores, heads=2, scope="per_layer").pruned_heads == {0: (0, 1), 1: (0, 1)}


def test_min_heads_per_layer_skips_to_next_lowest():
    scores = torch.tensor([[0.0, 0.1, 0.2], [1.0, 2.0, 3.0]])
    plan = select(scores, ratio=0.5, scope="global", min_heads_per_layer=1)
    assert plan.pruned_heads == {0: (0, 1), 1: (0,)}


def test_already_pruned_heads_count_and_stay():
    scores = torch.arange(8.0).reshape(2, 4).flip(1)  # lowest are the last heads
    done = PruningPlan(2, 4, {1: (0,)})
    plan = select(scores, ratio=0.25, scope="global", pruned=done)
    assert plan.num_pruned == 2 and plan.pruned_heads == {0: (3,), 1: (0,)}


@pytest.mark.parametrize("kwargs, message", [
    (dict(ratio=1.5), "within [0, 1]"), (dict(ratio=-0.1), "within [0, 1]"),
    (dict(heads=4, scope="per_layer"), "--heads"), (dict(), "exactly one"),
    (dict(ratio=0.1, heads=1), "exactly one"), (dict(heads=1, scope="global"), "--per-layer"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        select(torch.zeros(2, 4), **kwargs)


def test_nan_scores_rejected():
    with pytest.raises(InputError, match="NaN"):
        select(torch.tensor([[0.0, float("nan")]]), ratio=0.5)


def test_plan_json_round_trip_and_format(tmp_path):
    plan = PruningPlan(3, 4, {2: (1, 3), 0: (0,)})
    plan.save(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data == {"format": "prunehead.plan", "version": 1, "num_layers": 3, "num_heads": 4,
                    "pruned_heads": {"0": [0], "2": [1, 3]}}
    assert PruningPlan.load(tmp_path / "plan.json") == plan
    assert PruningPlan.from_mask(plan.keep_mask()) == plan


def test_score_file_round_trip_and_validation(tmp_path):
    scores = torch.randn(3, 4, dtype=torch.float64)
    save_scores(tmp_path / "s.json", scores, scorer="random", model="m", seed=0)
    data = json.loads((tmp_path / "s.json").read_text())
    assert {data["format"], data["scorer"], data["num_layers"], data["num_heads"]} == {"prunehead.scores",
                                                                                        "random", 3, 4}
    torch.testing.assert_close(load_scores(tmp_path / "s.json"), scores)
    with pytest.raises(InputError, match="this model has 2 x 4"):
        load_scores(tmp_path / "s.json", expect=(2, 4))
    data["scores"][1][2] = float("inf")
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="NaN or inf"):
        load_scores(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"scores": [[1.0]]}))
    with pytest.raises(InputError, match="not a prunehead score file"):
        load_scores(tmp_path / "other.json")
