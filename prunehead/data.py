"""Data in, batches out: any speech data set becomes mono float32 audio at the model's rate.

`load_data(spec, split, processor, task)` accepts
  * an audiofolder directory: `DIR/<split>/<label>/*.wav`, or `DIR/<label>/*.wav` (all of it is "train");
  * a CSV / JSONL manifest (a file, or `DIR/<split>.csv|jsonl`): an audio path column and `label` or `text`;
    an optional `split` column selects rows;
  * built-in offline sets: `fsdd-ks[:DIR]`, `fsdd-sid[:DIR]` (takes 0-4 = test), `speech-commands[:DIR]`
    (12-class KS) and `speech-commands-all[:DIR]` (every word a class);
  * a hub data set when online: `hub:NAME[:CONFIG]`, or the short names in `HUB_ALIASES`;
  * several of the above joined by `+` (their label names are merged by name).
Audio is decoded with soundfile, downmixed and resampled; `make_batches` pads and collates.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import soundfile as sf
import torch
from scipy.signal import resample_poly

from .errors import DataError, InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SPLITS = ("train", "validation", "test")
AUDIO_COLUMNS = ("audio", "path", "file", "file_name", "filename", "audio_path", "wav")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KS_LABELS = (*KS_WORDS, "_silence_", "_unknown_")
HUB_ALIASES = {"superb:ks": ("superb", "ks"), "superb:si": ("superb", "si"), "superb:ic": ("superb", "ic"),
               "speech_commands": ("speech_commands", "v0.01"), "librispeech_asr": ("librispeech_asr", "clean")}
DEFAULT_RATE = 16_000
CLIP_KEY = "prunehead_clip_seconds"  # feature-extractor attribute: the clip length a model was trained on
BUILTIN_SETS = ("fsdd-ks", "fsdd-sid", "speech-commands", "speech-commands-all")  # `NAME[:DIR]` specs


@dataclass(frozen=True)
class Item:
    """One utterance before decoding: a file path or encoded bytes, and its label name or transcript."""

    source: str | bytes
    name: str  # shown in error messages (the path, or a hub row id)
    target: str


@dataclass(frozen=True)
class Source:
    """What a spec resolves to: items, and whether targets are labels or transcripts."""

    items: list[Item]
    column: str  # "label" or "text"
    label_names: tuple[str, ...] = ()  # fixed class order, if the source defines one


def shared_dir() -> Path:
    """The shared assets folder: $PRUNEHEAD_SHARED, else `../shared` beside the project checkout."""
    env = os.environ.get("PRUNEHEAD_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


# ----------------------------------------------------------------------------------------------- audio

def resample(wave: np.ndarray, orig_rate: int, rate: int) -> np.ndarray:
    """Polyphase resampling of a 1-D signal (exact rational ratio, anti-aliased)."""
    if orig_rate == rate:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(orig_rate, rate)
    return resample_poly(wave, rate // g, orig_rate // g).astype(np.float32)


def read_audio(source: str | bytes | Path, rate: int = DEFAULT_RATE, name: str | None = None) -> np.ndarray:
    """Decode a file (or bytes) to mono float32 at `rate`. Raises DataError naming the file."""
    name = name or str(source)
    try:
        data, orig = sf.read(io.BytesIO(source) if isinstance(source, bytes) else source,
                             dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as err:
        raise DataError(f"cannot decode audio file {name} ({str(err).splitlines()[0]}); "
                        "fix or remove it, or pass --on-error skip") from None
    if data.shape[0] == 0:
        raise DataError(f"audio file {name} is empty; remove it, or pass --on-error skip")
    return resample(data.mean(axis=1), int(orig), rate)  # (T',)


def fix_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """Centre-crop or zero-pad (at the end) to exactly `samples`."""
    if len(wave) >= samples:
        start = (len(wave) - samples) // 2
        return wave[start:start + samples]
    return np.pad(wave, (0, samples - len(wave)))


# ----------------------------------------------------------------------------------------------- sources

def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _no_split(what: str, split: str, available: Sequence[str]) -> DataError:
    return DataError(f"{what} has no split {split!r}; use --split with one of: {', '.join(available)}")


def _fsdd(root: Path, split: str, target: str) -> Source:
    """FSDD `{digit}_{speaker}_{take}.wav`: KS labels the digit word, SID the speaker; takes 0-4 = test."""
    if split not in ("train", "test"):
        raise _no_split(f"FSDD ({root})", split, ("train", "test"))
    items = []
    for path in _audio_files(root):
        m = re.fullmatch(r"(\d)_(\w+?)_(\d+)", path.stem)
        if m and (int(m[3]) < 5) == (split == "test"):
            items.append(Item(str(path), str(path), DIGITS[int(m[1])] if target == "ks" else m[2]))
    names = DIGITS if target == "ks" else tuple(sorted({i.target for i in items}))
    return Source(items, "label", names)


def _speech_commands(root: Path, split: str, all_words: bool = False) -> Source:
    """Speech Commands word folders; list files give the splits.

    12-class KS (10 words, _silence_, _unknown_ for the rest), or every word its own class (`all_words`).
    """
    lists = {s: root / f"{s}_list.txt" for s in ("testing", "validation")}
    listed = {s: set(p.read_text().split()) if p.exists() else set() for s, p in lists.items()}
    if split not in SPLITS:
        raise _no_split(f"Speech Commands ({root})", split, SPLITS)
    items = []
    for path in _audio_files(root):
        word = path.parent.name
        if word.startswith("_"):  # _background_noise_ holds long recordings, not clips
            continue
        rel = f"{word}/{path.name}"
        where = "test" if rel in listed["testing"] else "validation" if rel in listed["validation"] else "train"
        if where == split:
            items.append(Item(str(path), str(path), word if word in KS_WORDS or all_words else "_unknown_"))
    return Source(items, "label", () if all_words else KS_LABELS)


def _folder(root: Path, split: str, label_column: str | None) -> Source:
    """Audiofolder: `<split>/<label>/*.wav`, `<label>/*.wav`, or a per-split manifest inside the folder."""
    for suffix in (".csv", ".jsonl"):
        if (root / f"{split}{suffix}").is_file():
            return _manifest(root / f"{split}{suffix}", None, label_column)
    manifests = sorted(p.stem for p in root.iterdir() if p.suffix in (".csv", ".jsonl") and p.stem in SPLITS)
    split_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name in SPLITS)
    if manifests or split_dirs:
        if not (root / split).is_dir():
            raise _no_split(str(root), split, sorted({*manifests, *split_dirs}))
        base = root / split
    elif split == "train":
        base = root
    else:
        raise DataError(f"{root} has no split folders, so all of it is 'train'; pass --split train, or "
                        f"arrange it as {root}/{split}/<label>/*.wav")
    for name in ("metadata.csv", "metadata.jsonl"):
        if (base / name).is_file():
            return _manifest(base / name, None, label_column)
    items = [Item(str(p), str(p), p.relative_to(base).parts[0]) for p in _audio_files(base)
             if len(p.relative_to(base).parts) > 1]
    return Source(items, "label")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse manifest {path}: {err}; write one row per utterance") from None


def _manifest(path: Path, split: str | None, label_column: str | None) -> Source:
    """CSV/JSONL rows: an audio path column (relative to the manifest) and a label or text column."""
    rows = _read_rows(path)
    columns = list(rows[0]) if rows else []
    audio = next((c for c in AUDIO_COLUMNS if c in columns), None)
    target = label_column or next((c for c in ("label", "text") if c in columns), None)
    if audio is None:
        raise DataError(f"manifest {path} has no audio path column (columns: {columns}); "
                        f"name it one of: {', '.join(AUDIO_COLUMNS)}")
    if target not in columns:
        raise DataError(f"manifest {path} has no {target or 'label or text'!r} column (columns: {columns}); "
                        "rename the column or pass --label-column")
    if split is not None and "split" in columns:
        available = sorted({r["split"] for r in rows})
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise _no_split(f"manifest {path}", split, available)
    items = [Item(str(path.parent / r[audio]), str(path.parent / r[audio]), str(r[target])) for r in rows]
    return Source(items, "text" if target == "text" else "label")


def _hub(name: str, config: str | None, split: str, label_column: str | None) -> Source:
    """A hub data set (needs network); audio is read as bytes and decoded here with soundfile."""
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except ValueError as err:
        raise DataError(f"hub data set {name!r} has no split {split!r} ({str(err).splitlines()[0]})") from None
    except Exception as err:  # network, missing data set, scripts: one line with the cause
        raise DataError(f"cannot load hub data set {name!r} ({type(err).__name__}: {str(err).splitlines()[0]}); "
                        "check the name and your network, or use a local folder or manifest") from None
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    target = label_column or next((c for c in ("label", "text", "sentence") if c in ds.column_names), None)
    if target not in ds.column_names:
        raise DataError(f"hub data set {name!r} has no {target or 'label or text'!r} column "
                        f"(columns: {ds.column_names}); pass --label-column")
    feature = ds.features[target]
    names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else ()
    items = []
    for i, row in enumerate(ds):
        audio = row["audio"]
        source = audio.get("bytes") or audio.get("path")
        value = names[row[target]] if names else str(row[target])
        items.append(Item(source, audio.get("path") or f"{name}[{i}]", value))
    return Source(items, "label" if names else "text", names)


def _resolve(spec: str, split: str, label_column: str | None) -> Source:
    """Turn one spec (no `+`) into a Source."""
    kind, _, arg = spec.partition(":")
    if kind in ("fsdd-ks", "fsdd-sid"):
        root = Path(arg) if arg else shared_dir() / "data" / "fsdd" / "recordings"
        _require_dir(root, spec)
        return _fsdd(root, split, kind[5:])
    if kind in ("speech-commands", "speech-commands-all"):
        root = Path(arg) if arg else shared_dir() / "data" / "speech-commands-v0.01-300"
        _require_dir(root, spec)
        return _speech_commands(root, split, all_words=kind.endswith("-all"))
    if kind == "hub":
        name, _, config = arg.partition(":")
        return _hub(name, config or None, split, label_column)
    if spec in HUB_ALIASES:
        return _hub(*HUB_ALIASES[spec], split, label_column)
    path = Path(spec)
    if path.is_dir():
        return _folder(path, split, label_column)
    if path.is_file() and path.suffix in (".csv", ".jsonl"):
        return _manifest(path, split, label_column)
    raise DataError(f"data {spec!r} is not a folder, a .csv/.jsonl manifest, fsdd-ks, fsdd-sid, "
                    "speech-commands[-all][:DIR], or hub:NAME[:CONFIG]; check the path")


def split_exists(spec: str, split: str) -> bool:
    """True when every part of `spec` has files in `split` (nothing is decoded)."""
    try:
        return all(_resolve(part.strip(), split, None).items for part in spec.split("+"))
    except DataError:
        return False


def _require_dir(root: Path, spec: str) -> None:
    if not root.is_dir():
        raise DataError(f"{spec}: folder {root} not found; pass the folder as {spec.split(':')[0]}:/path")


# ----------------------------------------------------------------------------------------------- datasets

def sampling_rate_of(processor: Any) -> int:
    """The rate a processor / feature extractor expects (16 kHz if none is given)."""
    fe = getattr(processor, "feature_extractor", processor)
    return int(getattr(fe, "sampling_rate", None) or DEFAULT_RATE)


def _decode(items: list[Item], rate: int, on_error: str, clip: int | None) -> tuple[list[np.ndarray], list[int]]:
    waves, kept, failed = [], [], []
    for i, item in enumerate(items):
        try:
            wave = read_audio(item.source, rate, item.name)
        except DataError as err:
            if on_error != "skip":
                raise
            failed.append(f"{item.name} ({err})")
            continue
        waves.append(fix_length(wave, clip) if clip else wave)
        kept.append(i)
    if failed:
        warnings.warn(f"skipped {len(failed)} undecodable file(s): " + "; ".join(failed), stacklevel=3)
    return waves, kept


def load_data(spec: str, split: str = "test", processor: Any = None, task: str | None = None,
              on_error: str = "stop", clip_seconds: float | None = None,
              label_column: str | None = None, max_samples: int | None = None, seed: int = 0) -> datasets.Dataset:
    """Load `split` of a data spec (see the module docstring) as a Dataset, decoded into memory.

    Columns: `audio` (float32 mono at the processor's rate), `length` (samples), `path`, and `label`
    (ClassLabel with the label names) or `text` (transcript, for ASR).

    Args:
        processor: feature extractor or processor; only its sampling rate is used here.
        task: "asr" requires transcripts, other tasks labels; None accepts what the data has.
        on_error: "stop" raises on the first undecodable file; "skip" drops it with a warning naming it.
        clip_seconds: centre-crop / zero-pad every clip to this length (exact batches for KS). Default:
            for labelled clips, the length the model was fine-tuned with (`CLIP_KEY` on its feature
            extractor), else none; transcribed sentences are never cropped unless asked.
        label_column: the manifest / hub column holding the target (default: `label`, else `text`).
        max_samples, seed: decode only a seeded random subset of this many utterances (kept in order).
    """
    if on_error not in ("stop", "skip"):
        raise InputError(f"on_error must be 'stop' or 'skip', not {on_error!r}")
    sources = [_resolve(part.strip(), split, label_column) for part in spec.split("+")]
    columns = {s.column for s in sources}
    if len(columns) > 1:
        raise DataError(f"{spec}: cannot join data with labels and data with transcripts")
    column = columns.pop()
    if task is not None and column != ("text" if task == "asr" else "label"):
        raise DataError(f"{spec} has {column}s but task {task!r} needs "
                        f"{'texts' if task == 'asr' else 'labels'}; pick matching data or --task")
    items = [item for s in sources for item in s.items]
    if not items:
        raise DataError(f"{spec} split {split!r} holds no audio files; check the path and --split")
    if max_samples is not None and max_samples < len(items):
        keep = np.sort(np.random.default_rng(seed).choice(len(items), max_samples, replace=False))
        items = [items[i] for i in keep]
    rate = sampling_rate_of(processor)
    if clip_seconds is None and column == "label":  # never crop transcribed sentences
        clip_seconds = getattr(processor, CLIP_KEY, None)
    waves, kept = _decode(items, rate, on_error, round(clip_seconds * rate) if clip_seconds else None)
    if not waves:
        raise DataError(f"{spec} split {split!r}: no file could be decoded")
    names = _label_names(sources) if column == "label" else None
    meta = {"spec": spec, "split": split, "sampling_rate": rate}
    return _dataset(waves, [items[i] for i in kept], names, meta)


def _dataset(waves: list[np.ndarray], items: list[Item], names: tuple[str, ...] | None,
             meta: dict[str, Any]) -> datasets.Dataset:
    """The Arrow table, built directly (`Dataset.from_dict` is ~100x slower for audio arrays)."""
    columns: dict[str, pa.Array] = {"audio": pa.array(waves, type=pa.list_(pa.float32())),
                                    "length": pa.array([len(w) for w in waves], type=pa.int64()),
                                    "path": pa.array([i.name for i in items], type=pa.string())}
    features = datasets.Features({"audio": datasets.Sequence(datasets.Value("float32")),
                                  "length": datasets.Value("int64"), "path": datasets.Value("string")})
    if names is not None:
        index = {n: i for i, n in enumerate(names)}
        features["label"] = datasets.ClassLabel(names=list(names))
        columns["label"] = pa.array([index[i.target] for i in items], type=pa.int64())
    else:
        features["text"] = datasets.Value("string")
        columns["text"] = pa.array([i.target for i in items], type=pa.string())
    info = datasets.DatasetInfo(description=json.dumps(meta), features=features)
    return datasets.Dataset(pa.table(columns), info=info).with_format("numpy")


def _label_names(sources: list[Source]) -> tuple[str, ...]:
    """Fixed orders first (in spec order), then any other names sorted."""
    names: list[str] = []
    for s in sources:
        names += [n for n in s.label_names if n not in names]
    extra = sorted({i.target for s in sources for i in s.items} - set(names))
    return (*names, *extra)


def label_names(dataset: datasets.Dataset) -> list[str]:
    """Class names of a classification dataset (index = label id)."""
    feature = dataset.features.get("label")
    if not isinstance(feature, datasets.ClassLabel):
        raise DataError("this data set has no class labels (it holds transcripts); use a classification data set")
    return list(feature.names)


def align_labels(dataset: datasets.Dataset, names: list[str]) -> datasets.Dataset:
    """Renumber `label` to a model's class order `names` (matched by name); unnamed LABEL_i keep ids."""
    own = label_names(dataset)
    if own == names:
        return dataset
    if all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        if len(own) > len(names):
            raise DataError(f"the data has {len(own)} classes but the model only {len(names)}; use matching data")
        return dataset
    mapping = np.array([names.index(n) if n in names else -1 for n in own])
    new = mapping[np.asarray(dataset["label"])]
    if (new < 0).any():
        unknown = sorted({own[i] for i in np.asarray(dataset["label"])[new < 0]})
        raise DataError(f"labels {unknown} of the data are not among the model's labels {names}; "
                        "evaluate on data with the model's classes")
    dataset = dataset.remove_columns("label")
    return dataset.add_column("label", new.tolist(), feature=datasets.ClassLabel(names=names)).with_format("numpy")


# ----------------------------------------------------------------------------------------------- batches

def default_feature_extractor(config: Any) -> Any:
    """The feature extractor a model config implies (used when a model directory ships none)."""
    import transformers as tf

    if config.model_type == "whisper":
        return tf.WhisperFeatureExtractor(feature_size=config.num_mel_bins,
                                          chunk_length=config.max_source_positions // 50)
    if config.model_type in ("wav2vec2", "hubert", "data2vec-audio", "wavlm", "unispeech", "unispeech-sat"):
        return tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=DEFAULT_RATE, padding_value=0.0,
                                           do_normalize=True,
                                           return_attention_mask=getattr(config, "feat_extract_norm", "layer") == "layer")
    raise InputError(f"no default feature extractor for model type {config.model_type!r}; "
                     "save the model's feature extractor beside it")


def split_processor(obj: Any) -> tuple[Any, Any]:
    """(feature_extractor, tokenizer) from a processor, a feature extractor, a tokenizer, a model or a pair."""
    import transformers as tf

    if isinstance(obj, tuple):
        return obj
    if isinstance(obj, tf.PreTrainedModel):
        return default_feature_extractor(obj.config), None
    if isinstance(obj, tf.PreTrainedTokenizerBase):
        return None, obj
    if hasattr(obj, "feature_extractor"):
        return obj.feature_extractor, getattr(obj, "tokenizer", None)
    return obj, None


def _order(dataset: datasets.Dataset, batch_size: int, shuffle: bool, seed: int, equal_length: bool) -> list[list[int]]:
    n = len(dataset)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    if not equal_length:
        return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    lengths = dataset["length"]
    buckets: dict[int, list[int]] = {}
    for i in order:
        buckets.setdefault(int(lengths[i]), []).append(int(i))
    return [b[i:i + batch_size] for b in buckets.values() for i in range(0, len(b), batch_size)]


def _text_labels(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    if tokenizer is None:
        raise InputError("ASR batches need the model's tokenizer; pass a processor with a tokenizer")
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_attention_mask=True)
    return enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)  # (B, T_max)


