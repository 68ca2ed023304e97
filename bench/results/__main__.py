"""`make results` / `make results-smoke`: run the steps, then regenerate docs/results.md's tables.

    python -m bench.results run [--smoke] [--models M,..] [--steps S,..] [--force] [--dry-run]
    python -m bench.results render [--smoke | --root DIR] [--check] [--out FILE] [--quiet]
    python -m bench.results import          # docs/results.md's tables -> step JSON (imported: true)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .blocks import BY_ID, split
from .config import FULL, MODELS, Settings, link_fsdd_subset, smoke
from .render import MarkerError, TOLERANCE, find_blocks, parse_block, render
from .runner import ROOT, StepFailed, fingerprint, run_step
from .steps import BUILDERS, build, plan
from .store import new_record, read_step, write_step

DOC = ROOT / "docs" / "results.md"


def _settings(args: argparse.Namespace) -> Settings:
    return smoke() if args.smoke else FULL


def _names(text: str | None, known: list[str], what: str) -> set[str] | None:
    if text is None:
        return None
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def run(args: argparse.Namespace) -> int:
    """Run every step that is not up to date, in order; print the wall time."""
    settings = _settings(args)
    if Path.cwd().resolve() != ROOT:
        raise ValueError(f"run it from the checkout, {ROOT}: its paths (recipes/, runs/) are relative to it")
    models = _names(args.models, list(MODELS), "model")
    steps = _names(args.steps, list(BUILDERS), "step")
    started, ran, spent, done, measured_s = time.monotonic(), 0, 0.0, 0, 0.0
    if settings.fsdd and not args.dry_run:
        from prunehead.data.sources import shared_dir

        link_fsdd_subset(settings, shared_dir())
    for r, name in plan(settings):
        if (models and r.model.name not in models) or (steps and name not in steps):
            continue
        step = build(r, name)
        if args.dry_run:
            record = read_step(settings.root, step.model, name)
            current = bool(record) and record.get("fingerprint") == fingerprint(step)
            measured = float(record.get("wall_s") or 0.0) if current else 0.0
            done, measured_s = done + current, measured_s + measured
            state = f"up to date (measured {measured:,.0f} s)" if current else "would run"
            print(f"== {step.model}/{name}: {state}")
            for cmd in step.commands:
                print("   $ " + " ".join([*(f"{k}={v}" for k, v in cmd.env), *cmd.argv,
                                         *(["--resume"] if cmd.resume else [])]))
            continue
        did, seconds = run_step(step, settings.root, force=args.force)
        ran, spent = ran + did, spent + seconds
    if args.dry_run:
        print(f"{settings.name}: {done} step(s) up to date, their commands measured {measured_s:,.0f} s "
              f"({measured_s / 3600:.1f} h) when they ran")
        return 0
    wall = time.monotonic() - started
    print(f"{settings.name}: {ran} step(s) run ({spent:.0f} s of commands); wall time {wall:.0f} s "
          f"({wall / 3600:.1f} h); JSON in {settings.root}")
    return 0


def render_cmd(args: argparse.Namespace) -> int:
    """Regenerate the marker blocks from the JSON; print every figure beside its documented value."""
    root = Path(args.root) if args.root else _settings(args).root
    doc = Path(args.doc)
    text = doc.read_text()
    new, report = render(text, root, args.tolerance, str(doc), verbose=not args.quiet)
    print("\n".join(report))
    if args.check:
        print(f"{doc}: {'up to date' if new == text else 'would change'} (--check: nothing written)")
        return 0 if new == text else 1
    out = Path(args.out) if args.out else doc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(new)
    print(f"wrote {out}" + ("" if new != text or out != doc else " (unchanged)"))
    return 0


def import_cmd(args: argparse.Namespace) -> int:
    """Parse every table of the document into step JSON marked `imported` (never over a measured file)."""
    root, doc = Path(args.root), Path(args.doc)
    text = doc.read_text()
    lines, records, spans = text.split("\n"), {}, find_blocks(text, str(doc))
    for span in spans:
        block = BY_ID[span.id]
        table = parse_block(block, "\n".join(lines[span.start:span.end]), str(doc))
        for model, part in split(block, table).items():
            key = (model, block.step)
            if key not in records:
                records[key] = read_step(root, model, block.step) or new_record(model, block.step, fingerprint=None,
                                                                                   imported=True)
            if not records[key].get("imported") and not args.overwrite:
                raise ValueError(f"{root}/{model}/{block.step}.json holds measured figures; pass --overwrite to "
                                 "replace them with the documented ones")
            records[key].update(imported=True, fingerprint=None)
            records[key]["figures"][block.part] = part
    for record in records.values():
        write_step(root, record)
    print(f"imported {len(spans)} tables of {doc} into {len(records)} step files under {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the steps that are not up to date")
    p.add_argument("--smoke", action="store_true", help="tiny settings, into runs/results-smoke")
    p.add_argument("--models", help="comma list: only these models")
    p.add_argument("--steps", help="comma list: only these steps")
    p.add_argument("--force", action="store_true", help="run the selected steps even when up to date")
    p.add_argument("--dry-run", action="store_true", help="print each step's state and commands, run nothing")
    p.set_defaults(func=run)
    p = sub.add_parser("render", help="regenerate the tables of docs/results.md from the JSON")
    p.add_argument("--smoke", action="store_true", help="read runs/results-smoke")
    p.add_argument("--root", help="the JSON folder (default runs/results)")
    p.add_argument("--doc", default=str(DOC.relative_to(ROOT)))
    p.add_argument("--out", help="write here instead of --doc")
    p.add_argument("--check", action="store_true", help="print the comparison only; exit 1 if the doc would change")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="flag |new - old| > tol * max(1, |old|)")
    p.add_argument("--quiet", action="store_true", help="one summary line per block")
    p.set_defaults(func=render_cmd)
    p = sub.add_parser("import", help="the document's tables -> step JSON (a one-off seed)")
    p.add_argument("--root", default=str(FULL.root))
    p.add_argument("--doc", default=str(DOC.relative_to(ROOT)))
    p.add_argument("--overwrite", action="store_true", help="replace measured step files too")
    p.set_defaults(func=import_cmd)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MarkerError, StepFailed, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume (finished steps and commands are kept)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
