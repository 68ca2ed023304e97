"""L0 gates (#25): the hard concrete distribution against its closed forms, and the `l0` head scorer (Voita et
al. 2019) closing planted dead heads first."""

from __future__ import annotations

import math

import pytest
import torch

import prunehead
from prunehead.scorers.registry import build_scorer
from prunehead.training.hard_concrete import BETA, GAMMA, ZETA, HardConcrete

from conftest import DEAD, dead_head_workspace


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("log_alpha", [-2.0, 0.0, 1.5])
def test_hard_concrete_samples_match_the_closed_forms(log_alpha):
    gates = HardConcrete((1,), init=log_alpha)
    z = gates.sample(200_000, torch.Generator().manual_seed(0)).flatten()
    closed = _sigmoid(BETA * math.log(-GAMMA / ZETA) - log_alpha)  # P(z == 0)
    ones = 1 - _sigmoid(BETA * math.log((1 - GAMMA) / (ZETA - 1)) - log_alpha)  # P(z == 1)
    for observed, expected in (((z == 0).float().mean(), closed), ((z == 1).float().mean(), ones)):
        tolerance = 4 * math.sqrt(expected * (1 - expected) / z.numel()) + 1e-4
        assert abs(float(observed) - expected) < tolerance
    assert float(gates.open_probability()) == pytest.approx(1 - closed, rel=1e-6)  # the expected L0 norm
    expected_test = min(1.0, max(0.0, _sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA))
    assert float(gates.deterministic()) == pytest.approx(expected_test, rel=1e-6)
    assert 0.0 <= float(z.min()) and float(z.max()) <= 1.0


def test_the_expected_l0_norm_is_differentiable_in_log_alpha():
    gates = HardConcrete((3,), init=0.5)
    gates.open_probability().sum().backward()
    p = float(gates.open_probability()[0])
    torch.testing.assert_close(gates.log_alpha.grad, torch.full((3,), p * (1 - p)))


def test_l0_closes_the_planted_dead_heads_first(tmp_path):
    from prunehead.training.config import TrainConfig
    from prunehead.training.finetune import fit_

    ws, _ = dead_head_workspace(tmp_path, {"train": 12}, "train")
    fit_(ws.model, str(tmp_path / "data"), TrainConfig(epochs=8, lr=3e-3, head_lr=3e-3, batch_size=4, eval_split=None,
                                                       freeze_feature_encoder=False), source=str(tmp_path / "model"))
    # the dead heads stay dead (their value rows and output columns are both zero: no gradient reaches them)
    scorer = build_scorer("l0", {"epochs": 40})
    scores = scorer.score(ws.model, ws.batches(), ws.task.objective)
    dead = sorted(float(scores[l, h]) for l, heads in DEAD.items() for h in heads)
    live = [float(scores[l, h]) for l in range(2) for h in range(4) if h not in DEAD.get(l, ())]
    assert max(dead) < min(live), (dead, live)


def test_l0_options_fail_in_one_line():
    for options in ({"epochs": 0}, {"penalty": -1.0}, {"lr": 0.0}):
        with pytest.raises(prunehead.InputError):
            build_scorer("l0", options)
