"""What the commands say: report.json's metrics and their split, the printed lines, the heat map, and
errors that name options which exist."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from prunehead.commands.formatting import model_label
from prunehead.errors import DataError
from tests.conftest import dead_head_workspace, run_main


@pytest.fixture(scope="module")
def train_only(tmp_path_factory):
    """The dead-head model and data with a train split only (selection = evaluated split)."""
    root = tmp_path_factory.mktemp("reports")
    dead_head_workspace(root, {"train": 12}, "train")
    return root


def test_max_drop_on_the_evaluated_split_still_reports_metrics_with_their_split(train_only, tmp_path, monkeypatch):
    titles = []
    import prunehead.plots

    monkeypatch.setattr(prunehead.plots, "heatmap", lambda scores, path, title="", **kw: titles.append(title))
    root = train_only
    code, out, err = run_main("prune", "-m", root / "model", "-s", root / "gradient.json", "--max-drop", 0,
                              "-d", root / "data", "--batch-size", 8, "--out", tmp_path / "p")
    assert code == 0, out + err
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["data"]["split"] == report["selection"]["split"] == "train"
    assert report["metrics_before"]["accuracy"] == report["max_drop"]["unpruned"]["accuracy"]
    assert report["metrics_after"]["accuracy"] == report["max_drop"]["chosen"]["accuracy"]
    assert "accuracy (train): " in out
    assert titles == [f"{model_label(str(root / 'model'))}: head scores"]  # --max-drop draws the ranking that decided; one round: no "last round"


def test_iterative_pruning_names_the_round_of_its_picture(train_only, tmp_path, monkeypatch):
    titles = []
    import prunehead.plots

    monkeypatch.setattr(prunehead.plots, "heatmap", lambda scores, path, title="", **kw: titles.append(title))
    root = train_only
    code, out, err = run_main("prune", "-m", root / "model", "--scorer", "gradient", "--rounds", 2, "--ratio", 0.5,
                              "--samples", 4, "-d", root / "data", "--split", "train", "--out", tmp_path / "p")
    assert code == 0, out + err
    assert titles == [f"{model_label(str(root / 'model'))}: head scores of round 2 (the last that scored)"]
    assert "round 2: 4 heads removed, accuracy" in out and "(train)" in out


def test_a_missing_score_split_names_the_score_split_option(train_only, tmp_path):
    root = train_only
    code, out, err = run_main("prune", "-m", root / "model", "--scorer", "gradient", "--ratio", 0.25, "-d",
                              root / "data", "--score-split", "validation", "--split", "train",
                              "--out", tmp_path / "p")
    assert code == 1 and "use --score-split with one of: train" in err and "--split with" not in err


def test_a_manifest_without_a_label_column_suggests_no_missing_option(tmp_path):
    from prunehead.data import load_data

    sf.write(tmp_path / "a.wav", np.zeros(8000, dtype=np.float32), 16000)
    (tmp_path / "m.csv").write_text("path,word\na.wav,yes\n")
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "m.csv"), "train")
    assert "--label-column" not in str(err.value) and "'label'" in str(err.value)


def test_a_folder_of_bare_wavs_says_how_to_arrange_it(tmp_path):
    from prunehead.data import load_data

    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", np.zeros(8000, dtype=np.float32), 16000)
    for split in ("train", "test"):
        with pytest.raises(DataError, match="without label folders; arrange (it|them) as"):
            load_data(str(tmp_path), split)


@pytest.mark.parametrize("accuracy, chance, warns", [(0.057, 1 / 35, True), (0.2, 1 / 35, False),
                                                     (0.5, 0.5, True), (0.56, 0.5, False)])
def test_the_chance_warning_quotes_the_figures_it_compares(accuracy, chance, warns):
    from prunehead.training.config import chance_warning

    message = chance_warning({"accuracy": accuracy}, chance)
    assert (message is not None) == warns
    if warns:
        threshold = chance + 0.1 * (1 - chance)
        assert f"gets {chance:.3f}" in message and f"under {threshold:.3f}" in message
