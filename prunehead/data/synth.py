"""Synthesized speech data sets (espeak-ng and flite voices, pitches, speeds, plus noise), deterministic.

`synthesize("ks", out_dir, n_per_class=20, seed=0)` writes 16 kHz mono PCM wav files:
  * ks:  audiofolder `DIR/{train,test}/<label>/*.wav`, 1 s clips; the 10 Speech Commands words,
         `_silence_` (noise only) and `_unknown_` (other words);
  * sid: audiofolder `DIR/{train,test}/<speaker>/*.wav`; each speaker is a fixed voice + pitch;
  * ic:  manifests `DIR/{train,test}.csv` (audio, label "action|object|location", slots, text),
         Fluent-Speech-Commands-style commands such as "turn on the lights in the kitchen";
  * asr: manifests `DIR/{train,test}.csv` (audio, text, speaker) of sentences from a small grammar.
Every clip draws its voice, pitch, speed, gain and noise from `numpy.random.default_rng((seed, split, i))`,
so the same seed gives byte-identical files. Cost: one TTS process per clip (~20-50 ms).
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from . import DIGITS, KS_LABELS, resample
from ..errors import InputError
from ..output_guard import atomic_dir, output_path

RATE = 16_000
SPLITS = {"train": 0, "test": 1}
ESPEAK_VOICES = ("en-us+m1", "en-us+m3", "en-us+f2", "en-us+f4", "en-gb+m2", "en-gb+f3", "en-gb-scotland+m4",
                 "en-gb-scotland+f1", "en-029+m6", "en-gb-x-rp+f5", "en-us+klatt", "en-gb-x-gbcwmd+m7")
FLITE_VOICES = ("slt", "rms", "awb", "kal16")
# Words outside Speech Commands v0.01 and FSDD, so joined data sets never give one word two labels.
UNKNOWN_WORDS = ("learn", "follow", "forward", "backward", "visual", "apple", "water", "table", "music",
                 "window", "yellow", "morning")
IC_INTENTS = {  # action -> objects; every object may take a location
    "activate": ("lights", "music", "lamp", "heat"), "deactivate": ("lights", "music", "lamp", "heat"),
    "increase": ("volume", "heat"), "decrease": ("volume", "heat"), "bring": ("newspaper", "juice", "shoes"),
}
IC_PHRASES = {"activate": ("turn on the {o}{l}", "switch on the {o}{l}", "{o} on{l}"),
              "deactivate": ("turn off the {o}{l}", "switch off the {o}{l}", "{o} off{l}"),
              "increase": ("turn up the {o}{l}", "increase the {o}{l}", "more {o}{l}"),
              "decrease": ("turn down the {o}{l}", "decrease the {o}{l}", "less {o}{l}"),
              "bring": ("bring me the {o}", "fetch the {o}", "get me my {o}")}
IC_LOCATIONS = ("none", "kitchen", "bedroom", "washroom")
ASR_WORDS = {
    "det": ("the", "a", "one", "every", "my", "your"),
    "adj": ("red", "small", "quiet", "happy", "old", "green", "bright", "cold"),
    "noun": ("cat", "dog", "house", "river", "teacher", "garden", "window", "child", "train", "bird"),
    "verb": ("sees", "likes", "finds", "opens", "paints", "follows", "builds", "calls"),
    "adv": ("today", "slowly", "again", "at night", "in the morning", "now"),
}


@dataclass(frozen=True)
class Voice:
    """A TTS voice: engine ("espeak" or "flite"), voice name, pitch (espeak 0-99 / flite Hz)."""

    engine: str
    name: str
    pitch: float

    @property
    def label(self) -> str:
        return f"{self.engine}-{self.name.replace('+', '-')}-p{int(self.pitch)}"


def tts(text: str, voice: Voice, speed: float = 1.0) -> np.ndarray:
    """Speak `text` with `voice` at relative `speed`; mono float32 at 16 kHz."""
    try:
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.name, "-p", str(int(voice.pitch)), "-s", str(int(165 * speed)),
                   "--stdout", text]
            wave, rate = sf.read(io.BytesIO(subprocess.run(cmd, capture_output=True, check=True).stdout),
                                 dtype="float32")
        else:
            with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
                cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / speed:.3f}",
                       "--setf", f"int_f0_target_mean={voice.pitch:.0f}", "-t", text, "-o", tmp.name]
                subprocess.run(cmd, capture_output=True, check=True)
                wave, rate = sf.read(tmp.name, dtype="float32")
    except FileNotFoundError as err:
        raise InputError(f"{err.filename} is not installed; apt-get install espeak-ng flite") from None
    except subprocess.CalledProcessError as err:
        raise InputError(f"{voice.engine} failed on {text!r} with voice {voice.name}: {err.stderr[:200]!r}") from None
    return resample(wave, rate, RATE)


def trim(wave: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Drop leading and trailing near-silence."""
    loud = np.flatnonzero(np.abs(wave) > threshold * (np.abs(wave).max() + 1e-9))
    return wave[loud[0]:loud[-1] + 1] if loud.size else wave


