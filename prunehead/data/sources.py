"""Data specs to items: built-in sets (FSDD, Speech Commands), audio folders, manifests, hub data sets."""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ..errors import DataError, DataWarning, MissingSplitError
from .audio import AUDIO_SUFFIXES, Item

SPLITS = ("train", "validation", "test")
AUDIO_COLUMNS = ("audio", "path", "file", "file_name", "filename", "audio_path", "wav")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KS_LABELS = (*KS_WORDS, "_silence_", "_unknown_")
HUB_ALIASES = {"superb:ks": ("superb", "ks"), "superb:si": ("superb", "si"), "superb:ic": ("superb", "ic"),
               "speech_commands": ("speech_commands", "v0.01"), "librispeech_asr": ("librispeech_asr", "clean")}
BUILTIN_SETS = ("fsdd-ks", "fsdd-sid", "speech-commands", "speech-commands-all")  # `NAME[:DIR]` specs


@dataclass(frozen=True)
class Source:
    """What a spec resolves to: items, and whether targets are labels or transcripts."""

    items: list[Item]
    column: str  # "label" or "text"
    label_names: tuple[str, ...] = ()  # fixed class order, if the source defines one


def shared_dir() -> Path:
    """The shared assets folder: $PRUNEHEAD_SHARED, else `../shared` beside the project checkout."""
    env = os.environ.get("PRUNEHEAD_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under `folder` (sorted); unreadable folders and broken links are named in one warning."""
    files, problems = [], []
    for root, _, names in os.walk(folder, onerror=lambda err: problems.append(f"{err.filename} ({err.strerror})")):
        for name in names:
            if Path(name).suffix.lower() in AUDIO_SUFFIXES:
                path = Path(root) / name
                if path.is_file():
                    files.append(path)
                else:
                    problems.append(f"{path} (broken link or not a file)")
    if problems:
        warnings.warn(f"{folder}: skipped {len(problems)} unreadable item(s), their audio is missing from the "
                      f"data: {'; '.join(problems)}; fix the permissions or links", DataWarning, stacklevel=2)
    return sorted(files)


def _no_split(what: str, split: str, available: Sequence[str]) -> MissingSplitError:
    return MissingSplitError(what, split, list(available))


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
    elif not any(p.is_dir() for p in root.iterdir()) and any(p.suffix.lower() in AUDIO_SUFFIXES
                                                              for p in root.iterdir()):
        raise DataError(f"{root} holds audio files without label folders; arrange it as {root}/<split>/<label>/"
                        "*.wav, or list the files and their labels in a CSV manifest (path,label)")
    else:
        raise MissingSplitError(str(root), split, ["train"], template="{what} has no split folders, so all of it is "
                                "'train'; pass {option} train, or arrange it as {what}/{split}/<label>/*.wav")
    for name in ("metadata.csv", "metadata.jsonl"):
        if (base / name).is_file():
            return _manifest(base / name, None, label_column)
    files = _audio_files(base)
    items = [Item(str(p), str(p), p.relative_to(base).parts[0]) for p in files if len(p.relative_to(base).parts) > 1]
    if files and not items:
        raise DataError(f"{base} holds audio files without label folders; arrange them as {base}/<label>/*.wav, "
                        "or list the files and their labels in a CSV manifest (path,label)")
    return Source(items, "label")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV (header line) or JSONL (one object per line) manifest; a UTF-8 BOM is allowed."""
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        else:
            with path.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse manifest {path}: {err}; write one row per utterance") from None
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"manifest {path} row {i} is not a JSON object; write one object per line")
    return rows


def _field(path: Path, row: dict[str, Any], i: int, column: str, empty_ok: bool) -> str:
    """`row[column]` as text; DataError naming the file and row if it is missing, null (or empty), not a
    plain value (a JSON object, list or true/false), or holds a NUL character."""
    value = row.get(column)
    if value is None or (not empty_ok and not str(value).strip()):
        state = "no" if column not in row else "an empty" if value is not None else "a null"
        raise DataError(f"manifest {path} row {i} has {state} {column!r} value; fill it in or remove the row")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"manifest {path} row {i} has a {type(value).__name__} as its {column!r} value "
                        f"({json.dumps(value)[:40]}); write it as text")
    if "\x00" in str(value):
        raise DataError(f"manifest {path} row {i} has a NUL character in its {column!r} value; remove it")
    return str(value)


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
                        "rename the labels' column to 'label' (or the transcripts' to 'text')")
    if split is not None and "split" in columns:
        available = sorted({str(r.get("split")) for r in rows})
        rows = [r for r in rows if r.get("split") == split]
        if not rows:
            raise _no_split(f"manifest {path}", split, available)
    items, seen = [], {}
    for i, r in enumerate(rows, 1):
        file = str(path.parent / _field(path, r, i, audio, empty_ok=False))
        value = _field(path, r, i, target, empty_ok=target == "text")
        first = seen.setdefault(file, (i, value))
        if first[1] != value:
            raise DataError(f"manifest {path} lists {file} twice with different {target}s (row {first[0]}: "
                            f"{first[1]!r}, row {i}: {value!r}); keep one row")
        items.append(Item(file, file, value))
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
                        f"(columns: {ds.column_names}); load it yourself and save a manifest with a 'label' or "
                        "'text' column")
    feature = ds.features[target]
    names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else ()
    items = []
    for i, row in enumerate(ds):
        audio = row["audio"]
        source = audio.get("bytes") or audio.get("path")
        value = names[row[target]] if names else str(row[target])
        items.append(Item(source, audio.get("path") or f"{name}[{i}]", value))
    return Source(items, "label" if names else "text", names)


def resolve(spec: str, split: str, label_column: str | None) -> Source:
    """Turn one spec (no `+`) into a Source."""
    if not spec.strip():
        raise DataError("a data spec part is empty; name a folder, manifest or data set (./ for the current folder)")
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
        return all(resolve(part.strip(), split, None).items for part in spec.split("+"))
    except DataError:
        return False


def spec_paths(spec: str) -> list[Path]:
    """The local files and folders a data spec reads (hub data sets have none): inputs an output must spare.

    A manifest's rows are inputs too: the audio files it names (wherever they lie), for every split.
    """
    paths: list[Path] = []
    for part in spec.split("+"):
        kind, sep, arg = part.strip().partition(":")
        if kind in ("fsdd-ks", "fsdd-sid"):
            paths.append(Path(arg) if arg else shared_dir() / "data" / "fsdd" / "recordings")
        elif kind in ("speech-commands", "speech-commands-all"):
            paths.append(Path(arg) if arg else shared_dir() / "data" / "speech-commands-v0.01-300")
        elif kind != "hub" and part.strip() not in HUB_ALIASES and part.strip():
            path = Path(part.strip())
            paths += [path, *(file for manifest in _manifests_in(path) for file in _listed_files(manifest))]
    return paths


def _manifests_in(path: Path) -> list[Path]:
    """The manifests a spec path may read: itself, or a folder's split and metadata manifests."""
    if path.is_file():
        return [path] if path.suffix in (".csv", ".jsonl") else []
    if not path.is_dir():
        return []
    names = [f"{split}{suffix}" for split in SPLITS for suffix in (".csv", ".jsonl")]
    names += [f"{split}/metadata{suffix}" for split in ("", *SPLITS) for suffix in (".csv", ".jsonl")]
    return [path / name.lstrip("/") for name in names if (path / name.lstrip("/")).is_file()]


def _listed_files(manifest: Path) -> list[Path]:
    """The audio files a manifest names (none when it cannot be read: loading it reports why)."""
    try:
        rows = _read_rows(manifest)
    except (DataError, OSError):
        return []
    audio = next((c for c in AUDIO_COLUMNS if rows and c in rows[0]), None)
    return [manifest.parent / str(r[audio]) for r in rows if audio and isinstance(r.get(audio), str) and r[audio]]


def _require_dir(root: Path, spec: str) -> None:
    if not root.is_dir():
        raise DataError(f"{spec}: folder {root} not found; pass the folder as {spec.split(':')[0]}:/path")
