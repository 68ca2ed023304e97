"""Audio in: decode any file (or bytes) to mono float32 at the model's rate, crop or pad it."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from ..errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
DEFAULT_RATE = 16_000
RATES = (1_000, 384_000)  # sampling rates a file may declare (Hz): anything else is a broken header
MAX_SECONDS = 3_600.0  # longest file decoded (resampled size bounded: 1 h at 16 kHz is 230 MB of float32)
MAX_CLIP_SECONDS = 600.0  # longest --clip-seconds (every clip is padded to it)


@dataclass(frozen=True)
class Item:
    """One utterance before decoding: a file path or encoded bytes, and its label name or transcript."""

    source: str | bytes
    name: str  # shown in error messages (the path, or a hub row id)
    target: str


def sampling_rate_of(processor: Any) -> int:
    """The rate a processor / feature extractor expects (16 kHz if none is given)."""
    fe = getattr(processor, "feature_extractor", processor)
    return int(getattr(fe, "sampling_rate", None) or DEFAULT_RATE)


def resample(wave: np.ndarray, orig_rate: int, rate: int) -> np.ndarray:
    """Polyphase resampling of a 1-D signal (exact rational ratio, anti-aliased)."""
    if orig_rate == rate:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(orig_rate, rate)
    return resample_poly(wave, rate // g, orig_rate // g).astype(np.float32)


def read_audio(source: str | bytes | Path, rate: int = DEFAULT_RATE, name: str | None = None) -> np.ndarray:
    """Decode a file (or bytes) to mono float32 at `rate`. Raises DataError naming the file.

    The header is checked before any sample is decoded: a sampling rate outside `RATES` or a length over
    `MAX_SECONDS` is refused, so a 244-byte file cannot ask for gigabytes of resampled audio.
    """
    name = name or str(source)
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as handle:
            orig, frames = int(handle.samplerate), int(handle.frames)
            _check_header(name, orig, frames)
            data = handle.read(dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        raise DataError(f"cannot decode audio file {name} ({str(err).splitlines()[0]}); "
                        "fix or remove it, or pass --on-error skip") from None
    if data.shape[0] == 0:
        raise DataError(f"audio file {name} is empty; remove it, or pass --on-error skip")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).any(axis=1).sum())
        raise DataError(f"audio file {name} has {bad} non-finite sample(s) (NaN or inf); fix or remove it, "
                        "or pass --on-error skip")
    return resample(data.mean(axis=1), orig, rate)  # (T',)


def _check_header(name: str, orig: int, frames: int) -> None:
    """DataError for a declared rate outside `RATES` or a duration over `MAX_SECONDS`."""
    if not RATES[0] <= orig <= RATES[1]:
        raise DataError(f"audio file {name} declares {orig:,} Hz, outside the {RATES[0]:,}-{RATES[1]:,} Hz a "
                        "recording can have (a broken header?); fix or remove it, or pass --on-error skip")
    if frames > MAX_SECONDS * orig:
        raise DataError(f"audio file {name} lasts {frames / orig:,.0f} s, more than the {MAX_SECONDS:,.0f} s "
                        "prunehead decodes per file; cut it into clips, or pass --on-error skip")


def fix_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """Centre-crop or zero-pad (at the end) to exactly `samples`."""
    if len(wave) >= samples:
        start = (len(wave) - samples) // 2
        return wave[start:start + samples]
    return np.pad(wave, (0, samples - len(wave)))


def decode_items(items: list[Item], rate: int, on_error: str, clip: int | None,
                 min_samples: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Decode every item (cropped / padded to `clip` samples if given); returns the waves and kept indices.

    A clip shorter than `min_samples` (what the model's front end needs for one frame) is refused.
    `on_error="skip"` drops undecodable or too short files with one warning naming them; "stop" raises on
    the first.
    """
    waves, kept, failed = [], [], []
    for i, item in enumerate(items):
        try:
            wave = read_audio(item.source, rate, item.name)
            wave = fix_length(wave, clip) if clip else wave
            if len(wave) < min_samples:
                raise DataError(f"audio file {item.name} lasts {1000 * len(wave) / rate:.0f} ms, shorter than the "
                                f"{1000 * min_samples / rate:.0f} ms the model's front end needs for one frame; "
                                "remove it, pad it, pass --clip-seconds, or pass --on-error skip")
        except DataError as err:
            if on_error != "skip":
                raise
            failed.append(f"{item.name} ({err})")
            continue
        waves.append(wave)
        kept.append(i)
    if failed:
        warnings.warn(f"skipped {len(failed)} undecodable file(s): " + "; ".join(failed), stacklevel=3)
    return waves, kept
