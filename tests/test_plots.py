"""The head-score heat map (labelled colour bar, pruned heads marked) and the one way to print ratios."""

from __future__ import annotations

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from prunehead.pruning.plan import PruningPlan
from prunehead.plots import SCORE_UNIT, heatmap, heatmap_figure
from prunehead.commands.formatting import format_ratio, format_speedup, model_label


def red_pixels(path) -> int:
    """Pure-red pixels: the pruned marks (viridis has no red)."""
    rgb = mpimg.imread(path)[..., :3]
    return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.25) & (rgb[..., 2] < 0.25)).sum())


def test_heatmap_writes_a_png_and_marks_exactly_the_pruned_heads(tmp_path):
    scores = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    plan = PruningPlan(num_layers=3, num_heads=4, pruned_heads={0: (1, 3), 2: (0,)})
    heatmap(scores, tmp_path / "plain.png", "plain")
    heatmap(scores, tmp_path / "pruned.png", "pruned", pruned=plan)
    assert red_pixels(tmp_path / "plain.png") == 0 and red_pixels(tmp_path / "pruned.png") > 50

    fig = heatmap_figure(scores, "t", pruned=plan.keep_mask())  # a keep mask marks the same heads
    try:
        (marks,) = [c for c in fig.axes[0].collections if c.get_gid() == "pruned"]
        assert sorted(map(tuple, marks.get_offsets().tolist())) == [(0.0, 2.0), (1.0, 0.0), (3.0, 0.0)]  # (head, layer)
        assert fig.axes[1].get_ylabel() == SCORE_UNIT  # the colour bar says what its colours mean
        assert "3 of 12 heads" in fig.axes[0].get_title()
    finally:
        plt.close(fig)


def test_heatmap_without_a_plan_has_no_marks_and_takes_a_unit():
    fig = heatmap_figure(np.ones((2, 2)), unit="nats")
    try:
        assert not [c for c in fig.axes[0].collections if c.get_gid() == "pruned"]
        assert fig.axes[1].get_ylabel() == "nats"
    finally:
        plt.close(fig)


@pytest.mark.parametrize(("before", "after", "text"), [
    (1155, 1000, "1.16x smaller (86.6%)"),  # the x0.866 / x1.155 pair, written once
    (1000, 1050, "1.05x larger (105.0%)"),
    (1000, 1001, "the same (100.1%)"),
    (1000, 0, "all removed (0.0%)"),
])
def test_format_ratio(before, after, text):
    assert format_ratio(before, after) == text


def test_format_speedup_says_slower_for_a_regression():
    assert format_speedup(10.0, 8.0) == "1.25x faster"
    assert format_speedup(0.94, 1.0) == "1.06x slower"
    assert format_speedup(1.0, 1.001) == "about as fast"


@pytest.mark.parametrize(("model", "label"), [
    ("runs/results/w2v2-12x12-ks/out/model", "w2v2-12x12-ks/out/model"),  # not a bare "model"
    ("model/", "model"), ("./pruned", "pruned"), ("facebook/wav2vec2-base", "facebook/wav2vec2-base"),
    ("arch:wav2vec2-small", "arch:wav2vec2-small"), ("C:\\runs\\a\\b\\model", "a/b/model"),
])
def test_plot_titles_name_the_model_by_its_last_three_path_parts(model, label):
    assert model_label(model) == label
