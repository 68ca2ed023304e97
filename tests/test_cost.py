"""MACs from FlopCounterMode == an independent count from module shapes, on every family, pruned or not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunehead import PruningPlan, head_adapter, prune_
from prunehead.cost import count_macs
from tests.conftest import FAMILIES, inputs_for, tiny

UNEVEN = PruningPlan(2, 4, {0: (0, 1, 2, 3), 1: (1, 3)})


def hand_count(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, int]:
    """Convs and linears from their output shapes (isinstance, so parametrized convs count), attention as
    2 * B * H_l * L * L * d per layer (Q K^T and P V) with L the length entering that layer's attention.

    Run with the family's routed blocks (equal outputs), so that projections are module calls the hooks
    see (WavLM's own block computes them inside F.multi_head_attention_forward)."""
    counts = {"conv": 0, "linear": 0, "attention": 0}
    adapter = head_adapter(model)
    heads = adapter.heads_per_layer(model)

    def on_conv(module: nn.Conv1d, args: tuple, out: torch.Tensor) -> None:
        counts["conv"] += out.numel() * (module.in_channels // module.groups) * module.kernel_size[0]

    def on_linear(module: nn.Linear, args: tuple, out: torch.Tensor) -> None:
        counts["linear"] += out.numel() * module.in_features

    def on_attention(layer: int):
        def record(module: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            batch, length = hidden.shape[:2]
            counts["attention"] += 2 * batch * heads[layer] * length * length * adapter.head_dim
        return record

    with adapter.family.routed(model):
        handles = [m.register_forward_hook(on_conv) for m in model.modules() if isinstance(m, nn.Conv1d)]
        handles += [m.register_forward_hook(on_linear) for m in model.modules() if isinstance(m, nn.Linear)]
        handles += [site.module.register_forward_hook(on_attention(site.layer), with_kwargs=True)
                    for site in head_adapter(model).sites]
        try:
            with torch.no_grad():
                model(**inputs)
        finally:
            for handle in handles:
                handle.remove()
    return counts


@pytest.mark.parametrize("pruned", [False, True])
@pytest.mark.parametrize("arch", FAMILIES)
def test_flop_counter_matches_an_independent_count(arch, pruned):
    model = prune_(tiny(arch), UNEVEN) if pruned else tiny(arch)
    inputs = inputs_for(arch, batch=2)
    got, expected = count_macs(model, inputs), hand_count(model, inputs)
    # WavLM's own block runs bias-free products (aten.mm) that the counter cannot tell from attention
    # matmuls: there only the total and the convolutions are compared.
    kinds = ("conv",) if arch.startswith("wavlm") else ("conv", "linear", "attention")
    for kind in kinds:
        assert got[kind] == pytest.approx(expected[kind], rel=0.01, abs=0), kind
    assert got["total"] == pytest.approx(sum(expected.values()), rel=0.01, abs=0)
    assert got["total"] == got["conv"] + got["linear"] + got["attention"]


def test_wav2vec2_positional_convolution_is_counted():
    """Known answer from the config: 7 feature-encoder convs plus the grouped positional conv."""
    model = tiny("wav2vec2-tiny")
    config, samples = model.config, 4000
    length, conv = samples, 0
    channels_in = 1
    for channels, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride):
        length = (length - kernel) // stride + 1
        conv += length * channels * channels_in * kernel
        channels_in = channels
    k, groups, hidden = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups, config.hidden_size
    positional = (length + 2 * (k // 2) - k + 1) * hidden * (hidden // groups) * k
    assert count_macs(model, {"input_values": torch.zeros(1, samples)})["conv"] == conv + positional
