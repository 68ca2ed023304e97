"""Masks learned under a MAC budget (`prune --method l0`): hard concrete gates on every unit of the chosen
kinds, trained jointly with the weights while distilling from the unpruned model, with a Lagrangian that
drives the expected MACs to the target (Louizos et al. 2018 gates; the Lagrangian of Wang et al. 2020,
"Structured Pruning of Large Language Models"; DPHuBERT, Peng et al. 2023, for speech), its multiplier set
by a PI controller (Sohrabi et al. 2024, "On PI Controllers for Updating Lagrange Multipliers in
Constrained Optimization"). Every unit whose test-time gate is 0 is then removed.

Per step: gates z ~ HardConcrete(log_alpha) are drawn per sample and applied through the kinds' gating
(heads before the output projection, neurons before the FFN output, channels where they are read, layers
as h + z (layer(h) - h)); the loss is the distillation loss (`prunehead.training.distill`) plus

    lambda (e - t),    e = E[MACs] / dense MACs,    lambda = KP (e - t) + KI sum over the steps so far of (e - t),

where E[MACs] is exact in the open probabilities (independent gates; heads and neurons inside a layer
count only while the layer is open; the front end's MACs are bilinear in neighbouring channel counts), and
t is annealed linearly from the expected fraction at the initial gates to the target over the first half of the steps. The
weights and log_alpha descend. The multiplier's proportional term reacts to the gap at once and its
integral term finds the price the gates settle at; plain gradient ascent (the integral term alone, as Wang
et al. and DPHuBERT use over tens of thousands of steps) winds up on runs of a few hundred steps and its
swings grow (docs/results.md: 0.18-0.90 of the MACs around a target of 0.35, and a 0.84 left for the
ranking to cut untrained). Kept heads and neurons fold their test-time gate into the output projection's
columns (exact); kept channels and layers take gate 1.

Cost: `epochs` passes over the train split, each step one student forward + backward and one teacher forward.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..control import controlled
from ..errors import InputError
from ..heads import head_adapter
from ..surgery import plan_of
from ..training.hard_concrete import HardConcrete
from ..units.conv import channel_gating
from ..units.depth import fixed_layers, layer_gating
from ..units.ffn import ffn_sites, neuron_gating
from ..units.kinds import KINDS
from .plan import PruningPlan

__all__ = ["KI", "KP", "MaskLearner", "expected_macs"]
KP = 2000.0  # the multiplier's proportional gain: a gap of 0.01 of the dense MACs pushes with 20
KI = 1.0  # its integral gain per step (both tuned on a gated tiny wav2vec2: bench/bench_l0_controller.py)


@contextlib.contextmanager
def _head_gating(model: nn.Module, gate: torch.Tensor) -> Iterator[None]:
    with controlled(model) as ctl, ctl.gating(gate):
        yield


GATING: dict[str, Callable[[nn.Module, torch.Tensor], Any]] = {
    "heads": _head_gating, "ffn": neuron_gating, "conv": channel_gating, "layers": layer_gating}


def expected_macs(order: Any, probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """E[MACs] of the model `order` (a `RemovalOrder` of the gated kinds, nothing removed yet) describes, for
    the open probabilities `probs` ({kind: (L, W)}); exact for 0 / 1 probabilities (tested against
    FlopCounterMode counts of the physical prune)."""
    device = next(iter(probs.values())).device  # the gates' (the model's): no CPU tensor meets a GPU one
    saved = torch.zeros((), dtype=torch.float64, device=device)
    inner = 0.0
    for kind in ("heads", "ffn"):
        if kind in probs:
            inner = inner + ((1 - probs[kind].double()) * order.unit_macs[kind]).sum(1)  # (L,)
    if "layers" in probs:
        costs = torch.tensor(order.exact["layer"].costs, dtype=torch.float64, device=device)  # (L,)
        p = probs["layers"].double()[:, 0]
        saved = saved + ((1 - p) * costs + p * inner).sum()
    elif not isinstance(inner, float):
        saved = saved + inner.sum()
    if "conv" in probs:
        macs = order.exact["conv"]
        saved = saved + macs.macs(list(macs.counts)) - macs.macs(list(probs["conv"].double().sum(1)))
    return order.macs - saved


class MaskLearner:
    """Gates for `units` on `student`, their cost model and the Lagrangian; `step(loss_fn, batch)` trains.
    `gains`: the multiplier's (proportional, integral) gains; (0, 10) is the plain gradient ascent of earlier
    versions (bench/bench_l0_controller.py compares them)."""

    def __init__(self, student: nn.Module, units: tuple[str, ...], target: float, *, steps: int, lr: float,
                 gate_lr: float, seed: int = 0, gains: tuple[float, float] = (KP, KI)):
        from .order import removal_order

        done = plan_of(student)
        if done.num_pruned or done.num_pruned_ffn or done.num_pruned_conv:
            raise InputError("--method l0 learns masks on a model that lost no heads, neurons or channels yet; "
                             "give the unpruned model")
        self.student, self.units, self.target, self.steps = student, units, target, steps
        grids = self.grids = {kind: KINDS[kind].grid(student) for kind in units}
        self.gates = nn.ModuleDict({kind: HardConcrete(grid) for kind, grid in grids.items()})
        device = next(student.parameters()).device
        self.gates.to(device)
        self.fixed = torch.zeros(*grids["layers"], dtype=torch.bool) if "layers" in units else None
        if self.fixed is not None:
            self.fixed[sorted(fixed_layers(student))] = True  # never gated (WavLM's first layer)
        self.order = removal_order(student, {kind: torch.zeros(*grid) for kind, grid in grids.items()},
                                   min_per_layer=dict.fromkeys(units, 0))
        self.start = _value(expected_macs(self.order, self.probs())) / self.order.dense_macs  # at the initial gates
        if not math.isfinite(self.start):
            self.start = self.order.macs / self.order.dense_macs  # the meta device has no values
        self.gains, self.integral = gains, 0.0  # integral: KI x the summed gap, the multiplier's memory
        self.opt = torch.optim.Adam([{"params": [p for p in student.parameters() if p.requires_grad], "lr": lr},
                                     {"params": self.gates.parameters(), "lr": gate_lr}])
        self.generator = torch.Generator().manual_seed(seed)
        self.seed, self.done = seed, 0
        self.closed_fraction, self.ranked = float("nan"), False  # set by `plan`
        self.history: list[dict[str, float]] = []

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the learning updates: the student's trainable weights and the gates' locations."""
        return [p for group in self.opt.param_groups for p in group["params"]]  # the weights' and the gates' groups

    def state_dict(self) -> dict[str, Any]:
        """Everything the learning has changed (tensors and plain data: a `weights_only` checkpoint)."""
        return {"student": self.student.state_dict(), "gates": self.gates.state_dict(), "integral": self.integral,
                "opt": self.opt.state_dict(),
                "generator": self.generator.get_state(), "done": self.done, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s `state`: the next step is the one the saved run would have taken."""
        self.student.load_state_dict(state["student"])
        self.gates.load_state_dict(state["gates"])
        self.integral = float(state["integral"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"].cpu())
        self.done, self.history = int(state["done"]), list(state["history"])

    def probs(self) -> dict[str, torch.Tensor]:
        out = {kind: gate.open_probability() for kind, gate in self.gates.items()}
        if self.fixed is not None:
            fixed = self.fixed.to(out["layers"].device)
            out["layers"] = torch.where(fixed, torch.ones_like(out["layers"]), out["layers"])
        return out

    def target_now(self) -> float:
        """The annealed target: from the model's fraction to `target` over the first half of the steps."""
        share = min(1.0, self.done / max(1, self.steps // 2))
        return self.start + (self.target - self.start) * share

    def step(self, loss_fn: Callable[[nn.Module], torch.Tensor], batch_size: int, *, rows: list[int] | None = None,
             weight: torch.Tensor | None = None) -> dict[str, float]:
        """One optimizer step on a batch of `batch_size` rows: `loss_fn(student)` is the (b,) distillation loss
        of the rows this process holds (`rows`, default all; data-parallel: rank::world, `weight` 0 for a
        stand-in row) under the sampled gates. The step descends the whole batch's mean loss: with a process
        group the gradients are summed over the processes, and every row draws the gates and the dropout
        noise it would draw in one process, so N processes take the steps of one (up to float rounding)."""
        rank, world = _world()
        rows = list(range(batch_size)) if rows is None else rows
        _seed_noise(self.seed, self.done, rank)  # dropout / SpecAugment: repeatable, and the same on --resume
        with contextlib.ExitStack() as stack:
            for kind, gate in self.gates.items():
                z = gate.sample(batch_size, self.generator)[rows]  # (b, L, W): every process draws the whole batch
                if kind == "layers" and self.fixed is not None:
                    z = torch.where(self.fixed.to(z.device), torch.ones_like(z), z)
                stack.enter_context(GATING[kind](self.student, z))
            per_sample = loss_fn(self.student)  # (b,)
        if weight is not None:
            per_sample = per_sample * weight.to(per_sample.device)
        task = per_sample.sum() / batch_size  # this process's share of the batch's mean
        fraction = expected_macs(self.order, self.probs()) / self.order.dense_macs
        gap = fraction.float() - self.target_now()  # the same in every process, as the gates are
        multiplier = self.integral + self.gains[0] * _value(gap)  # PI: the integral so far and the gap now
        self.opt.zero_grad(set_to_none=True)
        (task + multiplier * gap / world).backward()  # summed over the processes: the Lagrangian counts once
        if world > 1:
            task = _sum_over_processes(self.trainable(), task.detach())
        self.opt.step()
        self.integral += self.gains[1] * _value(gap)
        self.done += 1
        record = {"step": self.done, "loss": _value(task), "expected_mac_fraction": _value(fraction),
                  "target": self.target_now(), "multiplier": multiplier}
        self.history.append(record)
        return record

    def plan(self) -> PruningPlan:
        """Every unit whose test-time gate is 0 (a conv layer keeps its most open channel); when those leave
        more MACs than the target, then the other units by log_alpha, the least open first over every kind
        (one scale: the gates'), until the plan is within the budget."""
        from .order import prefix_plan, removal_order

        closed = self._closed()
        device = next(iter(self.gates.parameters())).device
        binary = {kind: KINDS[kind].keep_mask(closed, grid).to(device) for kind, grid in self.grids.items()}
        self.closed_fraction = _value(expected_macs(self.order, binary)) / self.order.dense_macs
        self.ranked = not self.closed_fraction <= self.target  # the gates did not reach the budget (NaN on meta)
        if not self.ranked:
            return closed
        alpha = {kind: gate.log_alpha.detach().cpu().double() for kind, gate in self.gates.items()}
        if self.fixed is not None:
            alpha["layers"][self.fixed] = math.inf  # never gated, never ranked out
        gone = {(kind, l, i) for kind in alpha for l, ids in KINDS[kind].removed(closed).items() for i in ids}
        order = removal_order(self.student, alpha, min_per_layer=dict.fromkeys(alpha, 0)).sorted_by(
            lambda kind, l, i: ((kind, l, i) not in gone, float(alpha[kind][l, i])),
            "the closed units, then by log_alpha (the least open first)")
        budget, _ = prefix_plan(order, self.target, dict.fromkeys(alpha, 0))
        return closed.union(budget)

    def _closed(self) -> PruningPlan:
        plan = PruningPlan(*KINDS["heads"].grid(self.student))
        for kind, gate in self.gates.items():
            z = gate.deterministic().detach().cpu()  # (L, W)
            if kind == "layers" and self.fixed is not None:
                z = torch.where(self.fixed, torch.ones_like(z), z)
            if kind == "conv":
                best = gate.log_alpha.detach().cpu().argmax(1)
                z[torch.arange(z.shape[0]), best] = torch.clamp(z[torch.arange(z.shape[0]), best], min=1e-6)
            closed = {l: tuple(int(i) for i in torch.nonzero(z[l] == 0).flatten()) for l in range(z.shape[0])}
            plan = KINDS[kind].with_removed(plan, {l: ids for l, ids in closed.items() if ids}, z.shape[1])
        return plan

    def fold_(self) -> int:
        """Fold the test-time gates of kept heads and neurons into their output columns (exact); returns how
        many kept channels and layers had a gate below 1 (they are kept at 1)."""
        rounded = 0
        with torch.no_grad():
            for kind, gate in self.gates.items():
                z = gate.deterministic().detach()
                if kind == "heads":
                    adapter = head_adapter(self.student)
                    d = adapter.head_dim
                    for site in adapter.sites:
                        scale = z[site.layer].repeat_interleave(d).to(site.out.weight.dtype)  # (H * d,)
                        site.out.weight.mul_(scale)
                elif kind == "ffn":
                    for site in ffn_sites(self.student):
                        site.output.weight.mul_(z[site.layer].to(site.output.weight.dtype))
                else:
                    rounded += int(((z > 0) & (z < 1)).sum())
        return rounded

    def report(self) -> dict[str, Any]:
        probs = self.probs()
        return {"units": list(self.units), "target": self.target, "steps": self.done,
                "expected_mac_fraction": _value(expected_macs(self.order, probs) / self.order.dense_macs),
                "start_mac_fraction": self.start, "closed_mac_fraction": self.closed_fraction,
                "ranked_to_budget": self.ranked, "history": self.history}


def _world() -> tuple[int, int]:
    from ..scorers.parallel import world

    return world()


def _seed_noise(seed: int, step: int, rank: int) -> None:
    """Seed the generators a training forward draws from (torch: dropout, layer drop; NumPy: transformers'
    SpecAugment masks) from (seed, step, rank) alone."""
    import random

    import numpy as np

    value = (seed * 1_000_003 + step * 1_009 + rank) % 2**32
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def _sum_over_processes(params: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """Sum the gradients of `params` (one flat all-reduce) and `loss` over the process group; the summed loss."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
        offset += g.numel()
    return flat[-1]


def _value(tensor: torch.Tensor) -> float:
    """A 0-d tensor as a float (NaN on the meta device, which holds no values)."""
    return float("nan") if tensor.is_meta else float(tensor.detach())


def copy_for_training(model: nn.Module) -> nn.Module:
    """A trainable copy of `model` (every parameter requires grad; the front end too when it is gated)."""
    student = copy.deepcopy(model)
    for param in student.parameters():
        param.requires_grad_(True)
    return student


def steps_for(samples: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(samples / batch_size)
