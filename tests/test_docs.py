"""Every `prunehead ...` command in the README's and docs' fenced code blocks parses as written.

bash expands each command (variables set earlier in the block, brace expansion, quotes) with `prunehead`
replaced by a function that prints its arguments; click then parses them with the real CLI
(`make_context`: option names, types, choices, required options) without running anything. typer
vendors click, so only typer's public names are used: `typer.main.get_command`, `typer.TyperException`. A command
whose line comment says `(upcoming)` documents an option that does not exist yet and is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[ \t]*(\w*)[ \t]*\n(.*?)^```", re.S | re.M)
ASSIGNMENT = re.compile(r"^\s*(export\s+)?[A-Za-z_]\w*=")
COMMAND = re.compile(r"^\s*(?:[A-Z_]+=\S+\s+)*(?:(?:torchrun|accelerate)\b.*?\$\(which prunehead\)|prunehead)\s")
UPCOMING = "(upcoming)"
# bash: `prunehead` prints its arguments NUL-separated; `torchrun|accelerate ... $(which prunehead) ARGS` too.
PRELUDE = """
prunehead() { printf '%s\\0' "$@"; }
which() { echo prunehead; }
torchrun() { while [ "$#" -gt 0 ] && [ "$1" != prunehead ]; do shift; done; "$@"; }
accelerate() { torchrun "$@"; }
"""


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    setup: tuple[str, ...]  # the block's variable assignments before the command
    line: str  # one logical line (continuations joined)

    def argv(self) -> list[str]:
        """The arguments `prunehead` receives when bash runs this line."""
        script = PRELUDE + "\n".join([*self.setup, self.line])
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{self.where}: bash cannot run `{self.line}`: {done.stderr.strip()}"
        return done.stdout.split("\0")[:-1]


def logical_lines(block: str, first_line: int) -> list[tuple[int, str]]:
    """(line number, text) with backslash-newline continuations joined."""
    lines, start, parts = [], first_line, []
    for number, raw in enumerate(block.splitlines(), first_line):
        if not parts:
            start = number
        parts.append(raw[:-1] if raw.rstrip().endswith("\\") else raw)
        if not raw.rstrip().endswith("\\"):
            lines.append((start, " ".join(p.strip() for p in parts)))
            parts = []
    return lines


def doc_commands() -> list[DocCommand]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match[1] not in ("", "bash", "sh", "shell", "console"):
                continue
            first = text.count("\n", 0, match.start(2)) + 1
            setup: list[str] = []
            for number, line in logical_lines(match[2], first):
                if COMMAND.match(line):
                    found.append(DocCommand(f"{path.relative_to(ROOT)}:{number}", tuple(setup), line))
                elif ASSIGNMENT.match(line):
                    setup.append(line)
    return found


def parse(command: Any, args: list[str], name: str = "prunehead", parent: Any = None) -> Any:
    """Parse `args` as the CLI would, down to the leaf command, without invoking anything (the leaf's
    context); a usage error raises `typer.TyperException`."""
    ctx = command.make_context(name, list(args), parent=parent)
    if hasattr(command, "resolve_command"):  # a group: parse on with its subcommand
        rest = [*(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])), *ctx.args]
        sub_name, sub, sub_args = command.resolve_command(ctx, rest)
        return parse(sub, sub_args, sub_name, ctx)
    return ctx


COMMANDS = doc_commands()


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) >= 20 and any(c.where.startswith("README.md") for c in COMMANDS)


def test_the_readme_set_up_is_two_commands():
    """Issue 16: a new user types `make demo` and `make test`, nothing else (the Makefile does the rest)."""
    text = (ROOT / "README.md").read_text()
    set_up = text[text.index("## Set-up"):text.index("\n## ", text.index("## Set-up") + 1)]
    assert [m[2].strip() for m in FENCE.finditer(set_up)] == ["make demo", "make test"]


def test_an_unknown_option_or_bad_value_is_caught():
    """The checker itself: what it must reject, it rejects."""
    from prunehead.cli import app

    cli = typer.main.get_command(app)
    parse(cli, ["eval", "--model", "m", "--data", "d"])
    for bad in (["eval", "--model", "m", "--data", "d", "--no-such-option"],
                ["prune", "--model", "m", "--ratio", "half", "--out", "o"],
                ["no-such-command"]):
        with pytest.raises(typer.TyperException):
            parse(cli, bad)
    braces = DocCommand("x", ('S="a-{b,c}.json"',), "prunehead sweep -m M -d D --scores $S --out o")
    assert braces.argv()[-3] == "a-{b,c}.json"  # quoted braces reach the program unexpanded


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("doc", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_commands_parse_as_written(doc: DocCommand):
    from prunehead.cli import app

    if UPCOMING in doc.line:
        pytest.skip(f"{doc.where} documents an upcoming option")
    args = doc.argv()
    unexpanded = [a for a in args if re.search(r"\{[^}]*,[^}]*\}|\$\w", a)]
    assert not unexpanded, f"{doc.where}: the shell passes {unexpanded} unexpanded (braces or $ in quotes?)"
    cli = typer.main.get_command(app)
    if "..." in args:  # an elided command (`score ...`): its subcommand must exist
        args = args[:args.index("...")]
        ctx = cli.make_context("prunehead", args[:1])
        assert cli.get_command(ctx, args[0]) is not None, f"{doc.where}: no command {args[0]!r}"
        return
    try:
        parse(cli, args)
    except typer.TyperException as err:
        pytest.fail(f"{doc.where}: `{doc.line}` does not parse: {err.format_message()}")


def test_the_readme_library_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Python block, run on a tiny saved model and tone data in its paths; every `prunehead.X`
    it names exists and takes what it is given. Changed for speed: no training and no latency timing (the
    commands' own tests run those), one timed run per export, and a MAC budget the tiny model can reach
    (its conv front end is most of its MACs)."""
    from tests.conftest import dead_head_workspace

    readme = (ROOT / "README.md").read_text()
    block = next(body for lang, body in FENCE.findall(readme) if lang == "python" and "prunehead.prune(" in body)
    dead_head_workspace(tmp_path, {"train": 6, "test": 6}, "test")
    (tmp_path / "data" / "validation").mkdir()  # the budget decides on validation when there is one
    for label in (tmp_path / "data" / "test").iterdir():
        shutil.copytree(label, tmp_path / "data" / "validation" / label.name)
    monkeypatch.chdir(tmp_path)
    code = (block.replace("path/or/hub-id", "model/").replace("kws/", "data/").replace("samples=64", "samples=4")
            .replace("latency=True", "latency=False").replace("MacBudget(0.7)", "MacBudget(0.95)")
            .replace('"onnx/", data=data)', '"onnx/", ExportOptions(repeats=1), data=data)'))
    code = "\n".join(line for line in code.splitlines() if "prunehead.finetune(" not in line)
    from prunehead.export import ExportOptions

    namespace: dict[str, Any] = {"ExportOptions": ExportOptions}
    exec(compile(code.replace("    ...", "    pass"), "README.md", "exec"), namespace)
    assert namespace["pruned"].plan.num_pruned == 3  # 40 % of 8 heads, rounded down
    assert (tmp_path / "pruned" / "plan.json").exists() and namespace["frontier"]["points"]
    assert namespace["summary"]["checks"]["data"]["metrics"] and (tmp_path / "onnx" / "model.onnx").exists()
