"""`hib`: Head Information Bottleneck (HIB paper, ICLR 2024 submission), exactly as method.md §1.

Per sample and (default granularity `per_layer`) per layer l, all H heads of layer l get a trainable logit
matrix A_r (H, L, L) ~ init_std * randn (seeded per sample and layer). In the forward pass layer l
computes P = softmax(A_r + key mask) and the head outputs O = P @ V + lam * sigma * eps (the closed form
of standardize -> P @ V_std + lam * eps -> un-standardize, §1.3; sigma = per-(layer, head, feature) std
of V over valid frames of the reference data, Welford, clamped at min_std; eps fresh every step). Every
other layer keeps its clean attention. The frozen model's per-sample objective plus beta * L_IB (Eq. 16
by default, mean over valid query frames and heads) is minimized with Adam(lr) for `steps` steps; then
C_h = Pearson(softmax(A_r), A_O) over the valid L_v x L_v block, averaged over samples (higher = more
important). `granularity="all_layers"` replaces every layer at once (L_IB also averaged over layers) and
`granularity="per_head"` one head at a time.

Exact speed-ups (each checked against the plain per-sample loop in tests/test_hib.py): the loss is a sum
over rows and Adam is elementwise, so many (sample, layer) rows optimize in one batch without cross-talk
(`batched`); a sample is replicated across its target layers in that batch (`replicate_layers`); the
front end and the hidden state entering each layer are cached from one clean pass, so a row targeting
layer l runs only layers l..L-1 plus the task head, rows staggered by start layer (`cache`).
`batched=False, cache=False` is the plain reference loop.

Cost per sample: 1 clean forward + (L for per_layer, 1 for all_layers, L*H for per_head) * steps *
(forward + backward); with `cache`, a per_layer row of layer l costs only L - l layers.

Where this differs from method.md, and why:
* sigma comes from the scored samples unless `stats` (CLI: `--reference-samples K`) is given: the spec's
  fallback is the default because it needs no extra data; the Welford std divides by n - 1 (as IBA).
* A_r's init and the noise are drawn on each sample's valid L_v x L_v block only (zeros on padding, which
  is masked anyway), so a sample gets the same draws padded or alone; the generator is seeded from
  (seed, sample id, target layer/head), so results do not depend on batching or process count.
* Only the softmax form is implemented (the sigmoid variant of Appendix B needs the full standardize /
  un-standardize form); `mc_samples` and the Fisher-z mean are not implemented (per-sample C values are
  returned by `per_sample`, so any other aggregate can be computed from them).
* Scoring a pruned model optimizes the heads it still has; removed heads get no C (see base.finish_scores).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..control import controlled
from ..errors import InputError
from ..heads import head_adapter
from .base import (Batch, CleanPass, Objective, SampleScorer, check_loss, clean_pass, forward, index_batch,
                   model_device, sample_batches, valid_frames)
from .ib import IB_KINDS, ib_sum, pearson_valid
from .layers import LayerRunner, layer_runner, select_rows

GRANULARITIES = ("per_layer", "all_layers", "per_head")
# Paper Table 1 (Appendix C): beta and steps per task; lr 0.1 and lambda 0.9 for all.
TABLE1: dict[str, dict[str, float | int]] = {
    "asr": {"beta": 10.0, "steps": 100}, "sid": {"beta": 0.1, "steps": 200},
    "ks": {"beta": 1.0, "steps": 200}, "ic": {"beta": 1.0, "steps": 100},
}


@dataclasses.dataclass
class ValueStats:
    """Per-(layer, head, feature) mean and std of V over valid frames: per layer (H_l, d), float32."""

    mean: list[torch.Tensor | None]  # None for a layer without heads (pruned away)
    std: list[torch.Tensor | None]
    frames: int

    def to(self, device: torch.device) -> ValueStats:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)
        return ValueStats([move(t) for t in self.mean], [move(t) for t in self.std], self.frames)


class _Welford:
    """Chan/Welford merge of batch moments per (layer, head, feature).

    Each batch's moments are computed where its values are, in float32 and centred on the batch mean (no
    cancellation); only the small (H, d) moments go to the host, where the merge runs in float64.
    """

    def __init__(self) -> None:
        self.n: dict[int, int] = {}
        self.mean: dict[int, torch.Tensor] = {}
        self.m2: dict[int, torch.Tensor] = {}

    def update(self, layer: int, x: torch.Tensor) -> None:  # x: (n, H, d)
        x = x.float()
        n_b, mean_b = x.shape[0], x.mean(0)  # (H, d)
        m2_b = ((x - mean_b) ** 2).sum(0)  # (H, d), centred
        mean_b, m2_b = mean_b.cpu().double(), m2_b.cpu().double()
        if layer not in self.n:
            self.n[layer], self.mean[layer], self.m2[layer] = n_b, mean_b, m2_b
            return
        n_a = self.n[layer]
        delta = mean_b - self.mean[layer]
        n = n_a + n_b
        self.mean[layer] = self.mean[layer] + delta * n_b / n
        self.m2[layer] = self.m2[layer] + m2_b + delta**2 * n_a * n_b / n
        self.n[layer] = n

    def result(self, min_std: float, num_layers: int) -> ValueStats:
        std = [torch.sqrt(self.m2[l] / max(self.n[l] - 1, 1)).clamp_min(min_std).float() if l in self.n else None
               for l in range(num_layers)]
        mean = [self.mean[l].float() if l in self.n else None for l in range(num_layers)]
        return ValueStats(mean, std, max(self.n.values(), default=0))


def value_statistics(model: nn.Module, batches: list[Batch], min_std: float = 0.01) -> ValueStats:
    """Welford mean/std of every head's V over the valid frames of `batches` (clean model, eval)."""
    num_layers = head_adapter(model).num_layers
    welford = _Welford()

    def recorder(layer: int) -> Callable:
        def fn(probs: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None):
            valid = valid_frames(mask, value.shape[0], value.shape[2], value.device)  # (B, L)
            welford.update(layer, value.transpose(1, 2)[valid])  # (n, H, d)
            return torch.matmul(probs, value), probs
        return fn

    with torch.no_grad(), controlled(model) as ctl, ctl.replacing({l: recorder(l) for l in range(num_layers)}):
        for part, _ in sample_batches(model, batches):
            forward(model, part)
    return welford.result(min_std, num_layers)


