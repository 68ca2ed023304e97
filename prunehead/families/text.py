"""BERT-family text encoders (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA): `encoder.layer[i].attention`.

The projections live on `attention.self` (query/key/value) and the output projection on
`attention.output.dense`, so an emptied layer gets a zero-width self-attention and a bias-only dense.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..portable.template import EmptySelfAttention
from .base import AttentionSite, BiasOnly, Family, make_site, output_bias
from .runner import LayerRunner
from .speech import base_model


TOKEN_TYPES = ("bert", "electra")  # the model types whose inputs include token_type_ids


class TextFamily(Family):
    name = "text"
    model_types = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
    projections = ("query", "key", "value")
    ffn_paths = (("intermediate.dense", "output.dense"),)

    def export_inputs(self, model: nn.Module) -> tuple[str, tuple[str, ...], dict[str, int]]:
        """Token ids and mask (and token types where the model has them); RoBERTa-style positions start at
        pad + 1, so two positions fewer fit."""
        config = model.config
        names = ("input_ids", "attention_mask") + (("token_type_ids",) if config.model_type in TOKEN_TYPES else ())
        offset = 2 if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        return "text", names, {"max_length": config.max_position_embeddings - offset, "vocab_size": config.vocab_size}

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return base_model(model).encoder.layer

    def sites(self, model: nn.Module) -> list[AttentionSite]:
        return [make_site(i, layer.attention, "self", self.projections, layer.attention.output, "dense")
                for i, layer in enumerate(self.layers(model))]

    def empty_(self, site: AttentionSite) -> None:
        bias = output_bias(site.out)
        setattr(site.owner, site.attr, EmptySelfAttention())
        setattr(site.out_owner, site.out_attr, BiasOnly(bias))

    def runner(self, model: nn.Module) -> LayerRunner | None:
        prefix = getattr(model, "base_model_prefix", "")
        base = getattr(model, prefix, None) if prefix else None
        if base is None or base is model:
            return None
        pooler = getattr(base, "pooler", None)

        def post(hidden: torch.Tensor) -> BaseModelOutputWithPooling:
            return BaseModelOutputWithPooling(last_hidden_state=hidden,
                                              pooler_output=pooler(hidden) if pooler is not None else None)

        return LayerRunner(base.encoder.layer, model, prefix, post)

    def example_inputs(self, model: nn.Module, seconds: float = 1.0, batch: int = 1,
                       device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """128 tokens per sample (fewer where the model has fewer positions; text has no audio length)."""
        positions = getattr(model.config, "max_position_embeddings", 130) - 2  # RoBERTa's start after pad + 1
        return {"input_ids": torch.ones(batch, min(128, positions), dtype=torch.long, device=device)}
