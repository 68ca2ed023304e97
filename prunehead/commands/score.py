"""`prunehead score`: score every head of a model on N samples of a data set; write scores.json + PNG.

Data-parallel when launched with several processes (`torchrun --nproc-per-node 2 $(which prunehead)
score ...`); per-batch results are checkpointed beside --out so `--resume` continues an interrupted run
to exactly the matrix an uninterrupted run gives.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import transformers
import typer

from .. import __version__
from ..errors import InputError
from ..heads import head_adapter
from ..outputs import atomic_file, check_output
from ..plan import save_scores
from ..train import pick_device
from ..scorers import get_scorer
from ..scorers.base import padding_changes_outputs
from ..scorers.base import to_device
from ..scorers.hib import TASK_DEFAULTS, value_statistics
from ..scorers.parallel import ScoreRun, fingerprint, process_group, run
from ..scorers.registry import available, option_names
from .options import Device, Overwrite, ScorerOptions

Opt = typer.Option


@dataclasses.dataclass
class Settings:
    """Everything that determines a score file (recorded in it)."""

    model: str
    data: str
    scorer: str
    split: str = "train"
    task: str | None = None
    samples: int = 200
    batch_size: int = 8
    seed: int = 0
    reference_samples: int = 0  # HIB: sigma from this many samples of the split (0 = the scored ones)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


def parse_options(options: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--option {item!r}: write KEY=VALUE, e.g. --option scope=all_layers")
        try:
            parsed[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.replace("-", "_")] = value
    return parsed


def resolve_settings(model: str | None, data: str | None, scorer: str | None, recipe: Path | None,
                     split: str | None, task: str | None, samples: int | None, batch_size: int,
                     seed: int | None, flags: dict[str, Any], reference_samples: int = 0) -> Settings:
    """Recipe values, overridden by the command-line flags that were given (`flags`: scorer options)."""
    base: dict[str, Any] = {}
    recipe_params: dict[str, Any] = {}
    if recipe is not None:
        from ..recipe import load_recipe

        r = load_recipe(recipe)
        base = {"model": r.model.path, "data": r.data.spec, "scorer": r.score.method, "split": r.data.score_split,
                "task": r.task, "samples": r.score.samples, "seed": r.score.seed}
        recipe_params = {"beta": r.score.beta, "steps": r.score.steps, "noise": r.score.lam, "lr": r.score.lr,
                         "init_std": r.score.init_std}
    given = {"model": model, "data": data, "scorer": scorer, "split": split, "task": task, "samples": samples,
             "seed": seed}
    values = {**base, **{k: v for k, v in given.items() if v is not None}}
    missing = [f"--{k}" for k in ("model", "data", "scorer") if not values.get(k)]
    if missing:
        raise InputError(f"missing {', '.join(missing)}: give them, or a --recipe that names them")
    if values.get("samples", 1) < 1 or batch_size < 1:
        raise InputError("--samples and --batch-size must be at least 1")
    accepted = option_names(values["scorer"])
    params = {k: v for k, v in recipe_params.items() if k in accepted and v is not None}  # recipe: HIB settings
    if "seed" in accepted:
        params["seed"] = values.get("seed", 0)
    if reference_samples and values["scorer"] != "hib":
        raise InputError("--reference-samples sets HIB's V statistics; it applies to --scorer hib only")
    return Settings(batch_size=batch_size, reference_samples=reference_samples, params={**params, **flags}, **values)


@dataclasses.dataclass
class Job:
    """What `load_job` prepares: the model, its scoring batches, the reference batches for HIB's sigma."""

    model: Any
    batches: list[dict]
    reference: list[dict] | None
    objective: Any
    task: str
    paths: list[str]


def load_job(settings: Settings, device: torch.device) -> Job:
    """Load the model and draw the samples (seeded) of `settings`."""
    from ..data import align_labels, default_feature_extractor, load_data, make_batches
    from ..surgery import load
    from ..tasks import get_task, infer_task
    from ..train import load_processor

    model = load(settings.model).to(device).eval()
    head_adapter(model)
    fe, tok = load_processor(settings.model)
    fe = fe or default_feature_extractor(model.config)
    task_name = settings.task or infer_task(model)
    data = load_data(settings.data, settings.split, fe, task_name)
    if task_name != "asr":
        data = align_labels(data, list(model.config.id2label.values()))
    order = np.random.default_rng(settings.seed).permutation(len(data)).tolist()
    task = get_task(task_name, model, tok)

    def batches_of(rows: list[int]) -> list[dict]:
        part = data.select(sorted(rows))
        return [{**task.model_inputs(b), "labels": b["labels"]} for b in
                make_batches(part, (fe, tok), settings.batch_size, equal_length=padding_changes_outputs(model))]

    scored = order[:settings.samples]
    reference = batches_of(order[:settings.reference_samples]) if settings.reference_samples else None
    paths = [str(p) for p in data.select(sorted(scored))["path"]]
    return Job(model, batches_of(scored), reference, task.objective, task_name, paths)


def build_scorer(settings: Settings, job: Job, device: torch.device) -> Any:
    """The scorer of `settings` for `job`: HIB gets the paper's per-task beta/steps unless they are given,
    and V's statistics from the reference samples when the job has them."""
    params = settings.params
    if settings.scorer == "hib":
        params = {**TASK_DEFAULTS.get(job.task, {}), **params}
    method = get_scorer(settings.scorer, **params)
    if job.reference is not None:
        method.stats = value_statistics(job.model, [to_device(b, device) for b in job.reference], method.min_std)
    return method