def add_noise(wave: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (10, 35)) -> np.ndarray:
    """Scale to a random peak and add coloured Gaussian noise at a random SNR."""
    wave = wave / (np.abs(wave).max() + 1e-9) * rng.uniform(0.3, 0.9)
    colour = rng.uniform(0.0, 0.95)  # one-pole low-pass: 0 = white, -> 1 = brown
    noise = lfilter([1 - colour], [1, -colour], rng.standard_normal(len(wave)))
    power = np.mean(wave ** 2) if np.any(wave) else 1e-4
    noise *= np.sqrt(power / 10 ** (rng.uniform(*snr_db) / 10) / (np.mean(noise ** 2) + 1e-12))
    return np.clip(wave + noise, -1, 1).astype(np.float32)


def place(wave: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Put `wave` at a random offset inside `samples` of silence (centre-cropped if longer)."""
    if len(wave) >= samples:
        start = (len(wave) - samples) // 2
        return wave[start:start + samples]
    out = np.zeros(samples, np.float32)
    offset = int(rng.integers(0, samples - len(wave) + 1))
    out[offset:offset + len(wave)] = wave
    return out


def random_voice(rng: np.random.Generator) -> Voice:
    """Any espeak-ng or flite voice, with a random pitch."""
    if rng.random() < 0.7:
        return Voice("espeak", str(rng.choice(ESPEAK_VOICES)), float(rng.integers(25, 75)))
    return Voice("flite", str(rng.choice(FLITE_VOICES)), float(rng.integers(90, 180)))


def speakers(n: int = 8) -> list[Voice]:
    """`n` fixed voices used as SID speakers (alternating engines, distinct pitches)."""
    pool = [Voice("espeak", v, 30 + (7 * i) % 40) for i, v in enumerate(ESPEAK_VOICES)]
    pool[1::3] = [Voice("flite", v, 100 + 20 * i) for i, v in enumerate(FLITE_VOICES)][:len(pool[1::3])]
    if not 1 <= n <= len(pool):
        raise InputError(f"SID synthesis has {len(pool)} speakers; pass --n-speakers between 1 and {len(pool)}")
    return pool[:n]


# ----------------------------------------------------------------------------------------------- tasks

def _ks_clip(label: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, str]]:
    if label == "_silence_":
        return add_noise(np.zeros(RATE, np.float32), rng, (-5, 5)) * rng.uniform(0.05, 1.0), {}
    word = str(rng.choice(UNKNOWN_WORDS)) if label == "_unknown_" else label
    wave = trim(tts(word, random_voice(rng), rng.uniform(0.8, 1.25)))
    return add_noise(place(wave, RATE, rng), rng), {"text": word}


def _ic_clip(label: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, str]]:
    action, obj, location = label.split("|")
    where = "" if location == "none" else f" in the {location}"
    text = str(rng.choice(IC_PHRASES[action])).format(o=obj, l=where)
    wave = trim(tts(text, random_voice(rng), rng.uniform(0.85, 1.2)))
    return add_noise(wave, rng), {"text": text, "action": action, "object": obj, "location": location}


def sentence(rng: np.random.Generator) -> str:
    """A random sentence from a small grammar: det adj noun verb det noun [adv]."""
    pick = {k: (lambda k=k: str(rng.choice(ASR_WORDS[k]))) for k in ASR_WORDS}
    words = [pick["det"](), pick["adj"](), pick["noun"](), pick["verb"](), pick["det"](), pick["noun"]()]
    return " ".join(words + ([pick["adv"]()] if rng.random() < 0.5 else []))


def _asr_clip(label: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, str]]:
    text, voice = sentence(rng), random_voice(rng)
    return add_noise(trim(tts(text, voice, rng.uniform(0.85, 1.2))), rng), {"text": text, "speaker": voice.label}


def _sid_maker(voices: list[Voice]) -> Callable[[str, np.random.Generator], tuple[np.ndarray, dict[str, str]]]:
    by_label = {v.label: v for v in voices}

    def make(label: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, str]]:
        text = sentence(rng) if rng.random() < 0.5 else " ".join(rng.choice(DIGITS, size=3))
        return add_noise(trim(tts(text, by_label[label], rng.uniform(0.85, 1.2))), rng), {"text": text}
    return make


def _classes(task: str, n_speakers: int) -> list[str]:
    if task == "ks":
        return list(KS_LABELS)
    if task == "sid":
        return [v.label for v in speakers(n_speakers)]
    if task == "ic":
        return [f"{a}|{o}|{loc}" for a, objs in IC_INTENTS.items() for o in objs
                for loc in (IC_LOCATIONS if a != "bring" else ("none",))]
    return ["sentence"]


def synthesize(task: str, out_dir: str | Path, n_per_class: int = 60, seed: int = 0,
               test_fraction: float = 0.25, n_speakers: int = 8, workers: int = 2) -> Path:
    """Write a synthetic data set for `task` ("ks", "sid", "ic", "asr") to `out_dir`.

    Args:
        n_per_class: training clips per class (ASR: training sentences); the test split gets
            max(1, round(n_per_class * test_fraction)) more per class.
        seed: same seed, same files (byte for byte).
        n_speakers: SID classes.
        workers: parallel TTS processes.
    """
    makers = {"ks": _ks_clip, "ic": _ic_clip, "asr": _asr_clip}
    if task not in (*makers, "sid"):
        raise InputError(f"unknown synthesis task {task!r}; choose one of: ks, sid, ic, asr")
    if n_per_class < 1:
        raise InputError(f"--n-per-class must be at least 1, not {n_per_class}")
    if not (math.isfinite(test_fraction) and 0.0 <= test_fraction <= 1.0):
        raise InputError(f"--test-fraction must be within [0, 1], not {test_fraction}")
    make = makers.get(task) or _sid_maker(speakers(n_speakers))
    out = output_path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} is not empty; choose a new --out folder")
    classes = _classes(task, n_speakers)
    counts = {"train": n_per_class, "test": max(1, round(n_per_class * test_fraction))}
    jobs = [(split, label, i) for split, n in counts.items() for label in classes for i in range(n)]

    with atomic_dir(out, overwrite=out.is_dir()) as tmp:  # all of it appears at once, or nothing

        def run(job: tuple[str, str, int]) -> dict[str, str]:
            split, label, i = job
            rng = np.random.default_rng((seed, SPLITS[split], classes.index(label), i))
            wave, meta = make(label, rng)
            rel = Path(split) / _clip_name(task, label, classes.index(label), i)
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(tmp / rel, wave, RATE, subtype="PCM_16")
            return {"split": split, "audio": str(rel), **({"label": label} if task != "asr" else {}), **meta}

        rows = _run_all(run, jobs, workers)
        if task in ("ic", "asr"):
            _write_manifests(tmp, rows)
        (tmp / "synth.json").write_text(json.dumps({"task": task, "seed": seed, "n_per_class": n_per_class,
                                                    "test_fraction": test_fraction, "classes": classes}, indent=2))
    return out


def _run_all(run: Callable[[tuple[str, str, int]], dict[str, str]], jobs: list[tuple[str, str, int]],
             workers: int) -> list[dict[str, str]]:
    """`run` over `jobs` on `workers` threads, in order; on any error (Ctrl-C too) queued jobs are cancelled."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        return list(pool.map(run, jobs))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _clip_name(task: str, label: str, index: int, i: int) -> str:
    """KS/SID: `<label>/00007.wav` (audiofolder); IC/ASR: `clips/003-00007.wav` (labels in the manifest)."""
    return f"{label}/{i:05d}.wav" if task in ("ks", "sid") else f"clips/{index:03d}-{i:05d}.wav"


def _write_manifests(out: Path, rows: list[dict[str, str]]) -> None:
    for split in SPLITS:
        part = [{k: v for k, v in r.items() if k != "split"} for r in rows if r["split"] == split]
        with (out / f"{split}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(part[0]))
            writer.writeheader()
            writer.writerows(part)

