"""`prunehead score`: score every head of a model on N samples of a data set; write scores.json + PNG.

Data-parallel when launched with several processes (`torchrun --nproc-per-node 2 $(which prunehead)
score ...`); per-batch results are checkpointed beside --out so `--resume` continues an interrupted run
to exactly the matrix an uninterrupted run gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .formatting import model_label
from .options import (ClipSeconds, Device, DtypeName, Finite, OptionalData, Overwrite, ScorerOptions, Task, Workers,
                      inputs_of, parse_options, resume_hint)

Opt = typer.Option


def score(model: Annotated[str | None, Opt("--model", "-m", show_default=False,
                                           help="Model folder or hub id.")] = None,
          data: OptionalData = None,
          scorer: Annotated[str | None, Opt(show_default=False, help="hib, attattr, gradient, occlusion, attention, "
                                                                     "l0, random or a plugin.")] = None,
          out: Annotated[Path | None, Opt("--out", "-o", show_default=False,
                                          help="Score file to write (a .png heat map goes beside it).")] = None,
          samples: Annotated[int | None, Opt(min=1, show_default=False,
                                             help="Samples drawn (seeded) from the split. [default: 200]")] = None,
          steps: Annotated[int | None, Opt(min=1, show_default=False,
                                           help="HIB optimization steps (AttAttr's integration points: "
                                                "--option points=N). [default: the paper's for the task]")] = None,
          beta: Annotated[float | None, Opt(callback=Finite, show_default=False,
                                            help="HIB IB-loss weight. [default: the paper's for the task]")] = None,
          lr: Annotated[float | None, Opt(callback=Finite, show_default=False,
                                          help="HIB Adam learning rate. [default: 0.1]")] = None,
          noise: Annotated[float | None, Opt(callback=Finite, show_default=False,
                                             help="HIB noise lambda, in V's dataset std. [default: 0.9]")] = None,
          batch_size: Annotated[int, Opt(min=1, help="Samples per batch.")] = 8,
          seed: Annotated[int | None, Opt(min=0, show_default=False, help="Sample selection and scorer seed. "
                                                                   "[default: 0]")] = None,
          split: Annotated[str | None, Opt(show_default=False, help="Split to draw samples from. "
                                                                    "[default: train]")] = None,
          task: Task = None,
          option: ScorerOptions = None,
          reference_samples: Annotated[int, Opt(min=0, help="HIB: estimate V's std from this many samples of the "
                                                            "split (seeded; 0 = the scored samples). The paper "
                                                            "suggests 1-2k.")] = 0,
          clip_seconds: ClipSeconds = None,
          recipe: Annotated[Path | None, Opt(show_default=False,
                                             help="Recipe TOML: model, data, task and score settings.")] = None,
          device: Device = None, workers: Workers = 0,
          dtype: Annotated[DtypeName | None, Opt(show_default=False,
                                                 help="Autocast precision of the gradient, attention and occlusion "
                                                      "scorers (HIB stays float32). [default: float32]")] = None,
          resume: Annotated[bool, Opt(help="Continue an interrupted run from its checkpoint.")] = False,
          overwrite: Overwrite = False,
          units: Annotated[str, Opt(help="heads; ffn: score every feed-forward neuron instead, for `prune "
                                         "--ffn-scores`; conv: every front-end conv channel, for `prune "
                                         "--conv-scores` (--scorer taylor or magnitude); layers: every encoder "
                                         "layer, for `prune --layer-scores` (--scorer taylor or occlusion).")] = "heads"
          ) -> None:
    """Score every attention head (higher = more important) and write a score file plus heat map."""
    from ..errors import InputError

    if out is None:
        raise InputError("missing --out: the score file to write, e.g. --out scores.json")
    out = out.expanduser()
    if units not in ("heads", "ffn", "conv", "layers"):
        raise InputError(f"--units must be heads, ffn, conv or layers, got {units!r}")
    if units != "heads":
        given = {"model": model, "data": data, "scorer": scorer, "split": split or "train", "samples": samples or 200,
                 "seed": seed or 0, "task": task and task.value}
        ignored = {"--steps": steps, "--beta": beta, "--lr": lr, "--noise": noise, "--option": option or None,
                   "--dtype": dtype, "--reference-samples": reference_samples or None, "--workers": workers or None}
        if any(value is not None for value in ignored.values()):
            raise InputError(f"--units {units} takes none of {', '.join(k for k, v in ignored.items() if v is not None)}"
                             f": drop them (the scorers of --units {units} have no options)")
        return _run_parts(units, out, given, batch_size, clip_seconds=clip_seconds, device=device,
                          overwrite=overwrite, recipe=recipe, resume=resume)
    flags = {"steps": steps, "beta": beta, "lr": lr, "noise": noise}
    options = {**{k: v for k, v in flags.items() if v is not None}, **parse_options(option)}
    given = {"model": model, "data": data, "scorer": scorer, "split": split, "samples": samples, "seed": seed,
             "task": task and task.value}
    settings, options = _settings(given, options, recipe)
    if settings["scorer"] == "attattr" and steps is not None:
        raise InputError("--steps is HIB's optimization steps; AttAttr's integration points are --option points=N")
    if dtype is not None:
        options = _with_dtype(options, settings["scorer"], dtype.value)
    _run(out, settings, options, dict(batch_size=batch_size, reference_samples=reference_samples,
                                      clip_seconds=clip_seconds, device=device, resume=resume, overwrite=overwrite,
                                      workers=workers))


def _with_dtype(options: dict[str, Any], scorer: str, dtype: str) -> dict[str, Any]:
    """`options` with the scorer's autocast precision; a scorer that always runs in float32 (HIB) is told so."""
    import warnings

    from ..scorers.registry import option_names

    if "dtype" in option_names(scorer):
        return {**options, "dtype": dtype}
    if dtype != "float32":
        warnings.warn(f"--dtype {dtype} applies to the gradient, attention and occlusion scorers; {scorer} always "
                      "runs in float32", stacklevel=2)
    return options