def plot_heatmap(scores: torch.Tensor, path: Path, title: str) -> None:
    """An L x H heat map of `scores` (layers down, heads across), written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L, H = scores.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 + 0.5 * H), max(3.0, 1.0 + 0.4 * L)))
    image = ax.imshow(scores.numpy(), cmap="viridis", aspect="auto")
    if L * H <= 64:  # small grids: print the values
        for (l, h), value in np.ndenumerate(scores.numpy()):
            ax.text(h, l, f"{value:.3g}", ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(out: Path, outcome: ScoreRun, settings: Settings, scorer_params: dict[str, Any], task: str,
                  device: torch.device, paths: list[str], overwrite: bool) -> Path:
    """scores.json (atomic) and the heat map beside it; returns the PNG path."""
    png = out.with_suffix(".png")
    extra = {"params": scorer_params, "samples": len(paths), "reference_samples": settings.reference_samples,
             "spread": outcome.spread.tolist() if outcome.spread is not None else None,
             "data": settings.data, "split": settings.split, "task": task, "seed": settings.seed,
             "batch_size": settings.batch_size, "sample_paths": paths, "world_size": outcome.world_size,
             "device": str(device.type), "versions": {"prunehead": __version__, "torch": torch.__version__,
                                                       "transformers": transformers.__version__,
                                                       "python": platform.python_version()}}
    with atomic_file(out, overwrite) as tmp:
        save_scores(tmp, outcome.scores, settings.scorer, settings.model, **extra)
    with atomic_file(png, True) as tmp:
        plot_heatmap(outcome.scores, tmp, f"{settings.scorer}: {Path(settings.model).name} ({len(paths)} samples)")
    return png


def score(model: Annotated[str | None, Opt("--model", "-m", help="Model directory or hub id.")] = None,
          data: Annotated[str | None, Opt("--data", "-d", help="Data spec (see `prunehead eval --help`).")] = None,
          scorer: Annotated[str | None, Opt(help=f"Scorer: {', '.join(available())}.")] = None,
          out: Annotated[Path | None, Opt("--out", "-o", help="Score file to write (a .png heat map goes "
                                                               "beside it).")] = None,
          samples: Annotated[int | None, Opt(help="Samples drawn (seeded) from the split (default 200).")] = None,
          steps: Annotated[int | None, Opt(help="HIB optimization steps / AttAttr integration points.")] = None,
          beta: Annotated[float | None, Opt(help="HIB IB-loss weight (default: paper Table 1 for the task).")] = None,
          lr: Annotated[float | None, Opt(help="HIB Adam learning rate (default 0.1).")] = None,
          noise: Annotated[float | None, Opt(help="HIB noise lambda, in V's dataset std (default 0.9).")] = None,
          batch_size: Annotated[int, Opt(help="Samples per batch.")] = 8,
          seed: Annotated[int | None, Opt(help="Sample selection and scorer seed (default 0).")] = None,
          split: Annotated[str | None, Opt(help="Split to draw samples from (default train).")] = None,
          task: Annotated[str | None, Opt(help="ks, sid, ic or asr (default: inferred from the model).")] = None,
          option: ScorerOptions = None,
          reference_samples: Annotated[int, Opt(help="HIB: estimate V's std from this many samples of the split "
                                                     "(seeded; 0 = the scored samples). The paper suggests "
                                                     "1-2k.")] = 0,
          recipe: Annotated[Path | None, Opt(help="Recipe TOML: model, data, task and score settings.")] = None,
          device: Device = None,
          resume: Annotated[bool, Opt(help="Continue an interrupted run from its checkpoint.")] = False,
          overwrite: Overwrite = False) -> None:
    """Score every attention head (higher = more important) and write a score file plus heat map."""
    if out is None:
        raise InputError("missing --out: the score file to write, e.g. --out scores.json")
    flags = {"steps": steps, "beta": beta, "lr": lr, "noise": noise}
    params = {**{k: v for k, v in flags.items() if v is not None}, **parse_options(option or [])}
    settings = resolve_settings(model, data, scorer, recipe, split, task, samples, batch_size, seed, params,
                                reference_samples)
    check_output(out, overwrite or resume)
    check_output(out.with_suffix(".png"), overwrite or resume)
    started = time.time()
    where = pick_device(device)
    with process_group(where) as (rank, _):
        if where.type == "cuda" and torch.distributed.is_initialized():  # one GPU per process
            where = torch.device("cuda", torch.cuda.current_device())
        job = load_job(settings, where)
        method = build_scorer(settings, job, where)
        method.progress = rank == 0
        key = fingerprint(settings=dataclasses.asdict(settings), params=method.params(), task=job.task,
                          paths=job.paths, device=where.type)
        outcome = run(method, job.model, job.batches, job.objective, checkpoint=out.with_name(out.name + ".ckpt"),
                      key=key, resume=resume, progress=True)
        if rank == 0:
            png = write_outputs(out, outcome, settings, method.params(), job.task, where, job.paths,
                                overwrite or resume)
            for suffix in ("", *(f".rank{r}-of-{outcome.world_size}" for r in range(outcome.world_size))):
                out.with_name(out.name + ".ckpt" + suffix).unlink(missing_ok=True)
            typer.echo(f"scored {len(job.paths)} samples with {settings.scorer} in {time.time() - started:.1f} s "
                       f"on {where}; wrote {out} and {png}")
