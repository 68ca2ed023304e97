"""`prunehead demo` wires every step together (tiny settings; `make demo` runs the real ones)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from prunehead import head_adapter, load
from prunehead.cli import app


def test_demo_runs_every_step_and_lists_the_artefacts(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--n-per-class", "3", "--epochs", "1",
                                      "--samples", "4", "--steps", "2", "--ratio", "0.25"])
    assert result.exit_code == 0, result.output
    for step in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert step in result.output
    report = json.loads((out / "pruned" / "report.json").read_text())
    assert report["heads_removed"] == 4 and "metrics_after" in report  # floor(0.25 * 16)
    model = load(out / "pruned")
    assert sum(head_adapter(model).heads_per_layer(model)) == 12
    scores = json.loads((out / "scores.json").read_text())
    assert scores["scorer"] == "hib" and scores["samples"] == 4
    assert json.loads((out / "onnx" / "export.json").read_text())["checks"] and (out / "onnx" / "model.onnx").exists()
    for name in ("scores.png", "onnx"):
        assert (out / name).exists() and str(out / name) in result.output
