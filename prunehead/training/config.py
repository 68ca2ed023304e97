"""Training settings: `TrainConfig`, its checks, the defaults by where the model comes from (from scratch or
a trained checkpoint), and the chance-level check of a finished run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import InputError, check_finite


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
FEATURE_FILES = ("preprocessor_config.json", "processor_config.json")
CHECKPOINT_FORMAT = "prunehead.train-checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters (also the `[train]` table of a recipe)."""

    epochs: int | None = None  # None: by model source (30 from scratch, 5 for a trained checkpoint)
    lr: float | None = None  # backbone; None: by model source (`source_defaults`)
    head_lr: float | None = None  # projector / classifier / lm_head; None: by model source
    batch_size: int | None = None  # None: by model source (8 from scratch, 16 for a trained checkpoint)
    freeze_feature_encoder: bool | None = None  # None: by model source
    seed: int = 0
    max_seconds: float | None = None  # stop this run after this wall time (checkpointed, resumable)
    warmup: float = 0.1  # fraction of all steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_split: str | None = "test"  # None: no evaluation
    train_split: str = "train"
    clip_seconds: float | None = None  # crop / pad training and evaluation clips to this length
    window_s: float | None = None  # Whisper input window (2.0 -> 100 positions); None keeps the model's
    augment: bool | None = None  # perturb training clips (prunehead.data.augment); None: by model source
    threads: int | None = 1  # CPU threads (a fixed count: the same run gives the same weights); None: torch's

    def __post_init__(self) -> None:
        check_train_config(self)


def check_train_config(cfg: TrainConfig) -> None:
    """InputError naming the option for a value training cannot use (NaN, inf, or out of range)."""
    for name, value in asdict(cfg).items():
        if isinstance(value, float):
            check_finite(f"--{name.replace('_', '-')}", value)
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "clip_seconds": cfg.clip_seconds,
                "window_s": cfg.window_s}
    for name, value in positive.items():
        if value is not None and not value > 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive, not {value}")
    non_negative = {"lr": cfg.lr, "head_lr": cfg.head_lr, "weight_decay": cfg.weight_decay,
                    "grad_clip": cfg.grad_clip, "max_seconds": cfg.max_seconds}
    for name, value in non_negative.items():
        if value is not None and value < 0:
            raise InputError(f"--{name.replace('_', '-')} must not be negative, not {value}")
    if cfg.warmup is not None and not 0.0 <= cfg.warmup <= 1.0:
        raise InputError(f"--warmup is a fraction of all steps, within [0, 1], not {cfg.warmup}")


# ------------------------------------------------------------------------------- defaults by model source

# A model built from scratch (`arch:NAME`) learns everything: backbone and front end at the head's rate, for
# 30 epochs of small batches of perturbed clips (measured on 12 synthesized keywords x 60 clips,
# docs/benchmarks.md "Training from scratch": wav2vec2-small 0.256 with the fine-tuning-like settings of
# before, 0.90 with these; augmentation alone took it from 26 % to 84 %).
# A trained checkpoint (folder, hub id, Whisper, pruned model) is fine-tuned gently on a fixed front end.
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "scratch": {"epochs": 30, "batch_size": 8, "lr": 1e-3, "head_lr": 1e-3, "freeze_feature_encoder": False,
                "augment": True},
    "pretrained": {"epochs": 5, "batch_size": 16, "lr": 5e-5, "head_lr": 1e-3, "freeze_feature_encoder": True,
                   "augment": False},
}


def model_source(model_spec: str) -> str:
    """Where the model comes from: "scratch" for `arch:NAME` (random initialisation), else "pretrained"."""
    return "scratch" if model_spec.startswith("arch:") else "pretrained"


def source_defaults(cfg: TrainConfig, model_spec: str) -> TrainConfig:
    """`cfg` with its unset (None) fields filled for where the model comes from; set values win."""
    defaults = SOURCE_DEFAULTS[model_source(model_spec)]
    return replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def default_train_config(model_spec: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig `finetune` uses for `model_spec` (flags / recipe values as `overrides`)."""
    return source_defaults(TrainConfig(**overrides), model_spec)


def chance_level(final: dict[str, float], labels: list[str] | None, eval_labels: list[int] | None = None
                 ) -> float | None:
    """The accuracy a constant guess gets: the largest class share of the evaluation labels (else 1/K);
    0 for ASR (1 - WER of an empty transcript). None without an accuracy to compare."""
    if "accuracy" not in final:
        return None
    if not labels:
        return 0.0
    if eval_labels:
        return max(eval_labels.count(c) for c in set(eval_labels)) / len(eval_labels)
    return 1.0 / len(labels)


def chance_warning(final: dict[str, float], chance: float | None, margin: float = 0.1) -> str | None:
    """One line when the final accuracy is below chance + `margin` * (1 - chance): nothing was learned."""
    if chance is None or "accuracy" not in final:
        return None
    threshold = chance + margin * (1.0 - chance)
    if final["accuracy"] >= threshold:
        return None
    return (f"accuracy {final['accuracy']:.3f} is near chance level: a constant guess gets {chance:.3f}, and "
            f"{final['accuracy']:.3f} is under {threshold:.3f} ({margin:.0%} of the way from chance to perfect), so "
            "the model learned next to nothing; train longer (--epochs) or with other --lr / --head-lr / "
            "--train-feature-encoder")
