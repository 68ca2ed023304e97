"""`make results` (bench/results): docs/results.md round-trips through its JSON, a changed figure changes
exactly its cell and is reported beside the documented value, up-to-date steps are skipped and changed or
interrupted ones re-run, and broken markers fail with one line naming the block. No training here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results.__main__ import main  # noqa: E402
from bench.results.blocks import BLOCKS  # noqa: E402
from bench.results.render import MarkerError, find_blocks, render  # noqa: E402
from bench.results.runner import StepFailed, run_step  # noqa: E402
from bench.results.steps import Command, Step  # noqa: E402
from bench.results.store import read_step, write_step  # noqa: E402

DOC = ROOT / "docs" / "results.md"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JSON parsed once from the document's tables (`python -m bench.results import`)."""
    root = tmp_path_factory.mktemp("results")
    assert main(["import", "--root", str(root), "--doc", str(DOC)]) == 0
    return root


def test_the_document_renders_byte_identically_from_its_imported_json(imported: Path):
    text = DOC.read_text()
    new, report = render(text, imported)
    assert new == text
    assert render(new, imported)[0] == new  # deterministic: same JSON, same bytes
    assert not [line for line in report if "kept as documented" in line]  # every block came from JSON
    assert len(find_blocks(text)) == len(BLOCKS) == 24


def test_a_changed_figure_changes_its_cell_and_is_reported_beside_the_documented_one(imported: Path, tmp_path):
    root = tmp_path / "results"
    for file in imported.rglob("*.json"):
        (root / file.relative_to(imported)).parent.mkdir(parents=True, exist_ok=True)
        (root / file.relative_to(imported)).write_text(file.read_text())
    record = read_step(root, "whisper-tiny-fsdd-ks", "curves")
    row = next(r for r in record["figures"]["global"]["rows"] if r["key"] == "0.4")
    documented, row["hib"] = row["hib"], 0.5  # the imported JSON holds the documented figure
    write_step(root, record)
    text = DOC.read_text()
    new, report = render(text, root)
    changed = [(a, b) for a, b in zip(text.split("\n"), new.split("\n")) if a != b]
    assert len(text.split("\n")) == len(new.split("\n")) and len(changed) == 1
    before, after = changed[0]
    assert before.replace(f"**{documented:.4f}**", "**0.5000**") == after
    assert f"whisper-tiny-fsdd-ks/global hib@0.4: 0.5 (documented {documented:.6g})   <-- MOVED" in report
    assert "whisper-tiny-fsdd-ks/global attention@0.4: 0.98 (documented 0.98)" in report


def test_check_mode_writes_nothing_and_says_whether_the_document_would_change(imported: Path, tmp_path, capsys):
    doc = tmp_path / "results.md"
    doc.write_text(DOC.read_text())
    assert main(["render", "--check", "--root", str(imported), "--doc", str(doc)]) == 0
    record = read_step(imported, "w2v2-12x12-ks", "train")
    documented = record["figures"]["trained"]["rows"][0]["wall_s"]  # as the document states it
    record["figures"]["trained"]["rows"][0]["wall_s"] = 1000.0
    empty = tmp_path / "other"
    write_step(empty, record)
    assert main(["render", "--check", "--root", str(empty), "--doc", str(doc)]) == 1
    assert doc.read_text() == DOC.read_text()
    out = capsys.readouterr().out
    assert f"all/trained wall_s@w2v2-12x12-ks: 1000 (documented {documented:g})   <-- MOVED" in out
    assert "whisper-tiny-fsdd-ks/global: no JSON" in out  # blocks without JSON keep their table


def _step(tmp_path: Path, code: str, inputs: tuple[Path, ...] = (), name: str = "s") -> Step:
    out = tmp_path / "out.txt"
    return Step("m", name, (Command("write", ("python", "-c", code), (out,)),), inputs,
                lambda walls: ({"part": {"rows": [{"key": "x", "text": out.read_text()}]}}, {}))


