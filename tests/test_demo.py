"""`prunehead demo` wires every step together (tiny settings; `make demo` runs the real ones)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
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


TINY = ["--n-per-class", "3", "--epochs", "1", "--samples", "4", "--steps", "2", "--ratio", "0.25"]


def test_a_demo_folder_is_replaced_and_any_other_folder_refused(tmp_path):
    from prunehead.commands.demo import MARKER, fresh_output
    from prunehead.errors import InputError

    out = tmp_path / "demo"
    fresh_output(out)
    (out / "model").mkdir()
    (out / "scores.json").write_text("{}")
    (out / ".model.tmp-123").mkdir()  # left by an interrupted run
    fresh_output(out)  # an earlier demo's folder: a fresh, empty one
    assert sorted(p.name for p in out.iterdir()) == [MARKER]

    (out / "notes.txt").write_text("mine")  # the user's own file: not the demo's to delete
    with pytest.raises(InputError, match="not written by `prunehead demo`"):
        fresh_output(out)
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(InputError, match="--overwrite"):
        fresh_output(mine)
    fresh_output(mine, overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == [MARKER]


def test_the_demo_never_removes_the_working_folder(tmp_path, monkeypatch):
    from prunehead.commands.demo import fresh_output
    from prunehead.errors import InputError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="working folder"):
        fresh_output(tmp_path, overwrite=True)
    assert tmp_path.exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_passes_demo_args_and_uses_the_project_venv():
    root = Path(__file__).resolve().parents[1]
    plan = subprocess.run(["make", "-n", "-C", str(root), "demo", "DEMO_ARGS=--epochs 3 --out elsewhere"],
                          capture_output=True, text=True, check=True).stdout
    assert ".venv/bin/prunehead demo --epochs 3 --out elsewhere" in plan
    assert "-m venv .venv" in plan or (root / ".venv" / "bin" / "python").exists()
    assert "download.pytorch.org/whl/cpu" in plan or (root / ".venv" / ".installed").exists()


@pytest.mark.slow
def test_the_demo_runs_twice_into_the_same_folder(tmp_path):
    """Issue 16: `make demo` twice failed ('prunehead-demo already exists'); now each run starts afresh."""
    out = tmp_path / "prunehead-demo"
    for _ in range(2):
        result = CliRunner().invoke(app, ["demo", "--out", str(out), *TINY])
        assert result.exit_code == 0, result.output
    assert json.loads((out / "pruned" / "report.json").read_text())["heads_removed"] == 4
    assert (out / "onnx" / "model.onnx").exists()


def test_a_failed_demo_leaves_no_half_written_folder(tmp_path, monkeypatch):
    from prunehead.commands import finetune

    def broken(**kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setattr(finetune, "finetune_cmd", broken)
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--data", str(tmp_path / "kws")])
    assert result.exit_code == 1 and "training failed" in result.output and not out.exists()


@pytest.mark.slow
def test_make_demo_twice_gives_the_same_plan_and_metrics_and_its_folder_evaluates_to_them(tmp_path):
    """Issue 22: two runs of the real demo (its defaults, as `make demo` runs it, in fresh processes) decide
    byte-identical plans and report identical metrics; a fresh `prunehead eval` of the pruned folder gives the
    reported metric on the same split. About 2 x 3 min here."""
    import sys

    prunehead = str(Path(sys.executable).parent / "prunehead")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        done = subprocess.run([prunehead, "demo", "--out", str(out)], capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout + done.stderr
        runs.append(out)
    a, b = runs
    assert (a / "pruned" / "plan.json").read_bytes() == (b / "pruned" / "plan.json").read_bytes()
    reports = [json.loads((r / "pruned" / "report.json").read_text()) for r in runs]
    for key in ("metrics_before", "metrics_after", "pruned_heads"):
        assert reports[0][key] == reports[1][key], key
    split = reports[0]["data"]["split"]
    done = subprocess.run([prunehead, "eval", "-m", str(a / "pruned"), "-d", str(a / "data"), "--split", split,
                           "--out", str(tmp_path / "m.json")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    fresh = json.loads((tmp_path / "m.json").read_text())
    assert fresh["accuracy"] == reports[0]["metrics_after"]["accuracy"]