def _settings(given: dict[str, Any], options: dict[str, Any], recipe: Path | None) -> tuple[dict, dict]:
    """Recipe values overridden by the flags that were given; scorer options likewise."""
    from ..api import build_scorer
    from ..errors import InputError

    base: dict[str, Any] = {"split": "train", "samples": 200, "seed": 0, "task": None}
    if recipe is not None:
        from ..recipe import load_recipe

        r = load_recipe(recipe)
        base.update(model=r.model.path, data=r.data.spec, scorer=r.score.scorer, split=r.data.score_split,
                    task=r.task, samples=r.score.samples, seed=r.score.seed)
        hib = {"beta": r.score.beta, "steps": r.score.steps, "noise": r.score.noise, "lr": r.score.lr,
               "init_std": r.score.init_std}
        if r.score.scorer == "hib":
            options = {**{k: v for k, v in hib.items() if v is not None}, **options}
    values = {**base, **{k: v for k, v in given.items() if v is not None}}
    missing = [f"--{k}" for k in ("model", "data", "scorer") if not values.get(k)]
    if missing:
        raise InputError(f"missing {', '.join(missing)}: give them, or a --recipe that names them")
    build_scorer(values["scorer"], options, seed=values["seed"])  # bad options fail before anything loads
    return values, options


