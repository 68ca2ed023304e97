"""Named model architectures built in code (random init): tiny test models and the benchmark grids.

`build_model("wav2vec2-12x12", task="ks", num_labels=12)` gives a fresh, untrained model of that shape
with the task's head. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import transformers as tf

from .errors import InputError

# Small conv front end: 7 layers with the wav2vec2 kernels/strides (320x downsampling, 20 ms frames).
_SMALL_CONV = dict(conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
_TINY_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
# The released wav2vec 2.0 / HuBERT *base* shape (95 M parameters, the HIB paper's model): 7-layer 512-channel
# conv front end with group norm and no conv bias, 12 layers x 12 heads, hidden 768, intermediate 3072.
_BASE = dict(conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
             conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False, hidden_size=768,
             num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, num_conv_pos_embeddings=128,
             num_conv_pos_embedding_groups=16)
_NO_AUG = dict(mask_time_prob=0.0, layerdrop=0.0, hidden_dropout=0.0, attention_dropout=0.0,
               activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0)



def _whisper_encoder(width: int, layers: int) -> dict[str, Any]:
    """A small Whisper config (4 heads per layer, 80 mel bins, 1 s window, one-layer decoder stub)."""
    return {"d_model": width, "encoder_layers": layers, "encoder_attention_heads": 4, "decoder_layers": 1,
            "decoder_attention_heads": 4, "encoder_ffn_dim": 2 * width, "decoder_ffn_dim": 2 * width,
            "num_mel_bins": 80, "max_source_positions": 50, "vocab_size": 100, "max_target_positions": 32,
            "dropout": 0.0, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1}


ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    # family, config overrides
    "wav2vec2-tiny": ("wav2vec2", {**_SMALL_CONV, **_TINY_ENCODER, **_NO_AUG, "feat_extract_norm": "layer"}),
    "hubert-tiny": ("hubert", {**_SMALL_CONV, **_TINY_ENCODER, **_NO_AUG, "feat_extract_norm": "layer"}),
    "data2vec-audio-tiny": ("data2vec-audio", {**_SMALL_CONV, **_TINY_ENCODER, **_NO_AUG,
                                               "num_conv_pos_embeddings": 4, "num_conv_pos_embedding_groups": 4}),
    # 4 layers x 4 heads: trains on synthesized keywords in a few minutes on 2 cores.
    "wav2vec2-small": ("wav2vec2", {**_SMALL_CONV, **_NO_AUG, "hidden_size": 64, "num_hidden_layers": 4,
                                    "num_attention_heads": 4, "intermediate_size": 128,
                                    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
                                    "feat_extract_norm": "layer"}),
    # A Whisper-style encoder (log-mel front end) from scratch, the demo's model: it learns keywords faster
    # than a raw-waveform front end.
    "whisper-encoder-small": ("whisper", _whisper_encoder(width=64, layers=4)),
    # The paper's head grid (12 layers x 12 heads) at a width that trains on 2 CPU cores. Pre-LN
    # (`do_stable_layer_norm`, as wav2vec2-large-lv60): the post-LN stack of wav2vec2 base, trained from
    # random weights, reached 92 % once and chance or 66 % on reruns (docs/benchmarks.md).
    "wav2vec2-12x12": ("wav2vec2", {**_SMALL_CONV, "conv_dim": (128,) * 7, "hidden_size": 192,
                                    "do_stable_layer_norm": True,
                                    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 768,
                                    "num_conv_pos_embeddings": 32, "num_conv_pos_embedding_groups": 8,
                                    "feat_extract_norm": "layer", "mask_time_prob": 0.05, "layerdrop": 0.0}),
    # Full base shapes (12 x 12, hidden 768), random init: what a real checkpoint costs to score and run.
    "wav2vec2-base": ("wav2vec2", _BASE),
    "hubert-base": ("hubert", _BASE),
    "bert-tiny": ("bert", {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 64, "max_position_embeddings": 64,
                           "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}),
    "whisper-encoder-tiny": ("whisper", _whisper_encoder(width=32, layers=2)),
    "wavlm-tiny": ("wavlm", {**_SMALL_CONV, **_TINY_ENCODER, **_NO_AUG, "feat_extract_norm": "layer"}),
}

_CONFIGS = {"wav2vec2": tf.Wav2Vec2Config, "hubert": tf.HubertConfig, "data2vec-audio": tf.Data2VecAudioConfig,
            "bert": tf.BertConfig, "whisper": tf.WhisperConfig, "wavlm": tf.WavLMConfig}
_CLASSIFIERS = {"wav2vec2": tf.Wav2Vec2ForSequenceClassification, "hubert": tf.HubertForSequenceClassification,
                "data2vec-audio": tf.Data2VecAudioForSequenceClassification,
                "bert": tf.BertForSequenceClassification, "whisper": tf.WhisperForAudioClassification,
                "wavlm": tf.WavLMForSequenceClassification}
_CTC = {"wav2vec2": tf.Wav2Vec2ForCTC, "hubert": tf.HubertForCTC, "data2vec-audio": tf.Data2VecAudioForCTC,
        "wavlm": tf.WavLMForCTC}


def build_config(arch: str, **overrides: Any) -> tf.PretrainedConfig:
    """The config of a named architecture, with `overrides` applied."""
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    family, defaults = ARCHITECTURES[arch]
    return _CONFIGS[family](**{**defaults, **overrides})


def build_model(arch: str, task: str = "ks", num_labels: int = 2, **overrides: Any) -> tf.PreTrainedModel:
    """A randomly initialised model of architecture `arch` with the head for `task`.

    Args:
        arch: a key of `ARCHITECTURES`.
        task: "asr" gives a CTC model (`overrides` should set `vocab_size`); anything else a classifier.
        num_labels: classes of the classifier.
    """
    family = ARCHITECTURES.get(arch, ("", {}))[0]
    if task == "asr":
        if family not in _CTC:
            raise InputError(f"architecture {arch!r} has no CTC head; use one of: {', '.join(_CTC)}")
        config = build_config(arch, **{"ctc_loss_reduction": "mean", **overrides})
        return _CTC[family](config).eval()
    config = build_config(arch, num_labels=num_labels, **overrides)
    return _CLASSIFIERS[family](config).eval()
