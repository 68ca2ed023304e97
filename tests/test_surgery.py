"""Physical removal == gating, save/load round trips, parameter and MAC arithmetic."""

from __future__ import annotations

import copy

import pytest
import torch

import prunehead
from prunehead import head_adapter, load, plan_of, prune_, save_pretrained
from prunehead.control import controlled
from prunehead.cost import count_macs, count_params
from prunehead.errors import UnsupportedModelError
from prunehead.pruning.plan import PruningPlan, select
from tests.conftest import FAMILIES, inputs_for, logits, tiny

PLANS = {
    "global": lambda L, H: select(torch.randn(L, H, generator=torch.Generator().manual_seed(3)), ratio=0.4),
    "per_layer": lambda L, H: select(torch.randn(L, H, generator=torch.Generator().manual_seed(4)), heads=2,
                                     scope="per_layer"),
    "empty_layer": lambda L, H: PruningPlan(L, H, {0: tuple(range(H)), 1: (1, 3)}),
}



@pytest.mark.parametrize("plan_name", PLANS)
@pytest.mark.parametrize("arch", FAMILIES)
def test_pruned_equals_gated_and_reloads(arch, plan_name, tmp_path):
    model = tiny(arch)
    adapter = head_adapter(model)
    plan = PLANS[plan_name](adapter.num_layers, adapter.num_heads)
    inputs = inputs_for(arch)
    with torch.no_grad(), controlled(model) as ctl, ctl.gating(plan.keep_mask()):
        gated = model(**inputs).logits
    pruned = prune_(copy.deepcopy(model), plan)
    torch.testing.assert_close(logits(pruned, inputs), gated, atol=1e-5, rtol=0)
    assert sum(head_adapter(pruned).heads_per_layer(pruned)) == adapter.num_layers * adapter.num_heads - plan.num_pruned
    save_pretrained(pruned, tmp_path / "m")
    reloaded = load(tmp_path / "m")
    assert plan_of(reloaded) == plan and PruningPlan.load(tmp_path / "m" / "plan.json") == plan
    torch.testing.assert_close(logits(reloaded, inputs), logits(pruned, inputs), atol=0, rtol=0)
    assert count_params(reloaded) == count_params(pruned)


def test_empty_layer_gives_out_proj_bias_and_no_nan():
    model = tiny("wav2vec2-tiny")
    with torch.no_grad():
        model.wav2vec2.encoder.layers[0].attention.out_proj.bias.normal_()
    bias = model.wav2vec2.encoder.layers[0].attention.out_proj.bias.detach().clone()
    prune_(model, PruningPlan(2, 4, {0: (0, 1, 2, 3)}))
    hidden = torch.randn(2, 7, 32)
    out, _ = model.wav2vec2.encoder.layers[0].attention(hidden)
    torch.testing.assert_close(out, bias.expand(2, 7, 32))
    assert torch.isfinite(logits(model, inputs_for("wav2vec2-tiny"))).all()


def test_incremental_pruning_equals_one_shot():
    model = tiny("hubert-tiny")
    first, second = PruningPlan(2, 4, {0: (1,), 1: (0, 2)}), PruningPlan(2, 4, {0: (3,), 1: (2, 3)})
    stepwise = prune_(prune_(copy.deepcopy(model), first), second)
    oneshot = prune_(copy.deepcopy(model), first.union(second))
    inputs = inputs_for("hubert-tiny")
    torch.testing.assert_close(logits(stepwise, inputs), logits(oneshot, inputs), atol=1e-6, rtol=0)
    assert plan_of(stepwise) == first.union(second)
    assert head_adapter(stepwise).kept_heads(stepwise) == [[0, 2], [1]]


def test_params_and_macs_drop_by_the_removed_heads():
    """Known answer: each removed head takes 4 * d * D weights + 3 * d biases, and on L frames
    4 * L * d * D projection MACs plus 2 * L * L * d attention MACs."""
    model = tiny("wav2vec2-tiny")
    D, d = 32, 8
    inputs = {"input_values": torch.randn(1, 16000)}
    frames = model._get_feat_extract_output_lengths(16000)
    before_p, before = count_params(model), count_macs(model, inputs)
    prune_(model, PruningPlan(2, 4, {0: (0, 2, 3), 1: (1,)}))
    after_p, after = count_params(model), count_macs(model, inputs)
    k = 4
    assert before_p - after_p == k * (4 * d * D + 3 * d)
    assert before["linear"] - after["linear"] == k * 4 * frames * d * D
    assert before["attention"] - after["attention"] == k * 2 * frames * frames * d
    assert before["conv"] == after["conv"]


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import SEWDConfig, SEWDModel  # disentangled attention: no family

    model = SEWDModel(SEWDConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64, conv_dim=(32,) * 13))
    with pytest.raises(UnsupportedModelError, match="sew-d.*supported model types: wav2vec2, hubert.*wavlm"):
        head_adapter(model)


def test_prune_removes_every_kind_of_the_plan_as_gating_does(tmp_path):
    """`prunehead.prune_` is the one mutating verb: a plan with heads, neurons, channels and layers comes out
    whole (earlier it removed the heads alone and kept the rest silently)."""
    from prunehead.units.conv import conv_layers
    from prunehead.units.kinds import evaluate_gated

    model = tiny("wav2vec2-tiny", num_hidden_layers=3)
    L, H = head_adapter(model).num_layers, head_adapter(model).num_heads
    width, inner = model.config.conv_dim[0], model.config.intermediate_size
    plan = PruningPlan(L, H, {0: (1,), 2: (0,)}, pruned_ffn={0: (0, 3, 5), 2: (1, 2)}, intermediate_size=inner,
                       pruned_conv={0: (0, 2), 1: (1,)}, conv_width=width, pruned_layers=(1,))
    inputs = inputs_for("wav2vec2-tiny")
    with torch.no_grad():
        gated = evaluate_gated(model, plan, lambda m: m(**inputs).logits)
    pruned = prune_(copy.deepcopy(model), plan)
    torch.testing.assert_close(logits(pruned, inputs), gated, atol=1e-5, rtol=1e-5)
    assert head_adapter(pruned).num_layers == L - 1
    assert [c.out_channels for c in conv_layers(pruned)][:2] == [width - 2, width - 1]
    assert count_params(pruned) < count_params(model)
    save_pretrained(pruned, tmp_path / "m")
    torch.testing.assert_close(logits(load(tmp_path / "m"), inputs), gated, atol=1e-5, rtol=1e-5)


def test_prune_refuses_a_plan_for_another_grid():
    model = tiny("wav2vec2-tiny")
    L, H = head_adapter(model).num_layers, head_adapter(model).num_heads
    with pytest.raises(prunehead.InputError, match="make the plan for this model"):
        prune_(model, PruningPlan(L + 1, H, pruned_layers=(0,)))
