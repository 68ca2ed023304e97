"""The multiplier of `--method l0`: plain gradient ascent against the PI controller, side by side, one table.

    python bench/bench_l0_controller.py                       # 200 and 676 steps, target 0.35, every kind
    python bench/bench_l0_controller.py --steps 338 --target 0.2

A 4-layer tiny wav2vec2 (random init) with heads, FFN neurons, conv channels and layers gated learns its
masks while distilling its own copy (logits and every hidden state, MSE) on fixed random audio, with the
learner of `prune --method l0` (`prunehead.pruning.learned.MaskLearner`, its default learning rates), once per
multiplier: `ascent` is the integral term alone at gain 10 (the plain SGD ascent of earlier versions, less
their (e - t)^2 term), `pi` the default gains (KP, KI). Per run: the largest |expected MACs - target| once the
annealed target has stopped moving (the second half of the steps), the expected and the closed-gate MAC
fractions at the end, whether the ranking had to finish the cut, and the wall time. Cost: about 10 s per
100 steps on one thread.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from prunehead.architectures import build_model
from prunehead.pruning.learned import KI, KP, MaskLearner


def run(steps: int, target: float, gains: tuple[float, float], units: tuple[str, ...]) -> dict[str, float]:
    torch.manual_seed(0)
    teacher = build_model("wav2vec2-tiny", num_labels=5, num_hidden_layers=4).eval()
    student = copy.deepcopy(teacher).train()
    for param in student.parameters():
        param.requires_grad_(True)
    learner = MaskLearner(student, units, target, steps=steps, lr=1e-4, gate_lr=0.1, gains=gains)
    audio = torch.randn(64, 8, 4000, generator=torch.Generator().manual_seed(1))  # 64 batches of 8 x 0.25 s

    def distill(x: torch.Tensor):
        def loss(model: torch.nn.Module) -> torch.Tensor:  # (8,)
            with torch.no_grad():
                t = teacher(input_values=x, output_hidden_states=True)
            s = model(input_values=x, output_hidden_states=True)
            hidden = sum(F.mse_loss(a, b, reduction="none").mean((1, 2))
                         for a, b in zip(s.hidden_states[1:], t.hidden_states[1:]))
            return F.mse_loss(s.logits, t.logits, reduction="none").mean(1) + hidden
        return loss

    start = time.perf_counter()
    for i in range(steps):
        learner.step(distill(audio[i % len(audio)]), 8)
    learner.plan()
    settled = learner.history[steps // 2:]
    return {"error": max(abs(h["expected_mac_fraction"] - target) for h in settled),
            "expected": learner.history[-1]["expected_mac_fraction"], "closed": learner.closed_fraction,
            "ranked": learner.ranked, "wall": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 676])
    parser.add_argument("--target", type=float, default=0.35)
    parser.add_argument("--units", default="heads,ffn,conv,layers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    units = tuple(args.units.split(","))
    print(f"target {args.target} of the dense MACs, units {','.join(units)}; pi = ({KP:g}, {KI:g})")
    print("| steps | multiplier | max error, 2nd half | expected MACs | closed gates | ranked | wall |")
    print("|---|---|---|---|---|---|---|")
    for steps in args.steps:
        for name, gains in (("ascent (0, 10)", (0.0, 10.0)), ("pi", (KP, KI))):
            r = run(steps, args.target, gains, units)
            print(f"| {steps} | {name} | {r['error']:.3f} | {r['expected']:.3f} | {r['closed']:.3f} | "
                  f"{'yes' if r['ranked'] else 'no'} | {r['wall']:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
