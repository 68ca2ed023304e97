"""Device safety without a GPU, float32 instead of float64 on the device, mixed precision, and the CUDA suite.

A tensor created on the CPU that meets a tensor on another device fails the same way on `meta` as on CUDA
("Tensor on device cpu is not on the expected device meta"), so the library paths run here with the model
on `meta`. Meta tensors have no values: `MetaHost` answers the few explicit host reads (`.cpu()`,
`.tolist()`, `.item()`, boolean indexing) with ones (every frame valid), and nothing else, so a CPU tensor
meeting a meta tensor still raises. Tests marked `cuda` run the key paths end to end on a GPU
(`make test-gpu`); they skip without one.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from prunehead.control import controlled
from prunehead.errors import InputError
from prunehead.heads import head_adapter
from prunehead.pruning.plan import PruningPlan, select
from prunehead.precision import autocast, check_dtype
from prunehead.pruning.report import cost_summary
from prunehead.scorers import get_scorer
from prunehead.scorers.attention import VARIANTS, head_statistic
from prunehead.scorers.base import clean_attention
from prunehead.scorers.hib import HIBScorer, Row, _Welford, row_generator
from prunehead.scorers.ib import pearson_valid, valid_block
from prunehead.scorers.registry import available
from prunehead.surgery import prune_
from prunehead.experiments.curves import evaluate_plan
from prunehead.tasks import get_task
from tests.conftest import FAMILIES, ce, inputs_for, tiny

META = torch.device("meta")
FAST = {"hib": {"steps": 2}, "attattr": {"points": 2}}  # scorer parameters that keep the runs short
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)")


# ---------------------------------------------------------------------------------------------------
# The meta stand-in for a GPU.

_HOST_READS = {torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
               torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}


def _host(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(x.shape, dtype=x.dtype)  # a meta tensor has no values: ones = every frame valid


class MetaHost(TorchFunctionMode):
    """Explicit host reads of meta tensors return ones; every other op runs as it is (and fails on mixing)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else None
        meta = isinstance(first, torch.Tensor) and first.is_meta
        if meta and func in _HOST_READS:
            return func(_host(first), *args[1:], **kwargs)
        if meta and func is torch.Tensor.to:
            target = kwargs.get("device", args[1] if len(args) > 1 else None)
            if isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu":
                return func(_host(first), *args[1:], **kwargs)
        if meta and func in (torch.Tensor.nonzero, torch.nonzero):
            return torch.nonzero(_host(first), **kwargs).to(META)
        if func is torch.Tensor.__getitem__ and isinstance(args[1], torch.Tensor) and args[1].is_meta \
                and args[1].dtype == torch.bool:  # x[mask] with every element selected
            return first.reshape(-1, *first.shape[args[1].dim():])
        return func(*args, **kwargs)


def meta_model(arch: str) -> torch.nn.Module:
    return tiny(arch).to(META)