@dataclasses.dataclass(frozen=True)
class Row:
    """One optimization: sample `b` of the batch, replacing heads of `layers` (all heads, or `head`)."""

    b: int
    layers: tuple[int, ...]
    head: int | None = None

    @property
    def key(self) -> str:
        if len(self.layers) > 1:
            return "all"
        return f"{self.layers[0]}" if self.head is None else f"{self.layers[0]}.{self.head}"


def row_generator(seed: int, sample_id: int, key: str) -> torch.Generator:
    """The CPU generator of one (sample, target) optimization: its A_r init and all its noise draws.

    Always on the CPU, the draws moved to the model's device: a seed gives the same draws on any device.
    """
    digest = hashlib.sha256(f"prunehead.hib/{seed}/{sample_id}/{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@dataclasses.dataclass
class HIBScorer(SampleScorer):
    """HIB head contribution C_h. Parameters default to the paper's for KS; `get_scorer("hib", task=...)`
    applies the paper's per-task beta and steps (Table 1, `task_defaults`)."""

    name: ClassVar[str] = "hib"
    task_defaults: ClassVar[dict[str, dict[str, Any]]] = TABLE1
    beta: float = 1.0
    steps: int = 200
    lr: float = 0.1
    noise: float = 0.9  # lambda, in units of each V feature's dataset std
    init_std: float = 1.0
    ib: str = "paper"  # paper | vib_upper | gaussian_mi
    granularity: str = "per_layer"  # per_layer | all_layers | per_head: what one row replaces
    seed: int = 0
    min_std: float = 0.01
    batched: bool = True  # optimize all rows of a batch together
    replicate_layers: bool = True  # with batched: a sample's target layers share one batch
    cache: bool = True  # run only from the target layer (front end and earlier layers cached)
    max_rows: int = 0  # rows per optimization when batched (0 = all rows of a batch)
    stats: ValueStats | None = dataclasses.field(default=None, repr=False)  # sigma; default from the batches
    trace: Callable[[list[Row], torch.Tensor, dict[int, torch.Tensor]], None] | None = dataclasses.field(
        default=None, repr=False)  # called after every step with (rows, sample ids, A_r per layer)

    def __post_init__(self) -> None:
        """Options are checked when the scorer is built, before any model or data loads."""
        if self.granularity not in GRANULARITIES:
            raise InputError(f"unknown HIB granularity {self.granularity!r}; choose one of: "
                             f"{', '.join(GRANULARITIES)}")
        if self.ib not in IB_KINDS:
            raise InputError(f"unknown IB loss {self.ib!r}; choose one of: {', '.join(IB_KINDS)}")
        finite = all(math.isfinite(v) for v in (self.beta, self.lr, self.noise, self.init_std))
        if not finite or self.steps < 0 or self.lr <= 0 or self.noise < 0 or self.init_std <= 0:
            raise InputError("HIB needs finite options with steps >= 0, lr > 0, noise >= 0 and init_std > 0")

    def cost(self, samples: int, kept: list[list[int]]) -> str:
        """What a run will cost, said before it starts: optimizations x steps (forward + backward each)."""
        layers = [heads for heads in kept if heads]
        rows = {"per_layer": len(layers), "all_layers": 1, "per_head": sum(map(len, layers))}[self.granularity]
        note = "; cached: a row of layer l runs only layers l..L-1" if self.cache and self.granularity == "per_layer" else ""
        return (f"hib: {samples} samples x {rows} optimizations x {self.steps} steps = "
                f"{samples * rows * self.steps:,} forward+backward passes{note} (fewer --samples or --steps "
                "shorten it)")

    # -- SampleScorer -------------------------------------------------------------------------------

    def prepare(self, model: nn.Module, batches: list[Batch], objective: Objective) -> ValueStats:
        stats = self.stats if self.stats is not None else value_statistics(model, batches, self.min_std)
        return stats.to(model_device(model))

    def score_batch(self, model: nn.Module, batch: Batch, objective: Objective, ids: torch.Tensor,
                    context: ValueStats) -> torch.Tensor:
        """(B, L, H) per-sample C[b, l, h] (NaN for heads a pruned model no longer has)."""
        adapter = head_adapter(model)
        kept = adapter.kept_heads(model)
        runner = layer_runner(model) if self.cache else None
        clean = clean_pass(model, batch, runner=runner)
        B = clean.valid.shape[0]
        C = torch.full((B, adapter.num_layers, adapter.num_heads), float("nan"), dtype=torch.float64)
        for group in self._groups(self._rows(B, kept)):
            for row, layer, values in self._optimize(model, batch, objective, clean=clean, rows=group, ids=ids,
                                                     stats=context, runner=runner):
                if row.head is None:
                    C[row.b, layer, kept[layer]] = values  # values by head position
                else:
                    C[row.b, layer, kept[layer][row.head]] = values[row.head]
        return C

    # -- rows and groups ------------------------------------------------------------------------------

    def _rows(self, B: int, kept: list[list[int]]) -> list[Row]:
        """The optimizations of a batch; `head` is a head's current position in its layer."""
        layers = [l for l, heads in enumerate(kept) if heads]
        if self.granularity == "per_layer":
            return [Row(b, (l,)) for l in layers for b in range(B)]
        if self.granularity == "all_layers":
            return [Row(b, tuple(layers)) for b in range(B)]
        return [Row(b, (l,), h) for l in layers for h in range(len(kept[l])) for b in range(B)]

    def _groups(self, rows: list[Row]) -> Iterator[list[Row]]:
        if not self.batched:
            yield from ([r] for r in rows)
            return
        if not self.replicate_layers:
            keys: dict[str, list[Row]] = {}
            for r in rows:
                keys.setdefault(r.key, []).append(r)
            chunks = list(keys.values())
        else:
            chunks = [rows]
        for chunk in chunks:
            size = self.max_rows or len(chunk)
            for start in range(0, len(chunk), size):
                yield chunk[start:start + size]

    # -- clean pass -------------------------------------------------------------------------------------

    # -- one optimization -------------------------------------------------------------------------------

    def _optimize(self, model: nn.Module, batch: Batch, objective: Objective, clean: CleanPass, rows: list[Row],
                  ids: torch.Tensor, stats: ValueStats, runner: LayerRunner | None,
                  ) -> list[tuple[Row, int, torch.Tensor]]:
        """Optimize the A_r of `rows` together; (row, layer, C over heads (H,)) per row and target layer."""
        rows = sorted(rows, key=lambda r: r.layers[0])  # staggered entry needs rows ordered by start layer
        device = clean.valid.device
        B, Lf = clean.valid.shape
        samples = torch.tensor([r.b for r in rows], device=device)  # (R,)
        valid = clean.valid[samples]  # (R, Lf)
        lengths = valid.sum(-1).tolist()
        gens = [row_generator(self.seed, int(ids[r.b]), r.key) for r in rows]
        layers = sorted({l for r in rows for l in r.layers})
        host_pos = {l: [i for i, r in enumerate(rows) if l in r.layers] for l in layers}  # read without a sync
        pos = {l: torch.tensor(p, device=device) for l, p in host_pos.items()}
        width = {l: clean.probs[l].shape[1] for l in layers}  # heads each layer has now
        d = next(s for s in stats.std if s is not None).shape[-1]
        heads = {l: torch.tensor([[r.head is None or r.head == h for h in range(width[l])] for r in rows
                                  if l in r.layers], device=device) for l in layers}  # (n_l, H_l) bool
        logits = {l: (a * self.init_std).requires_grad_(True)  # A_r = init_std * randn on the valid block
                  for l, a in self._draws(rows, pos, lengths, gens=gens, width=width, Lf=Lf, last=None,
                                          device=device).items()}
        optimizer = torch.optim.Adam(list(logits.values()), lr=self.lr)
        keymask = torch.zeros(len(rows), 1, 1, Lf, device=device).masked_fill(
            ~valid[:, None, None, :], torch.finfo(torch.float32).min)  # (R, 1, 1, Lf)
        part = index_batch(batch, samples)
        for _ in self._bar(range(self.steps), f"hib {len(rows)} rows, layers {layers[0]}-{layers[-1]}"):
            eps = self._draws(rows, pos, lengths, gens=gens, width=width, Lf=Lf, last=d, device=device)
            with torch.enable_grad():
                ib_terms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
                fns = {l: self._replacement(l, logits.get(l), pos.get(l), heads=heads.get(l), valid=valid,
                                            stats=stats, eps=eps.get(l), ib_terms=ib_terms, d=d) for l in clean.probs}
                outputs = self._forward(model, part, clean, samples=samples, rows=rows, fns=fns, runner=runner)
                task = check_loss(objective(outputs, part), len(rows))
                total = torch.zeros(len(rows), device=device)
                count = torch.zeros(len(rows), device=device)
                for p, s, c in ib_terms:
                    total, count = total.index_add(0, p, s), count.index_add(0, p, c)
                loss = task.float().sum() + self.beta * (total / count).sum()
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
            optimizer.step()
            if self.trace is not None:
                self.trace(rows, ids[samples.cpu()], {l: a.detach().clone() for l, a in logits.items()})
        results = []
        with torch.no_grad():
            for l in layers:
                P = (logits[l] + keymask[pos[l]]).softmax(-1)  # (n, H, Lf, Lf), no noise
                corr = pearson_valid(P, clean.probs[l][samples[pos[l]]], valid[pos[l]]).cpu().double()  # (n, H)
                results += [(rows[index], l, corr[i]) for i, index in enumerate(host_pos[l])]
        return results

    @staticmethod
    def _draws(rows: list[Row], pos: dict[int, torch.Tensor], lengths: list[int], gens: list[torch.Generator],
               width: dict[int, int], Lf: int, last: int | None, device: torch.device) -> dict[int, torch.Tensor]:
        """Standard normals per layer (n_l, H_l, Lf, last or Lf), drawn per row from its own generator.

        Each row fills only its valid block, (n, n) for A_r's init (`last=None`) or (n, d) for the noise,
        zeros elsewhere, so a row's draws do not depend on padding or on the other rows. Drawn on the host
        (CPU generators) and moved to `device` once per layer.
        """
        out = {l: torch.zeros(len(p), width[l], Lf, last or Lf) for l, p in pos.items()}  # host
        slot = {l: {i: k for k, i in enumerate(i for i, r in enumerate(rows) if l in r.layers)}  # = pos, no sync
                for l in pos}
        for i, r in enumerate(rows):
            n = lengths[i]
            for l in r.layers:
                hs = list(range(width[l])) if r.head is None else [r.head]
                out[l][slot[l][i], hs, :n, :last or n] = torch.randn(len(hs), n, last or n, generator=gens[i])
        return {l: t.to(device) for l, t in out.items()}

    def _replacement(self, layer: int, logits: torch.Tensor | None, pos: torch.Tensor | None,
                     heads: torch.Tensor | None, valid: torch.Tensor, stats: ValueStats, eps: torch.Tensor | None,
                     ib_terms: list, d: int) -> Callable:
        """Layer `layer`'s attention: clean for every present row, HIB for the rows at `pos`."""
        sigma = stats.std[layer][None, :, None, :]  # (1, H, 1, d)

        # Staggered rows replacing all heads are the last n rows of the batch: no clean product, no scatter.
        first = int(pos[0]) if pos is not None else 0
        suffix = pos is not None and bool(heads.all()) and torch.equal(
            pos.cpu(), torch.arange(first, first + len(pos)))

        def fn(probs: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None):
            if logits is None:
                return torch.matmul(probs, value), probs  # (R', H, Lf, d)
            scores = logits if mask is None else logits + mask[pos].float()
            P = scores.softmax(-1)  # (n, H, Lf, Lf), fp32
            hib = torch.matmul(P, value[pos].float()) + self.noise * sigma * eps  # O = P V + lam sigma eps
            if suffix and first + len(pos) == probs.shape[0]:
                out = torch.cat([torch.matmul(probs[:first], value[:first]), hib.to(value.dtype)])
                used = torch.cat([probs[:first], P.to(probs.dtype)])
            else:
                out = torch.matmul(probs, value)
                keep = heads[:, :, None, None]  # (n, H, 1, 1)
                out = out.index_copy(0, pos, torch.where(keep, hib.to(out.dtype), out[pos]))
                used = probs.index_copy(0, pos, torch.where(keep, P.to(probs.dtype), probs[pos]))
            s, c = ib_sum(P, valid[pos], heads, d, self.noise, self.ib)
            ib_terms.append((pos, s, c))
            return out, used

        return fn

    def _forward(self, model: nn.Module, part: Batch, clean: CleanPass, samples: torch.Tensor, rows: list[Row],
                 fns: dict[int, Callable], runner: LayerRunner | None) -> Any:
        """Model outputs for the rows: a full forward pass, or staggered layers from the cached states."""
        with controlled(model) as ctl, ctl.replacing(fns):
            if runner is None:
                return forward(model, part)
            B = clean.valid.shape[0]
            L = len(runner.layers)
            starts = [r.layers[0] for r in rows]
            entering: list[torch.Tensor | None] = [None] * L
            extras: list = [None] * L
            for j in range(L):
                new = torch.tensor([i for i, s in enumerate(starts) if s == j], device=samples.device)
                if len(new):
                    entering[j] = clean.captured[j][0].index_select(0, samples[new])
                present = sum(1 for s in starts if s <= j)
                if present:
                    extras[j] = select_rows(clean.captured[j][1], samples[:present], B)
            hidden = runner.run_layers(entering, extras)
            with runner.head_from(hidden):
                return forward(model, part)