def test_a_step_with_matching_json_is_skipped_and_reruns_when_its_inputs_change(tmp_path):
    root, recipe, log = tmp_path / "json", tmp_path / "recipe.toml", tmp_path / "runs.log"
    recipe.write_text("epochs = 1\n")
    code = f"open({str(tmp_path / 'out.txt')!r}, 'w').write('A'); open({str(log)!r}, 'a').write('x')"
    quiet = lambda line: None  # noqa: E731
    assert run_step(_step(tmp_path, code, (recipe,)), root, quiet)[0]
    assert not run_step(_step(tmp_path, code, (recipe,)), root, quiet)[0]  # same inputs: skipped
    assert log.read_text() == "x"
    recipe.write_text("epochs = 2\n")  # an input changed
    assert run_step(_step(tmp_path, code, (recipe,)), root, quiet)[0]
    assert run_step(_step(tmp_path, code.replace("'A'", "'B'"), (recipe,)), root, quiet)[0]  # the command changed
    assert log.read_text() == "xxx"
    assert read_step(root, "m", "s")["figures"]["part"]["rows"][0]["text"] == "B"


def test_an_interrupted_step_resumes_with_its_next_command(tmp_path):
    root, log, flag = tmp_path / "json", tmp_path / "runs.log", tmp_path / "fail"
    flag.touch()
    first = Command("first", ("python", "-c", f"open({str(log)!r}, 'a').write('1')"), (tmp_path / "a",))
    second = Command("second", ("python", "-c", f"import os, sys; open({str(log)!r}, 'a').write('2'); "
                                                f"sys.exit(os.path.exists({str(flag)!r}))"), (tmp_path / "b",))
    step = Step("m", "two", (first, second), (), lambda walls: ({}, {"walls": sorted(walls)}))
    with pytest.raises(StepFailed, match="m/two: .* failed .*finished commands are kept"):
        run_step(step, root, lambda line: None)
    assert read_step(root, "m", "two") is None
    flag.unlink()
    assert run_step(step, root, lambda line: None)[0]
    assert log.read_text() == "122"  # the first command did not run again
    assert read_step(root, "m", "two")["extra"]["walls"] == ["first", "second"]


def _one_line_naming(error: pytest.ExceptionInfo, block: str) -> None:
    message = str(error.value)
    assert "\n" not in message and block in message, message


def test_markers_missing_or_unbalanced_give_one_line_naming_the_block():
    text = DOC.read_text()
    opening = "<!-- results:whisper-tiny-fsdd-sid/global -->"
    start = text.index(opening)
    closing = text.index("<!-- /results -->", start)
    unclosed = text[:closing] + text[closing + len("<!-- /results -->\n"):]
    with pytest.raises(MarkerError) as e:
        find_blocks(unclosed)
    _one_line_naming(e, "whisper-tiny-fsdd-sid/global")
    with pytest.raises(MarkerError) as e:
        find_blocks(text.replace(opening + "\n", ""))  # its closing marker now closes nothing
    assert "closes no block" in str(e.value)
    with pytest.raises(MarkerError) as e:
        find_blocks(_drop_block(text, opening))
    _one_line_naming(e, "whisper-tiny-fsdd-sid/global")
    with pytest.raises(MarkerError) as e:
        find_blocks(text.replace(opening, "<!-- results:whisper-tiny-fsdd-sid/globl -->"))
    _one_line_naming(e, "whisper-tiny-fsdd-sid/globl")


def _drop_block(text: str, opening: str) -> str:
    """The document without one block's two markers (its table stays, unmarked)."""
    start = text.index(opening)
    closing = text.index("<!-- /results -->\n", start)
    return text[:start] + text[start + len(opening) + 1:closing] + text[closing + len("<!-- /results -->\n"):]