def _run(out: Path, settings: dict[str, Any], options: dict[str, Any], flags: dict[str, Any]) -> None:
    """Score (data-parallel under torchrun, checkpointed), then write the score file and its heat map (rank 0)."""
    import dataclasses
    import time

    import torch

    from ..api import build_scorer, score
    from ..output_guard import atomic_files, check_output, check_outputs
    from ..specs import Data, Ranking
    from ..plots import heatmap
    from ..scorers.parallel import Checkpoint, fingerprint, process_group
    from ..training.models import pick_device

    batch_size, clip_seconds, reference_samples = flags["batch_size"], flags["clip_seconds"], flags["reference_samples"]
    device, resume, overwrite = flags["device"], flags["resume"], flags["overwrite"]
    png = out.with_suffix(".png")
    check_outputs(out, png)
    inputs = inputs_of(settings["model"], settings["data"])
    check_output(out, overwrite, inputs=inputs, kind="file")  # a finished score file is replaced only with --overwrite
    check_output(png, overwrite, inputs=inputs, kind="file")
    started = time.time()
    where = pick_device(device)
    checkpoint = out.with_name(out.name + ".ckpt")
    Checkpoint.guard(checkpoint, resume, overwrite)  # an interrupted run is continued or replaced, never lost
    with process_group(where) as (rank, _):
        if where.type == "cuda" and torch.distributed.is_initialized():  # one GPU per process
            where = torch.device("cuda", torch.cuda.current_device())
        key = fingerprint(settings=settings, options=options, batch_size=batch_size, clip_seconds=clip_seconds,
                          reference_samples=reference_samples, scorer=dataclasses.asdict(
                              build_scorer(settings["scorer"], options, task=settings["task"], seed=settings["seed"])),
                          device=where.type)
        try:
            data = Data(settings["data"], score_split=settings["split"], batch_size=batch_size, task=settings["task"],
                        clip_seconds=clip_seconds, workers=flags["workers"])
            ranking = Ranking(settings["scorer"], options=options, samples=settings["samples"], seed=settings["seed"])
            result = score(settings["model"], data, ranking, reference_samples=reference_samples, device=where,
                           checkpoint=checkpoint, key=key, resume=resume, progress=rank == 0)
        except KeyboardInterrupt:
            from ..errors import Interrupted

            raise Interrupted(resume_hint()) from None
        except SystemExit:  # SIGTERM (a scheduler's preemption, `kill`): interrupted too, the checkpoint stays
            raise
        except BaseException:
            if rank == 0:  # a failed run leaves nothing; only an interrupted one keeps its checkpoint
                for file in Checkpoint.files(checkpoint):
                    file.unlink(missing_ok=True)
            raise
        if rank == 0:
            result.settings.update(model=settings["model"], data=settings["data"])
            with atomic_files([out, png], overwrite, inputs=inputs) as (tmp, image):
                result.save(tmp)  # both files appear together, or neither
                heatmap(result.scores, image, f"{settings['scorer']}: {model_label(settings['model'])} "
                                              f"({len(result.sample_paths)} samples)")
            for file in Checkpoint.files(checkpoint):
                file.unlink(missing_ok=True)
            earlier = f" ({result.resumed} of them from the checkpoint of the interrupted run)" if result.resumed else ""
            typer.echo(f"scored {len(result.sample_paths)} samples{earlier} with {settings['scorer']}; this run "
                       f"took {time.time() - started:.1f} s on {where}; wrote {out} and {png}")
            if result.split_half is not None:
                typer.echo(f"ranking stability: Spearman {result.split_half:.2f} between the scores of the even- and "
                           f"the odd-numbered samples ({len(result.sample_paths) // 2} each; 1 = the same ranking)")


def _run_parts(units: str, out: Path, given: dict[str, Any], batch_size: int, clip_seconds: float | None,
               device: str | None, overwrite: bool, recipe: Path | None, resume: bool) -> None:
    """`score --units ffn|conv|layers`: one process, no checkpoint; writes the (L, I), (C, W) or (L, 1) score
    file."""
    from ..api import score
    from ..errors import InputError
    from ..output_guard import atomic_file, check_output
    from ..units.kinds import KINDS

    data_free = given["scorer"] in KINDS[units].data_free
    missing = [f"--{k}" for k in ("model", "data", "scorer") if not given[k] and not (k == "data" and data_free)]
    if missing or recipe is not None or resume:
        raise InputError(f"--units {units} needs --model, --data and --scorer ({' or '.join(KINDS[units].scorers)}), "
                         "and takes no "
                         f"--recipe or --resume{'; missing ' + ', '.join(missing) if missing else ''}")
    inputs = inputs_of(given["model"], given["data"])
    check_output(out, overwrite, inputs=inputs)
    from ..specs import Data, Ranking

    data = Data(given["data"], score_split=given["split"], batch_size=batch_size, task=given["task"],
                clip_seconds=clip_seconds) if given["data"] else None
    result = score(given["model"], data, Ranking(given["scorer"], samples=given["samples"], seed=given["seed"]),
                   device=device, units=units)
    result.settings.update(model=given["model"], data=given["data"])
    with atomic_file(out, overwrite, inputs=inputs) as tmp:
        result.save(tmp)
    L, W = result.scores.shape
    noun = {"ffn": "FFN neurons", "conv": "conv channels", "layers": "layers"}[units]
    on = f"on {len(result.sample_paths)} samples" if result.sample_paths else "(data-free)"
    typer.echo(f"scored {L} x {W} {noun} with {given['scorer']} {on}; wrote {out}")