def collate(rows: dict[str, Any], feature_extractor: Any, tokenizer: Any = None) -> dict[str, torch.Tensor]:
    """One batch from a slice of a dataset: model inputs (+ attention_mask if the extractor makes one), labels."""
    import transformers as tf

    waves = list(rows["audio"])
    padding = {} if isinstance(feature_extractor, tf.WhisperFeatureExtractor) else {"padding": "longest"}
    feats = feature_extractor(waves, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt", **padding)
    batch = {k: v for k, v in feats.items() if isinstance(v, torch.Tensor)}
    if "label" in rows:
        batch["labels"] = torch.as_tensor(np.asarray(rows["label"]), dtype=torch.long)  # (B,)
    elif "text" in rows:
        batch["labels"] = _text_labels(tokenizer, [str(t) for t in rows["text"]])
    return batch


def make_batches(dataset: datasets.Dataset, model_or_processor: Any, batch_size: int, shuffle: bool = False,
                 seed: int = 0, equal_length: bool = False, tokenizer: Any = None) -> Iterator[dict[str, torch.Tensor]]:
    """Yield padded batches (`dict[str, Tensor]`) over `dataset`.

    Args:
        model_or_processor: a processor, feature extractor, (feature_extractor, tokenizer) pair, or a model
            (its default feature extractor is used).
        shuffle, seed: a seeded permutation of the rows.
        equal_length: only rows of identical length share a batch (no padding at all).
        tokenizer: overrides the processor's tokenizer for ASR labels.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    fe, tok = split_processor(model_or_processor)
    for idx in _order(dataset, batch_size, shuffle, seed, equal_length):
        yield collate(dataset[idx], fe, tokenizer or tok)
