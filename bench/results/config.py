"""What `make results` measures (FULL: the protocol of docs/results.md) and `make results-smoke` (SMOKE:
the same steps on tiny models and a 360-clip subset of FSDD, a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .blocks import ASR, W2V2, WKS, WSID

SCORERS = ("hib", "attattr", "gradient", "occlusion", "attention")
BUDGET_SCORERS = ("gradient", "attention", "occlusion", "attattr", "hib")
AUTO_SCORERS = ("gradient", "attention", "occlusion", "attattr")


@dataclass(frozen=True)
class Model:
    """One benchmark model: its recipe, its data and the steps that measure it."""

    name: str
    recipe: str
    target: str  # fsdd-ks / fsdd-sid labels ("ks", "sid"), or "asr" (synthesized sentences)
    steps: tuple[str, ...]
    scorers: tuple[str, ...] = SCORERS
    goal_plans: tuple[tuple[float, float], ...] = ()  # (head ratio, FFN ratio)
    headline: str = "plain"  # the headline table's layout: "plain" (Whisper) or "paper" (beside wav2vec 2.0 base)


MODELS = {
    WKS: Model(WKS, "recipes/whisper-tiny-fsdd-ks.toml", "ks",
               ("train", "scores", "curves", "budget", "both", "frontier", "goal", "hib200"),
               goal_plans=((0.4, 0.5), (0.4, 0.75))),
    WSID: Model(WSID, "recipes/whisper-tiny-fsdd-sid.toml", "sid",
                ("train", "scores", "curves", "budget", "both", "hib200")),
    W2V2: Model(W2V2, "recipes/w2v2-12x12-ks.toml", "ks",
                ("train", "scores", "curves", "hib64", "iterative", "budget", "frontier", "goal", "hib200"),
                goal_plans=((0.4, 0.75), (0.6, 0.75), (0.8, 0.875)), headline="paper"),
    ASR: Model(ASR, "recipes/w2v2-12x12-asr.toml", "asr", ("synth", "train", "scores", "curves"),
               scorers=("gradient", "attention")),
}


@dataclass(frozen=True)
class Settings:
    """The size of every step. FULL is what docs/results.md documents; SMOKE shrinks each knob."""

    name: str
    root: Path
    models: tuple[str, ...] = (WKS, WSID, W2V2, ASR)
    samples: int = 16  # scoring samples (train split, seed 0)
    batch_size: int = 8  # scoring batch
    eval_batch: int = 32  # sweep / prune evaluation batch
    steps: int | None = None  # HIB steps and AttAttr points (None: the paper's / 20)
    ratios: str = "0:0.9:0.1"  # global sweep
    per_layer_ratios: str | None = None  # None: K = 0 .. H - 1 heads per layer
    asr_ratios: str = "0:0.8:0.2"
    headline: float = 0.4  # the paper's global point
    hib64_samples: int = 64
    iterative: tuple[float, int] = (0.7, 4)  # global ratio, rounds
    max_drop: float = 0.01
    frontier: tuple[str, str, int] = ("0:0.6:0.2", "0:0.75:0.25", 10)  # head ratios, FFN ratios, repeats
    export_repeats: int = 30
    recover_lr: float = 1e-4
    hib200: tuple[int, int] = (200, 2)  # samples, torchrun processes (1: no torchrun)
    hib200_ratios: str = "0.2,0.3,0.4,0.5"
    asr_synth: tuple[str, ...] = ("--n-per-class", "3000", "--test-fraction", "0.1")
    fsdd: str | None = None  # a folder of FSDD recordings (None: ../shared's)
    train_flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per model, after the recipe
    goal_plans: tuple[tuple[float, float], ...] | None = None  # None: each model's own

    def data(self, model: Model) -> str:
        """The data spec of every command on `model` (ASR: the synthesized folder)."""
        if model.target == "asr":
            return str(self.work(ASR) / "synth-asr")
        return f"fsdd-{model.target}" + (f":{self.fsdd}" if self.fsdd else "")

    def work(self, model: str) -> Path:
        """The folder of a model's artefacts (model/, scores/, sweeps/ ...): beside its step JSON."""
        return self.root / model / "out"


FULL = Settings("full", Path("runs/results"))


def smoke(root: Path = Path("runs/results-smoke")) -> Settings:
    """Tiny from-scratch models (1 epoch) on a subset of FSDD: every step, every command, in minutes."""
    tiny_whisper = ("--model", "arch:whisper-encoder-tiny", "--window-s", "1.0", "--epochs", "1", "--lr", "1e-3")
    fsdd = root / "data" / "fsdd"
    flags = {WKS: (*tiny_whisper, "--data", f"fsdd-ks:{fsdd}"),
             WSID: (*tiny_whisper, "--data", f"fsdd-sid:{fsdd}"),
             W2V2: ("--model", "arch:wav2vec2-tiny", "--epochs", "1", "--lr", "1e-3", "--data", f"fsdd-ks:{fsdd}",
                    "--eval-data", f"fsdd-ks:{fsdd}"),
             ASR: ("--epochs", "1")}
    return replace(FULL, name="smoke", root=root, samples=4, batch_size=4, steps=2,
                   ratios="0,0.5", asr_ratios="0,0.5", headline=0.5, hib64_samples=6, iterative=(0.5, 2),
                   frontier=("0,0.5", "0,0.5", 2), export_repeats=3, hib200=(8, 1), hib200_ratios="0.5",
                   asr_synth=("--n-per-class", "6", "--test-fraction", "0.5"), fsdd=str(fsdd), train_flags=flags,
                   goal_plans=((0.5, 0.5),))


SMOKE_TAKES = (0, 2, 5)  # FSDD takes linked into the smoke subset: 120 test clips (selection: 60 + 60), 60 train


def link_fsdd_subset(settings: Settings, shared: Path) -> None:
    """SMOKE: symlink takes 0 and 2 (test) and 5 (train) of every digit and speaker into `settings.fsdd`."""
    if settings.fsdd is None:
        return
    source, target = shared / "data" / "fsdd" / "recordings", Path(settings.fsdd)
    if not source.is_dir():
        raise FileNotFoundError(f"no FSDD recordings in {source}; put ../shared beside the checkout or set "
                                "PRUNEHEAD_SHARED")
    target.mkdir(parents=True, exist_ok=True)
    for link in target.glob("*.wav"):
        if int(link.stem.rsplit("_", 1)[1]) not in SMOKE_TAKES:
            link.unlink()
    for wav in sorted(source.glob("*.wav")):
        if int(wav.stem.rsplit("_", 1)[1]) in SMOKE_TAKES and not (target / wav.name).exists():
            os.symlink(wav.resolve(), target / wav.name)
