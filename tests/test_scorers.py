"""Every registered scorer: the contract (shape, determinism, state restored), known answers on a trained
model with provably dead heads, and the baselines' exactness checks (method.md §5.6, §5.7)."""

from __future__ import annotations

import math
from importlib.metadata import EntryPoint

import pytest
import torch
import torch.nn.functional as F
import transformers as tf

from prunehead import control
from prunehead.errors import InputError
from prunehead.heads import head_adapter
from prunehead.pruning.plan import PruningPlan
from prunehead.scorers import available, get_scorer, registry
from prunehead.scorers.attattr import layer_attribution
from prunehead.scorers.attention import head_statistic
from prunehead.scorers.base import clean_attention, forward
from prunehead.scorers.gradient import per_sample_gate_grads
from prunehead.scorers.random import RandomScorer
from prunehead.surgery import prune_
from tests.conftest import ce, kill_heads_, tiny




FAST = {"hib": {"steps": 3}, "attattr": {"points": 4}}


def batches_for(n_batches: int = 2, size: int = 2, samples: int = 4000) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        mask = torch.ones(size, samples, dtype=torch.long)
        mask[-1, samples * 3 // 4:] = 0
        out.append({"input_values": torch.randn(size, samples, generator=g) * mask, "attention_mask": mask,
                    "labels": torch.randint(0, 3, (size,), generator=g)})
    return out


# ----------------------------------------------------------------------------------------------- contract

def model_state(model):
    hooks = [(name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
              len(getattr(m, "_backward_pre_hooks", {})), m.training) for name, m in model.named_modules()]
    params = {name: (p.detach().clone(), p.requires_grad) for name, p in model.named_parameters()}
    impls = [c._attn_implementation_internal for c, _ in control._implementations(model)]
    return hooks, params, impls


def assert_state_unchanged(model, before):
    hooks, params, impls = model_state(model)
    assert hooks == before[0]
    assert impls == before[2]
    assert not control.is_controlled(model)
    assert not any(site.module in control.SITES for site in head_adapter(model).sites)
    for name, (value, flag) in before[1].items():
        assert params[name][1] == flag, name
        assert torch.equal(params[name][0], value), name
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks


@pytest.fixture
def model():
    net = tiny("wav2vec2-tiny")
    with torch.no_grad():
        net(input_values=torch.zeros(1, 4000))  # transformers installs its output-capturing hooks once
    net.train()  # scoring must put it in eval mode and restore train mode
    net.wav2vec2.feature_extractor.requires_grad_(False)  # a mixed requires_grad state to restore
    return net


@pytest.mark.parametrize("name", available())
def test_contract(model, name):
    before = model_state(model)
    scorer = get_scorer(name, **FAST.get(name, {}))
    scores = scorer.score(model, batches_for(), ce)
    L, H = head_adapter(model).num_layers, head_adapter(model).num_heads
    assert scores.shape == (L, H) and scores.is_floating_point() and torch.isfinite(scores).all()
    assert_state_unchanged(model, before)
    again = get_scorer(name, **FAST.get(name, {})).score(model, batches_for(), ce)
    assert torch.equal(scores, again)


@pytest.mark.parametrize("name", [n for n in available() if n not in ("random", "attention")])
def test_state_restored_when_objective_raises_half_way(model, name):
    before = model_state(model)
    calls = {"n": 0}

    def failing(outputs, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("objective failed")
        return ce(outputs, batch)

    with pytest.raises(RuntimeError, match="objective failed"):
        get_scorer(name, **FAST.get(name, {})).score(model, batches_for(3), failing)
    assert calls["n"] == 2
    assert_state_unchanged(model, before)


@pytest.mark.parametrize("name", [n for n in available() if n != "random"])
def test_state_restored_when_a_forward_pass_fails_half_way(model, name):
    """`attention` never calls the objective; a batch too short for the conv front end fails instead."""
    before = model_state(model)
    bad = {"input_values": torch.randn(2, 100), "labels": torch.tensor([0, 1])}
    with pytest.raises(RuntimeError):
        get_scorer(name, **FAST.get(name, {})).score(model, [*batches_for(1), bad], ce)
    assert_state_unchanged(model, before)


def test_objective_must_return_one_loss_per_sample(model):
    with pytest.raises(InputError, match="one loss per sample"):
        get_scorer("gradient").score(model, batches_for(), lambda out, batch: ce(out, batch).mean())


def test_no_samples_is_an_input_error(model):
    with pytest.raises(InputError, match="no samples"):
        get_scorer("attention").score(model, [], ce)


@pytest.mark.parametrize("pruned", [{0: (1,)}, {0: (0, 2), 1: (0, 1, 2, 3)}])
@pytest.mark.parametrize("name", available())
def test_pruned_models_score_their_remaining_heads(name, pruned):
    """Removed heads (a whole layer included) get a finite score just below every remaining head."""
    net = tiny("wav2vec2-tiny")
    prune_(net, PruningPlan(2, 4, pruned))
    scores = get_scorer(name, **FAST.get(name, {})).score(net, batches_for(1), ce)
    assert scores.shape == (2, 4) and torch.isfinite(scores).all()
    removed = torch.zeros(2, 4, dtype=torch.bool)
    for layer, heads in pruned.items():
        removed[layer, list(heads)] = True
    assert scores[removed].max() < scores[~removed].min()


def test_pruned_heads_score_like_dead_heads_for_gradient():
    """The remaining heads' |dL/dgate| of a pruned model equal those of the model with the heads zeroed."""
    dead, pruned = tiny("wav2vec2-tiny"), tiny("wav2vec2-tiny")
    d = dead.config.hidden_size // 4
    with torch.no_grad():
        attention = dead.wav2vec2.encoder.layers[0].attention
        attention.v_proj.weight[d:2 * d] = 0
        attention.v_proj.bias[d:2 * d] = 0
        attention.out_proj.weight[:, d:2 * d] = 0
    prune_(pruned, PruningPlan(2, 4, {0: (1,)}))
    options = {"normalize_layers": False, "minmax": False}
    a = get_scorer("gradient", **options).score(dead, batches_for(1), ce)
    b = get_scorer("gradient", **options).score(pruned, batches_for(1), ce)
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 1] = False
    torch.testing.assert_close(b[keep], a[keep], atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("name", ["attention", "gradient"])
def test_group_norm_models_score_padded_samples_as_if_alone(name):
    """wav2vec2-base's group norm sees zero padding: such batches are split into equal-length sub-batches."""
    net = tiny("wav2vec2-tiny", feat_extract_norm="group")
    batch = batches_for(1, size=3)[0]  # the last sample is padded
    _, batched = get_scorer(name).per_sample(net, [batch], ce)
    length = int(batch["attention_mask"][-1].sum())
    alone = {"input_values": batch["input_values"][-1:, :length], "labels": batch["labels"][-1:]}
    _, single = get_scorer(name).per_sample(net, [alone], ce)
    torch.testing.assert_close(batched[-1], single[0], atol=1e-6, rtol=1e-5)
    padded_as_is = {**batch, "input_values": batch["input_values"][-1:], "attention_mask": batch["attention_mask"][-1:],
                    "labels": batch["labels"][-1:]}
    with torch.no_grad():
        a = net(input_values=padded_as_is["input_values"], attention_mask=padded_as_is["attention_mask"]).logits
        b = net(input_values=alone["input_values"]).logits
    assert not torch.allclose(a, b, atol=1e-4)  # padding really would have changed the model


# ----------------------------------------------------------------------------------------------- registry

def test_unknown_scorer_lists_the_valid_names():
    with pytest.raises(InputError, match="hib, attattr, gradient, occlusion, attention, random"):
        get_scorer("nope")


def test_unknown_option_lists_the_scorer_options():
    with pytest.raises(InputError, match="takes no option 'steps'; its options: variant"):
        get_scorer("attention", steps=3)


def test_entry_point_plugins_are_registered(monkeypatch, model):
    class Constant(RandomScorer):
        name = "constant"

        def _score(self, model, batches, objective):
            return torch.ones(head_adapter(model).num_layers, head_adapter(model).num_heads, dtype=torch.float64)

    import sys
    import types

    module = types.ModuleType("fake_plugin")
    module.Constant = Constant
    monkeypatch.setitem(sys.modules, "fake_plugin", module)
    points = [EntryPoint("constant", "fake_plugin:Constant", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == registry.ENTRY_POINT_GROUP else [])
    assert available()[-1] == "constant"
    assert torch.equal(get_scorer("constant").score(model, [], ce), torch.ones(2, 4, dtype=torch.float64))


def test_random_is_seeded(model):
    a = RandomScorer(seed=3).score(model, [], ce)
    assert torch.equal(a, RandomScorer(seed=3).score(model, [], ce))
    assert not torch.equal(a, RandomScorer(seed=4).score(model, [], ce))


# ----------------------------------------------------------------------------------------------- baselines

def test_gradient_batched_per_sample_gates_equal_the_batch_size_one_loop(model):
    """method.md §5.7."""
    model.eval()
    batch = batches_for(1, size=3)[0]
    batched = per_sample_gate_grads(model, batch, ce)
    for b in range(3):
        one = {k: v[b:b + 1] for k, v in batch.items()}
        torch.testing.assert_close(batched[b], per_sample_gate_grads(model, one, ce)[0], atol=1e-6, rtol=1e-4)


def test_integrated_gradients_are_complete(model):
    """method.md §5.6: sum of Attr over the layer -> F(A) - F(0) as m grows (left Riemann sum)."""
    model.eval()
    batch = batches_for(1, size=1)[0]
    probs, _ = clean_attention(model, batch)
    layer = 1
    with control.controlled(model) as ctl:
        values = []
        for alpha in (1.0, 0.0):
            with torch.no_grad(), ctl.scaling(layer, torch.tensor([alpha])):
                values.append(torch.exp(-ce(forward(model, batch), batch)).item())
    delta = values[0] - values[1]
    errors = [abs(layer_attribution(model, batch, ce, layer, probs[layer], m).sum().item() - delta)
              for m in (5, 50)]
    assert errors[1] < errors[0] and errors[1] < 0.05 * abs(delta) + 1e-7


def test_attention_statistics_by_hand():
    probs = torch.tensor([[[[0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [1 / 3, 1 / 3, 1 / 3]]]])  # (1, 1, 3, 3)
    valid = torch.tensor([[True, True, False]])
    assert head_statistic(probs, valid, "max").item() == pytest.approx(0.9)
    assert head_statistic(probs, valid, "confidence").item() == pytest.approx((0.5 + 0.9) / 2)
    h = lambda *p: -sum(x * math.log(x) for x in p)  # noqa: E731
    assert head_statistic(probs, valid, "entropy").item() == pytest.approx(-(h(0.5, 0.5) + h(0.9, 0.1)) / 2)


def test_occlusion_by_loss_is_the_mean_loss_rise(model):
    model.eval()
    batches = batches_for(1, size=2)
    scores = get_scorer("occlusion", by="loss").score(model, batches, ce)
    batch = batches[0]
    with torch.no_grad(), control.controlled(model) as ctl:
        base = ce(forward(model, batch), batch).mean()
        gate = torch.ones(2, 4)
        gate[1, 2] = 0
        with ctl.gating(gate):
            gated = ce(forward(model, batch), batch).mean()
    assert scores[1, 2].item() == pytest.approx((gated - base).item(), abs=1e-6)


# ----------------------------------------------------------------------------------------------- known answers

DEAD = {0: [1], 1: [0, 3]}
RATE, CLIP, BURST = 16_000, 4800, 1600
FREQS = (300.0, 1200.0, 4000.0)


def tone_bursts(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with one 0.1 s tone burst at a random place; the class is the tone's frequency."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(FREQS), (n,), generator=g)
    x = 0.1 * torch.randn(n, CLIP, generator=g)
    starts = torch.randint(0, CLIP - BURST, (n,), generator=g)
    t = torch.arange(BURST) / RATE
    for i in range(n):
        s = int(starts[i])
        x[i, s:s + BURST] += torch.sin(2 * math.pi * FREQS[int(labels[i])] * t)
    return x, labels


@pytest.fixture(scope="module")
def trained():
    """A 2 x 4 wav2vec2 classifier trained (~5 s) on tone bursts, heads DEAD held at zero; ~98 % accuracy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = tf.Wav2Vec2Config(
        conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=4, feat_extract_norm="layer", mask_time_prob=0.0, layerdrop=0.0,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        final_dropout=0.0, num_labels=3, classifier_proj_size=32)
    model = tf.Wav2Vec2ForSequenceClassification(config)
    kill_heads_(model, DEAD)
    x, y = tone_bursts(384, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(80):
        idx = torch.randint(0, len(x), (16,))
        loss = F.cross_entropy(model(input_values=x[idx]).logits, y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        kill_heads_(model, DEAD)  # dead heads stay exactly dead
    model.eval()
    xt, yt = tone_bursts(128, 1)
    with torch.no_grad():
        accuracy = (model(input_values=xt).logits.argmax(-1) == yt).float().mean().item()
    batches = [{"input_values": xt[i:i + 8], "labels": yt[i:i + 8]} for i in range(0, 16, 8)]
    torch.set_num_threads(threads)
    return model, batches, accuracy


def live(layer: int) -> list[int]:
    return [h for h in range(4) if h not in DEAD[layer]]


def test_trained_model_is_clearly_above_chance(trained):
    assert trained[2] >= 0.9  # 3 classes: chance is 1/3


@pytest.mark.parametrize("name", ["attattr", "gradient"])
def test_dead_heads_rank_strictly_last(trained, name):
    model, batches, _ = trained
    scores = get_scorer(name).score(model, batches, ce)
    for layer, dead in DEAD.items():
        assert all(scores[layer, h] == 0 for h in dead)  # exactly zero signal
        assert min(scores[layer, h] for h in live(layer)) > max(scores[layer, h] for h in dead)


@pytest.mark.parametrize("by", ["metric", "loss"])
def test_occlusion_gives_dead_heads_exactly_zero(trained, by):
    model, batches, _ = trained
    scores = get_scorer("occlusion", by=by).score(model, batches, ce)
    for layer, dead in DEAD.items():
        assert all(scores[layer, h].item() == 0.0 for h in dead)
        assert all(scores[layer, h].item() != 0.0 for h in live(layer))


def test_hib_dead_heads_are_near_zero_and_never_on_top(trained):
    model, batches, _ = trained
    scores = get_scorer("hib", steps=60).score(model, batches, ce)
    for layer, dead in DEAD.items():
        typical_live = scores[layer, live(layer)].median()
        assert all(abs(scores[layer, h]) < 0.05 and scores[layer, h] < typical_live for h in dead), scores
        assert int(scores[layer].argmax()) not in dead, scores
