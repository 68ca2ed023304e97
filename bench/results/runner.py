"""Run the steps, resumably.

A step is skipped when `<root>/<model>/<step>.json` exists with the step's current fingerprint: the
sha256 of its command lines and of the bytes of its input files (recipe, model folder without
checkpoints/, score files, manifests). Otherwise its commands run in order. Each finished command is
recorded in `<root>/<model>/.<step>.progress.json`, so an interrupted step goes on with the next
command; an interrupted command with its own `--resume` (finetune, score) goes on from its checkpoint.
A step whose inputs changed starts afresh: the outputs its commands create are removed first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .steps import Command, Step
from .store import new_record, read_step, step_path, write_json, write_step

ROOT = Path(__file__).resolve().parents[2]  # the checkout: commands run here
Echo = Callable[[str], None]
_HASHES: dict[tuple[str, int, int], str] = {}


class StepFailed(RuntimeError):
    """A command of a step exited non-zero (one line: which, and how to go on)."""


def _file_hash(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def path_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes; checkpoints/ and hidden entries left out)."""
    if not path.exists():
        return "missing"
    if path.is_file():
        return _file_hash(path)
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        rel = item.relative_to(path)
        if item.is_file() and not any(p == "checkpoints" or p.startswith(".") for p in rel.parts):
            digest.update(f"{rel.as_posix()}\0{_file_hash(item)}\n".encode())
    return digest.hexdigest()


def fingerprint(step: Step) -> str:
    """What the step's figures depend on: its command lines and its input files."""
    data = {"commands": [[*c.argv, *(["--resume"] if c.resume else [])] for c in step.commands],
            "env": [list(c.env) for c in step.commands],
            "inputs": {p.as_posix(): path_hash(p) for p in step.inputs}}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def executable(argv: Iterable[str]) -> list[str]:
    """`prunehead` / `torchrun` from this environment, `python` as this interpreter."""
    here = Path(sys.executable).parent
    tools = {"python": sys.executable}
    for tool in ("prunehead", "torchrun"):
        local = here / tool
        tools[tool] = str(local) if local.exists() else (shutil.which(tool) or tool)
    return [tools.get(a, a) for a in argv]


def _side_files(out: Path) -> list[Path]:
    """What a command leaves beside `out` when interrupted: `OUT.ckpt*` (score), `.OUT.partial` (finetune)."""
    return [*out.parent.glob(f"{out.name}.ckpt*"), *out.parent.glob(f".{out.name}.*")] if out.parent.exists() else []


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _progress_path(root: Path, step: Step) -> Path:
    return root / step.model / f".{step.name}.progress.json"


def _load_progress(root: Path, step: Step, print_: str) -> dict:
    path = _progress_path(root, step)
    progress = json.loads(path.read_text()) if path.exists() else {}
    if progress.get("fingerprint") == print_:
        return progress
    for cmd in step.commands:  # inputs changed (or a first run): nothing of an earlier run may remain
        _remove([*cmd.outs, *(s for o in cmd.outs for s in _side_files(o))])
    return {"fingerprint": print_, "done": {}, "partial": {}}


def _run_command(cmd: Command, step: Step, progress: dict, root: Path, echo: Echo) -> None:
    argv = [*cmd.argv, *(["--resume"] if cmd.resume else [])]
    if not cmd.resume:
        _remove(cmd.outs)  # a non-resumable command starts over
    env = {**os.environ, **dict(cmd.env)}
    shown = " ".join(f"{k}={v}" for k, v in cmd.env)
    echo(f"$ {shown + ' ' if shown else ''}{shlex.join(argv)}")
    started = time.monotonic()
    try:
        code = subprocess.run(executable(argv), cwd=ROOT, env=env).returncode
    finally:
        elapsed = time.monotonic() - started
        spent = progress["partial"].get(cmd.name, 0.0) + elapsed
        progress["partial"][cmd.name] = spent
        write_json(_progress_path(root, step), progress)
    if code != 0:
        raise StepFailed(f"{step.model}/{step.name}: `{shlex.join(argv)}` failed (exit {code}); fix the cause and "
                         "run the same make target again: finished commands are kept")
    progress["done"][cmd.name] = round(spent, 1)
    write_json(_progress_path(root, step), progress)


def run_step(step: Step, root: Path, echo: Echo = print, force: bool = False) -> tuple[bool, float]:
    """Run `step` unless its JSON is up to date; (whether it ran, its recorded wall time)."""
    print_ = fingerprint(step)
    record = read_step(root, step.model, step.name)
    if record and record.get("fingerprint") == print_ and not force:
        echo(f"== {step.model}/{step.name}: up to date ({record.get('wall_s')} s when it ran)")
        return False, 0.0
    echo(f"== {step.model}/{step.name}: {len(step.commands)} command(s)")
    step_path(root, step.model, step.name).unlink(missing_ok=True)  # until it finishes, the step is not done
    progress = _load_progress(root, step, "" if force else print_)
    progress["fingerprint"] = print_
    write_json(_progress_path(root, step), progress)  # from here on, an interrupted step resumes
    for cmd in step.commands:
        finished = cmd.resume and cmd.outs and all(o.exists() for o in cmd.outs[:1])
        if cmd.name in progress["done"] or finished:
            progress["done"].setdefault(cmd.name, round(progress["partial"].get(cmd.name, 0.0), 1))
            echo(f"   {cmd.name}: done in an earlier run")
            continue
        _run_command(cmd, step, progress, root, echo)
    figures, extra = step.extract(progress["done"])
    record = new_record(step.model, step.name, fingerprint=print_)
    record.update(commands=[{"name": c.name, "argv": list(c.argv), "wall_s": progress["done"][c.name]}
                            for c in step.commands], wall_s=round(sum(progress["done"].values()), 1),
                  figures=figures, extra=extra)
    echo(f"   wrote {write_step(root, record)} ({record['wall_s']} s)")
    _progress_path(root, step).unlink(missing_ok=True)
    return True, record["wall_s"]
