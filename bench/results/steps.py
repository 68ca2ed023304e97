"""The steps of `make results`, declared per model: the prunehead commands docs/results.md documents.

A step is a few commands (each with the outputs it creates, and whether its own `--resume` continues an
interrupted run), the input files its figures depend on, and the function that reads its figures from
the outputs (`extract`). Steps are built just before they run, so a command line may use an earlier
step's result (the `both` step ranks heads with the scorer `--scorer auto` chose).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import extract
from .config import AUTO_SCORERS, BUDGET_SCORERS, MODELS, Model, Settings
from .blocks import ASR, W2V2


@dataclass(frozen=True)
class Command:
    """One command line: argv[0] is `prunehead`, `python` or `torchrun` (resolved to this environment)."""

    name: str  # unique in its step: the key of its wall time
    argv: tuple[str, ...]
    outs: tuple[Path, ...]  # what it creates: removed before a fresh run, and to skip a finished resumable one
    resume: bool = False  # append --resume: its own checkpoint continues an interrupted run
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Step:
    model: str
    name: str
    commands: tuple[Command, ...]
    inputs: tuple[Path, ...]  # files and folders whose bytes go into the fingerprint
    extract: Callable[[dict[str, float]], tuple[dict[str, Any], dict[str, Any]]] = field(compare=False)


@dataclass(frozen=True)
class Run:
    """A model under a configuration: where its files go."""

    model: Model
    s: Settings

    @property
    def work(self) -> Path:
        return self.s.work(self.model.name)

    @property
    def net(self) -> Path:
        return self.work / "model"

    @property
    def data(self) -> str:
        return self.s.data(self.model)

    @property
    def selection(self) -> Path:
        return self.work / "selection.csv"

    def scores(self, name: str) -> Path:
        return self.work / "scores" / f"{name}.json"


def _steps(r: Run, scorer: str, flag: str = "--steps") -> tuple[str, ...]:
    """HIB steps / AttAttr points when the settings shrink them (SMOKE), as `score --steps N` or `--option`."""
    if r.s.steps is None or scorer not in ("hib", "attattr"):
        return ()
    if scorer == "attattr":
        return ("--option", f"points={r.s.steps}")
    return ("--steps", str(r.s.steps)) if flag == "--steps" else ("--option", f"steps={r.s.steps}")


def _score(r: Run, scorer: str, out: Path, samples: int, torchrun: int = 1) -> Command:
    argv = ["prunehead", "score", "-m", str(r.net), "-d", r.data, "--scorer", scorer, "--samples", str(samples),
            "--batch-size", str(r.s.batch_size), *_steps(r, scorer), "--out", str(out)]
    env: tuple[tuple[str, str], ...] = ()
    if torchrun > 1:
        argv, env = ["torchrun", "--nproc-per-node", str(torchrun), *argv], (("OMP_NUM_THREADS", "1"),)
    return Command(f"score-{out.stem}", tuple(argv), (out, out.with_suffix(".png")), resume=True, env=env)


def _sweep(r: Run, name: str, files: list[Path], *flags: str) -> Command:
    out = r.work / "sweeps" / name
    argv = ["prunehead", "sweep", "-m", str(r.net), "-d", r.data, *(a for f in files for a in ("-s", str(f))),
            *flags, "--batch-size", str(r.s.eval_batch), "--out", str(out)]
    return Command(f"sweep-{name}", tuple(argv), (out,))


def _prune(r: Run, name: str, *flags: str, data: str | None = None, folder: str = "pruned") -> Command:
    out = r.work / folder / name
    argv = ["prunehead", "prune", "-m", str(r.net), *flags, "-d", data or r.data, "--batch-size",
            str(r.s.eval_batch), "--out", str(out)]
    return Command(f"{folder}-{name}", tuple(argv), (out,))


def synth(r: Run) -> Step:
    out = r.work / "synth-asr"
    cmd = Command("synth", ("prunehead", "data", "synth", "asr", "--out", str(out), *r.s.asr_synth), (out,))
    return Step(r.model.name, "synth", (cmd,), (), lambda walls: ({}, {}))


def train(r: Run) -> Step:
    extra: list[str] = []
    inputs = [Path(r.model.recipe)]
    if r.model.name == ASR:  # the recipe's encoder is the keyword model; its data is synthesized
        ks = r.s.work(W2V2) / "model"
        extra, inputs = ["--model", str(ks), "--data", r.data], inputs + [ks, Path(r.data)]
    argv = ("prunehead", "finetune", "--recipe", r.model.recipe, *extra, *r.s.train_flags.get(r.model.name, ()),
            "--out", str(r.net))
    cmd = Command("finetune", argv, (r.net, r.net.with_name(f".{r.net.name}.partial")), resume=True)
    return Step(r.model.name, "train", (cmd,), tuple(inputs), lambda walls: extract.train(r, argv, walls))


def scores(r: Run) -> Step:
    cmds = [_score(r, s, r.scores(s), r.s.samples) for s in r.model.scorers]
    if r.model.target != "asr":  # FFN neuron scores, for --units both, the frontier and the goal
        ffn = r.scores("ffn")
        cmds.append(Command("score-ffn", ("prunehead", "score", "-m", str(r.net), "-d", r.data, "--units", "ffn",
                                          "--scorer", "taylor", "--samples", str(r.s.samples), "--batch-size",
                                          str(r.s.batch_size), "--out", str(ffn)), (ffn, ffn.with_suffix(".png"))))
    return Step(r.model.name, "scores", tuple(cmds), (r.net,), lambda walls: extract.scores(r, walls))


def curves(r: Run) -> Step:
    files = [r.scores(s) for s in r.model.scorers]
    if r.model.target == "asr":
        cmds = [_sweep(r, "global", files, "--ratios", r.s.asr_ratios, "--global")]
    else:
        per_layer = ("--ratios", r.s.per_layer_ratios) if r.s.per_layer_ratios else ()
        cmds = [_sweep(r, "global", files, "--ratios", r.s.ratios, "--global"),
                _sweep(r, "per-layer", files, *per_layer, "--per-layer")]
    return Step(r.model.name, "curves", tuple(cmds), (r.net, *files), lambda walls: extract.curves(r))


def hib64(r: Run) -> Step:
    hib, more = r.scores("hib"), r.scores("hib64")
    cmds = (_score(r, "hib", more, r.s.hib64_samples),
            _sweep(r, "hib64", [hib, more], "--ratios", r.s.ratios, "--global"))
    return Step(r.model.name, "hib64", cmds, (r.net, hib), lambda walls: extract.hib64(r))


def iterative(r: Run) -> Step:
    ratio, rounds = (str(r.s.iterative[0]), str(r.s.iterative[1]))
    common = ("--ratio", ratio, "--global")
    cmds = (_prune(r, "gradient-oneshot", "-s", str(r.scores("gradient")), *common),
            _prune(r, "gradient-rounds", "--scorer", "gradient", "--samples", str(r.s.samples), "--rounds", rounds,
                   *common),
            _prune(r, "hib-rounds", "--scorer", "hib", "--samples", str(r.s.samples), *_steps(r, "hib", "--option"),
                   "--rounds", rounds, *common),
            _prune(r, "hib-oneshot-recovered", "-s", str(r.scores("hib")), *common, "--recover-epochs", "1",
                   "--recover-lr", str(r.s.recover_lr)))
    inputs = (r.net, r.scores("gradient"), r.scores("hib"))
    return Step(r.model.name, "iterative", cmds, inputs, lambda walls: extract.iterative(r))


def _selection(r: Run) -> Command:
    argv = ("python", "bench/fsdd_selection.py", r.model.target, str(r.selection), *((r.s.fsdd,) if r.s.fsdd else ()))
    return Command("selection", argv, (r.selection,))


def budget(r: Run) -> Step:
    drop, sel = ("--max-drop", str(r.s.max_drop)), str(r.selection)
    names = [s for s in BUDGET_SCORERS if s in r.model.scorers]
    cmds = [_selection(r), *(_prune(r, s, "-s", str(r.scores(s)), *drop, data=sel, folder="budget") for s in names),
            _prune(r, "auto", "--scorer", "auto", "--auto-scorers", ",".join(AUTO_SCORERS), *drop, "--samples",
                   str(r.s.samples), data=sel, folder="budget")]
    inputs = (r.net, *(r.scores(s) for s in names))
    return Step(r.model.name, "budget", tuple(cmds), inputs, lambda walls: extract.budget(r, names))


def chosen(r: Run) -> str:
    """The scorer `--scorer auto` chose in the budget step ('attattr' until it has run)."""
    report = r.work / "budget" / "auto" / "report.json"
    return json.loads(report.read_text())["auto"]["chosen"] if report.exists() else "attattr"


def both(r: Run) -> Step:
    ranking = chosen(r)
    cmd = _prune(r, "both", "-s", str(r.scores(ranking)), "--ffn-scores", str(r.scores("ffn")), "--max-drop",
                 str(r.s.max_drop), "--units", "both", data=str(r.selection), folder="budget")
    inputs = (r.net, r.scores(ranking), r.scores("ffn"), r.selection)
    return Step(r.model.name, "both", (cmd,), inputs, lambda walls: extract.both(r, ranking))


def frontier(r: Run) -> Step:
    heads, ffn, repeats = r.s.frontier
    files = [r.scores("attention")]
    cmd = _sweep(r, "frontier", files, "--ffn-scores", str(r.scores("ffn")), "--ratios", heads, "--ffn-ratios", ffn,
                 "--latency", "--batch-sizes", "1,8", "--repeats", str(repeats))
    return Step(r.model.name, "frontier", (cmd,), (r.net, *files, r.scores("ffn")),
                lambda walls: extract.frontier(r))


def goal(r: Run) -> Step:
    plans = r.s.goal_plans if r.s.goal_plans is not None else r.model.goal_plans
    cmds = []
    for head, ffn in plans:
        name = f"goal-h{head:g}-f{ffn:g}"
        pruned = _prune(r, name, "-s", str(r.scores("attention")), "--ratio", str(head), "--ffn-ratio", str(ffn),
                        "--ffn-scores", str(r.scores("ffn")), "--recover-epochs", "1", "--recover-lr",
                        str(r.s.recover_lr))
        onnx = r.work / "onnx" / name
        cmds += [pruned, Command(f"onnx-{name}", ("prunehead", "export", "onnx", "-m", str(pruned.outs[0]),
                                                  "--baseline", str(r.net), "--data", r.data, "--repeats",
                                                  str(r.s.export_repeats), "--out", str(onnx)), (onnx,))]
    inputs = (r.net, r.scores("attention"), r.scores("ffn"))
    return Step(r.model.name, "goal", tuple(cmds), inputs, lambda walls: extract.goal(r, plans, walls))


def hib200(r: Run) -> Step:
    samples, procs = r.s.hib200
    files = [r.scores(s) for s in ("hib", "hib200", "attention", "attattr")]
    cmds = (_score(r, "hib", files[1], samples, torchrun=procs),
            _sweep(r, "hib200-global", files, "--ratios", r.s.hib200_ratios, "--global"),
            _sweep(r, "hib200-per-layer", files, "--ratios", "0.5", "--per-layer"))
    inputs = (r.net, files[0], files[2], files[3])
    return Step(r.model.name, "hib200", cmds, inputs, lambda walls: extract.hib200(r, walls))


BUILDERS: dict[str, Callable[[Run], Step]] = {
    "synth": synth, "train": train, "scores": scores, "curves": curves, "hib64": hib64, "iterative": iterative,
    "budget": budget, "both": both, "frontier": frontier, "goal": goal, "hib200": hib200}


def build(r: Run, name: str) -> Step:
    """Step `name` of `r`, with the files of its data among its inputs (a changed subset re-runs it)."""
    from prunehead.data import spec_paths

    step = BUILDERS[name](r)
    data = [] if name == "synth" else [Path(p) for p in spec_paths(r.data)]
    return replace(step, inputs=(*step.inputs, *(p for p in data if p not in step.inputs)))


def plan(settings: Settings) -> list[tuple[Run, str]]:
    """(model, step name) in the order they run: every step of a model, model after model."""
    return [(Run(MODELS[m], settings), name) for m in settings.models for name in MODELS[m].steps]
