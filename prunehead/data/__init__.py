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

Modules by role: `audio` (decode, resample, crop), `sources` (spec -> items), `labels` (class names),
`loading` (`load_data`), `batches` (feature extractors, collation).
"""

from __future__ import annotations

from .audio import AUDIO_SUFFIXES, DEFAULT_RATE, Item, fix_length, read_audio, resample, sampling_rate_of
from .batches import collate, default_feature_extractor, make_batches, split_processor
from .labels import align_labels, label_names, model_label_names
from .loading import CLIP_KEY, load_data
from .sources import (AUDIO_COLUMNS, BUILTIN_SETS, DIGITS, HUB_ALIASES, KS_LABELS, KS_WORDS, SPLITS, Source,
                      shared_dir, spec_paths, split_exists)

__all__ = ["AUDIO_COLUMNS", "AUDIO_SUFFIXES", "BUILTIN_SETS", "CLIP_KEY", "DEFAULT_RATE", "DIGITS", "HUB_ALIASES",
           "KS_LABELS", "KS_WORDS", "SPLITS", "Item", "Source", "align_labels", "collate", "default_feature_extractor",
           "fix_length", "label_names", "load_data", "model_label_names", "make_batches", "read_audio", "resample",
           "sampling_rate_of", "shared_dir", "spec_paths", "split_exists", "split_processor"]