def test_a_table_that_no_longer_parses_names_its_block(tmp_path):
    text = DOC.read_text().replace("| ratio | removed | gradient WER |", "| ratio | removed | gradient |")
    with pytest.raises(MarkerError) as e:
        render(text, tmp_path)
    _one_line_naming(e, "w2v2-12x12-asr/global")


def test_import_never_overwrites_measured_json(imported: Path, tmp_path):
    record = json.loads((imported / "whisper-tiny-fsdd-ks" / "curves.json").read_text())
    record.update(imported=False, fingerprint="abc")
    write_step(tmp_path, record)
    assert main(["import", "--root", str(tmp_path), "--doc", str(DOC)]) == 1
    assert read_step(tmp_path, "whisper-tiny-fsdd-ks", "curves")["fingerprint"] == "abc"


@pytest.mark.parametrize("which", ["full", "smoke"])
def test_every_planned_prunehead_command_parses_with_the_cli(which: str, tmp_path):
    """Each step's command lines, as `make results` / `make results-smoke` would run them, are valid CLI calls."""
    import typer
    from test_docs import parse

    from bench.results.config import FULL, smoke
    from bench.results.steps import build, plan
    from prunehead.cli import app

    cli = typer.main.get_command(app)
    settings = FULL if which == "full" else smoke(tmp_path / "smoke")
    steps = [build(r, name) for r, name in plan(settings)]
    assert {s.name for s in steps} >= {"train", "scores", "curves", "hib64", "iterative", "budget", "both",
                                       "frontier", "goal", "hib200", "synth"}
    for step in steps:
        for cmd in step.commands:
            argv = [*cmd.argv, *(["--resume"] if cmd.resume else [])]
            if argv[0] == "torchrun":
                argv = argv[argv.index("prunehead"):]
            if argv[0] == "prunehead":
                parse(cli, argv[1:])  # a usage error raises
            else:
                assert argv[:2] == ["python", "bench/fsdd_selection.py"], argv


def test_every_block_reads_a_part_its_step_writes():
    from bench.results.extract import PARTS

    for block in BLOCKS:
        assert block.part in PARTS[block.step], f"{block.id}: step {block.step} writes no part {block.part!r}"


def test_the_smoke_json_feeds_every_block_it_measures():
    """Where `make results-smoke` has run, each of its step files holds only parts that PARTS names."""
    from bench.results.config import smoke
    from bench.results.extract import PARTS

    root = ROOT / smoke().root
    files = list(root.glob("*/*.json")) if root.is_dir() else []
    if not files:
        pytest.skip("no runs/results-smoke: run `make results-smoke`")
    for file in files:
        record = json.loads(file.read_text())
        assert set(record["figures"]) <= set(PARTS[record["step"]]), file
        assert record["figures"] or not PARTS[record["step"]], file


def test_dry_run_counts_the_measured_wall_time_of_up_to_date_steps_only(tmp_path, monkeypatch, capsys):
    """`run --dry-run` sums `wall_s` over the steps whose JSON matches their fingerprint; a stale one is
    listed as 'would run' and left out of the sum."""
    import bench.results.__main__ as cli
    from bench.results.config import smoke
    from bench.results.runner import fingerprint
    from bench.results.steps import build, plan
    from bench.results.store import new_record

    settings = smoke(tmp_path / "smoke")
    monkeypatch.setattr(cli, "_settings", lambda args: settings)
    monkeypatch.chdir(ROOT)
    (r1, n1), (r2, n2) = plan(settings)[:2]
    fresh, stale = build(r1, n1), build(r2, n2)
    for step, print_, wall in ((fresh, fingerprint(fresh), 120.0), (stale, "an older fingerprint", 999.0)):
        record = new_record(step.model, step.name, fingerprint=print_)
        record["wall_s"] = wall
        write_step(settings.root, record)
    assert main(["run", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"== {fresh.model}/{fresh.name}: up to date (measured 120 s)" in out
    assert f"== {stale.model}/{stale.name}: would run" in out
    assert "1 step(s) up to date, their commands measured 120 s (0.0 h)" in out