def batch_for(arch: str, mask: bool = True) -> dict[str, torch.Tensor]:
    """CPU inputs with labels (and a padding mask where the family takes one); scorers move them."""
    batch = {**inputs_for(arch), "labels": torch.tensor([0, 1])}
    if mask and not arch.startswith("whisper"):
        key = "input_ids" if arch.startswith("bert") else "input_values"
        batch["attention_mask"] = torch.ones(batch[key].shape, dtype=torch.long)
        batch["attention_mask"][1, batch[key].shape[1] * 3 // 4:] = 0
    return batch


def on(device: torch.device, batch: dict) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def test_the_meta_stand_in_still_catches_a_cpu_tensor():
    """The check can fail: a CPU gate multiplying meta head outputs raises, as on CUDA."""
    with MetaHost(), pytest.raises(RuntimeError, match="device"):
        torch.ones(2, 4, device=META) * torch.ones(2, 4)


# ---------------------------------------------------------------------------------------------------
# Control paths, surgery, sweep, cost, export check on meta.


@pytest.mark.parametrize("arch", FAMILIES)
def test_gating_recording_replacement_on_meta(arch):
    model = meta_model(arch)
    adapter = head_adapter(model)
    batch = on(META, batch_for(arch))
    gate = torch.ones(adapter.num_layers, adapter.num_heads)  # on the CPU, like PruningPlan.keep_mask()
    gate[0, 1] = 0

    def replace(probs, value, mask):
        return torch.matmul(probs, value), probs  # (B, H, L, d)

    with MetaHost(), torch.no_grad(), controlled(model) as ctl, ctl.gating(gate), \
            ctl.recording({0: lambda probs, mask: probs.sum((2, 3))}) as store, ctl.replacing({1: replace}):
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert logits.device.type == "meta" and logits.shape == (2, 3)
    assert store[0].shape == (2, adapter.num_heads) and store[0].is_meta


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("name", available())
def test_every_scorer_runs_with_the_model_on_meta(arch, name):
    model = meta_model(arch)
    with MetaHost():
        scores = get_scorer(name, **FAST.get(name, {})).score(model, [batch_for(arch)], ce)
    adapter = head_adapter(model)
    assert scores.shape == (adapter.num_layers, adapter.num_heads) and scores.device.type == "cpu"
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("arch", FAMILIES)
def test_prune_and_run_on_meta_including_a_layer_without_heads(arch):
    model = tiny(arch)
    site = head_adapter(model).sites[0]
    site.out.bias = None  # layer 0 loses every head: its bias-only block gets zeros on the model's device
    model = model.to(META)
    plan = PruningPlan(2, 4, {0: (0, 1, 2, 3), 1: (2,)})
    with MetaHost():
        prune_(model, plan)
        assert all(p.is_meta for p in model.parameters())
        with torch.no_grad():
            logits = model(**{k: v for k, v in on(META, batch_for(arch)).items() if k != "labels"}).logits
        scores = get_scorer("gradient").score(model, [batch_for(arch)], ce)
    assert logits.is_meta and scores.shape == (2, 4)


@pytest.mark.parametrize("arch", ["wav2vec2-tiny", "bert-tiny"])
def test_sweep_point_evaluation_on_meta(arch):
    model = meta_model(arch)
    task = get_task("ks")
    plan = PruningPlan(2, 4, {1: (0, 3)})
    with MetaHost():
        metrics = evaluate_plan(model, plan, lambda m: task.evaluate(m, [batch_for(arch)], progress=False))
    assert metrics["samples"] == 2


@pytest.mark.parametrize("arch", ["wav2vec2-tiny", "whisper-encoder-tiny"])  # bert-tiny: 64 positions < 128 tokens
def test_cost_summary_on_meta(arch):
    model = meta_model(arch)
    with MetaHost():
        cost = cost_summary(model)
    assert cost["heads"] == 8 and cost["macs"] > 0


@pytest.mark.slow
def test_export_check_feeds_the_models_device(tmp_path):
    from prunehead.export.onnx import compare, export_onnx

    model = tiny("wav2vec2-tiny")  # (meta embeddings accept CPU token ids, so a text model would not tell)
    sig = export_onnx(model, tmp_path / "m.onnx")
    with MetaHost():
        result = compare(model.to(META), tmp_path / "m.onnx", sig)
    assert len(result.shapes) == 3


# ---------------------------------------------------------------------------------------------------
# HIB's draws: CPU generators, moved to the device.


def _draws(device: torch.device, last: int | None):
    rows = [Row(0, (0,)), Row(1, (0,)), Row(0, (1,), head=2)]
    pos = {0: torch.tensor([0, 1], device=device), 1: torch.tensor([2], device=device)}
    gens = [row_generator(7, sample, r.key) for sample, r in zip((10, 11, 10), rows)]
    return HIBScorer._draws(rows, pos, [5, 3, 5], gens, {0: 4, 1: 4}, 6, last, device)


@pytest.mark.parametrize("last", [None, 8])
def test_hib_draws_come_from_cpu_generators_whatever_the_device(last):
    cpu = _draws(torch.device("cpu"), last)
    meta = _draws(META, last)
    # Independent truth: each row's block is exactly its own generator's first draw.
    for i, (sample, key, layer, slot, heads, n) in enumerate([(10, "0", 0, 0, 4, 5), (11, "0", 0, 1, 4, 3),
                                                               (10, "1.2", 1, 0, 1, 5)]):
        expected = torch.randn(heads, n, last or n, generator=row_generator(7, sample, key))
        hs = slice(None) if heads == 4 else slice(2, 3)
        torch.testing.assert_close(cpu[layer][slot, hs, :n, :last or n], expected, rtol=0, atol=0)
    for layer in cpu:
        assert meta[layer].is_meta and meta[layer].shape == cpu[layer].shape
    assert row_generator(7, 10, "0").device.type == "cpu"


def test_hib_scores_on_meta_have_the_cpu_shapes():
    model = tiny("wav2vec2-tiny")
    batch = batch_for("wav2vec2-tiny")
    ids_cpu, c_cpu = HIBScorer(steps=1).per_sample(model, [batch], ce)
    with MetaHost():
        ids_meta, c_meta = HIBScorer(steps=1).per_sample(model.to(META), [batch], ce)
    assert c_meta.shape == c_cpu.shape and c_meta.dtype == c_cpu.dtype and torch.equal(ids_meta, ids_cpu)


# ---------------------------------------------------------------------------------------------------
# Float32 on the device, checked against float64 references.


def _pearson64(x, y, valid):
    """The former float64 implementation, the reference."""
    m = valid_block(valid).double()
    n = m.sum(dim=(2, 3))[..., None, None]
    x, y = x.double() * m, y.double() * m
    xc = (x - x.sum(dim=(2, 3), keepdim=True) / n) * m
    yc = (y - y.sum(dim=(2, 3), keepdim=True) / n) * m
    norm = xc.flatten(2).norm(dim=-1) * yc.flatten(2).norm(dim=-1)
    return torch.where(norm > 0, (xc * yc).sum(dim=(2, 3)) / norm.clamp_min(1e-300), torch.zeros_like(norm))


def _maps(sharpness: float, offset: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    R, H, L = 3, 4, 150
    x = (sharpness * torch.randn(R, H, L, L, generator=g)).softmax(-1) + offset
    y = (0.7 * x + 0.3 * (sharpness * torch.randn(R, H, L, L, generator=g)).softmax(-1))
    valid = torch.ones(R, L, dtype=torch.bool)
    valid[1, 100:] = False
    valid[2, 37:] = False
    return x, y, valid


@pytest.mark.parametrize("sharpness,offset", [(1.0, 0.0), (8.0, 0.0), (1e-4, 0.0), (1.0, 3.0)])
def test_float32_pearson_matches_the_float64_reference(sharpness, offset):
    x, y, valid = _maps(sharpness, offset)  # nearly uniform maps (1e-4) and a large common offset included
    got = pearson_valid(x, y, valid)
    assert got.dtype == torch.float32
    # Measured 1e-7; one-pass float32 centring misses this bound by up to 7x on the sharp and flat maps.
    torch.testing.assert_close(got.double(), _pearson64(x, y, valid), rtol=0, atol=5e-7)


def test_welford_float32_moments_match_float64():
    g = torch.Generator().manual_seed(0)
    parts = [1000.0 + 0.5 * torch.randn(n, 4, 8, generator=g) for n in (7, 300, 1, 2048)]  # offset >> spread
    welford = _Welford()
    for part in parts:
        welford.update(0, part)
    stats = welford.result(min_std=0.0, num_layers=1)
    every = torch.cat(parts).double()
    torch.testing.assert_close(stats.mean[0].double(), every.mean(0), rtol=1e-7, atol=0)
    torch.testing.assert_close(stats.std[0].double(), every.std(0, unbiased=True), rtol=2e-5, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_statistics_in_float32_match_float64(variant):
    x, _, valid = _maps(4.0)
    got = head_statistic(x.float(), valid, variant)
    torch.testing.assert_close(got.double(), head_statistic(x.double(), valid, variant), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------------
# Mixed precision.


def test_precision_names_and_devices():
    assert check_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(InputError, match="choose one of"):
        check_dtype("fp8")
    with pytest.raises(InputError, match="not available"):
        autocast("bfloat16", META)
    with autocast("float32", META):  # float32 is no autocast: fine anywhere
        pass


def test_bfloat16_evaluation_is_close_to_float32_and_float32_is_exact():
    model = tiny("wav2vec2-tiny")
    batches = [batch_for("wav2vec2-tiny", mask=False)]
    task = get_task("ks")
    plain = task.evaluate(model, batches, progress=False)
    assert task.evaluate(model, batches, progress=False, dtype="float32") == plain
    low = task.evaluate(model, batches, progress=False, dtype="bfloat16")
    assert low["loss"] != plain["loss"]  # autocast did run in bfloat16
    assert abs(low["loss"] - plain["loss"]) < 1e-3 * plain["loss"]  # measured: 3e-5 relative


@pytest.mark.parametrize("name,params,atol", [("gradient", {}, 0.02), ("attention", {}, 1e-3),
                                              ("occlusion", {"by": "loss"}, 5e-4)])  # measured: 4e-3, 2e-4, 8e-5
def test_bfloat16_scores_are_close_to_float32(name, params, atol):
    model = tiny("wav2vec2-tiny")
    batches = [batch_for("wav2vec2-tiny", mask=False)]
    full = get_scorer(name, **params).score(model, batches, ce)
    assert torch.equal(get_scorer(name, dtype="float32", **params).score(model, batches, ce), full)
    low = get_scorer(name, dtype="bfloat16", **params).score(model, batches, ce)
    assert not torch.equal(low, full)
    torch.testing.assert_close(low, full, rtol=0, atol=atol)


def test_attention_probabilities_are_bfloat16_under_autocast():
    """The autocast context reaches the attention function (what the close-scores tests rely on)."""
    model = tiny("wav2vec2-tiny")
    with autocast("bfloat16", "cpu"):
        probs, _ = clean_attention(model, inputs_for("wav2vec2-tiny"))
    assert probs[0].dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------------
# On a GPU (make test-gpu). Each compares with the same path on the CPU.

GPU = torch.device("cuda")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("arch", FAMILIES)
def test_cuda_gating_equals_removal(arch):
    model = tiny(arch).to(GPU)
    plan = PruningPlan(2, 4, {0: (1, 3), 1: (0, 1, 2, 3)})
    inputs = on(GPU, inputs_for(arch))
    with torch.no_grad(), controlled(model) as ctl, ctl.gating(plan.keep_mask()):
        gated = model(**inputs).logits
    pruned = prune_(copy.deepcopy(model), plan)
    with torch.no_grad():
        removed = pruned(**inputs).logits
    torch.testing.assert_close(gated, removed, atol=1e-4, rtol=0)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name", available())
def test_cuda_scores_equal_cpu_scores(name):
    model = tiny("wav2vec2-tiny")
    batches = [batch_for("wav2vec2-tiny")]
    on_cpu = get_scorer(name, **FAST.get(name, {})).score(model, batches, ce)
    on_gpu = get_scorer(name, **FAST.get(name, {})).score(copy.deepcopy(model).to(GPU), batches, ce)
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-3, rtol=1e-3)  # HIB: same seed, same draws


@pytest.mark.cuda
@cuda
def test_cuda_prune_save_and_reload(tmp_path):
    from prunehead.surgery import load, save_pretrained

    model = tiny("wav2vec2-tiny")
    inputs = inputs_for("wav2vec2-tiny")
    pruned = prune_(model.to(GPU), PruningPlan(2, 4, {0: (0, 1, 2, 3), 1: (2,)}))
    save_pretrained(pruned, tmp_path / "m")
    with torch.no_grad():
        expected = pruned(**on(GPU, inputs)).logits.cpu()
        reloaded = load(tmp_path / "m").to(GPU)(**on(GPU, inputs)).logits.cpu()
    torch.testing.assert_close(reloaded, expected, atol=1e-5, rtol=0)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_sweep_point_equals_cpu(dtype):
    model = tiny("wav2vec2-tiny")
    task = get_task("ks")
    plan = select(get_scorer("gradient").score(model, [batch_for("wav2vec2-tiny")], ce), ratio=0.5, scope="global")
    point = {}
    for device in ("cpu", "cuda"):
        m = copy.deepcopy(model).to(device)
        point[device] = evaluate_plan(m, plan, lambda x: task.evaluate(x, [batch_for("wav2vec2-tiny")],
                                                                       progress=False, dtype=dtype))
    assert point["cuda"]["accuracy"] == point["cpu"]["accuracy"]
    assert abs(point["cuda"]["loss"] - point["cpu"]["loss"]) < (1e-4 if dtype == "float32" else 2e-2)


@pytest.mark.cuda
@cuda
def test_cuda_hib_draws_equal_cpu_draws():
    for last in (None, 8):
        torch.testing.assert_close(_draws(GPU, last)[0].cpu(), _draws(torch.device("cpu"), last)[0], rtol=0, atol=0)


@pytest.mark.cuda
@cuda
def test_cuda_loss_is_unchanged_by_moving_the_model():
    model = tiny("wav2vec2-tiny")
    batch = batch_for("wav2vec2-tiny")
    with torch.no_grad():
        cpu = F.cross_entropy(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
        gpu = F.cross_entropy(model.to(GPU)(**on(GPU, {k: v for k, v in batch.items() if k != "labels"})).logits,
                              batch["labels"].to(GPU))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Full base size (12 x 12, hidden 768): a pruned model exports and matches ONNX Runtime.


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["wav2vec2-base"])
def test_pruned_base_size_model_exports_and_matches_onnxruntime(arch, tmp_path):
    """About 45 s on 2 shared CPU cores (the symbolic export of a 95 M-parameter model dominates)."""
    from prunehead.architectures import build_model
    from prunehead.cost import count_params
    from prunehead.export.onnx import check_onnx, export_onnx, onnx_param_count

    torch.manual_seed(0)
    model = build_model(arch, num_labels=12)
    adapter = head_adapter(model)
    assert (adapter.num_layers, adapter.num_heads, model.config.hidden_size) == (12, 12, 768)
    scores = torch.rand(12, 12, generator=torch.Generator().manual_seed(0))
    pruned = prune_(model, select(scores, ratio=0.4, scope="global"))
    assert sum(adapter.heads_per_layer(pruned)) == 144 - 57  # floor(0.4 * 144)
    sig = export_onnx(pruned, tmp_path / "pruned.onnx")
    result = check_onnx(pruned, tmp_path / "pruned.onnx", sig, atol=1e-4, shapes=((1, 16_000), (2, 24_000)))
    assert result.max_abs_diff <= 1e-4 and result.agreement == 1.0
    # Each removed head takes d = 64 rows (weights and biases) of q, k, v and 64 columns of out_proj.
    assert count_params(pruned) == 94_571_660 - 57 * (3 * (64 * 768 + 64) + 768 * 64)
    assert onnx_param_count(tmp_path / "pruned.onnx") <= count_params(pruned)
