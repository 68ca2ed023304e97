"""Conv channels of the front end as a unit kind: gating == removal on every family and norm mode, planted
dead channels, exact MAC accounting, reloading (prunehead.load, plain transformers with remote code), ONNX,
the CLI, and the meta device."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers as tf
from typer.testing import CliRunner

import prunehead
from prunehead.cli import app
from prunehead.cost import count_macs, example_inputs
from prunehead.pruning.plan import PruningPlan, select_conv
from prunehead.pruning.score_files import load_scores
from prunehead.scorers.conv import score_conv
from prunehead.units.conv import channel_gating, channel_macs, conv_layers, kept_channels, prune_conv_
from prunehead.units.kinds import KINDS, evaluate_gated, remove_all_

from conftest import check_saved_folder, cli_ok, tiny

runner = CliRunner()
CASES = [("wav2vec2-tiny", {}), ("wav2vec2-tiny", {"feat_extract_norm": "group", "conv_bias": False}),
         ("wav2vec2-tiny", {"feat_extract_norm": "group", "conv_bias": True}), ("hubert-tiny", {}),
         ("hubert-tiny", {"feat_proj_layer_norm": False}), ("data2vec-audio-tiny", {}), ("wavlm-tiny", {}),
         ("wavlm-tiny", {"feat_extract_norm": "group"}), ("whisper-encoder-tiny", {})]


def _inputs(model: torch.nn.Module, seed: int = 3) -> dict[str, torch.Tensor]:
    shapes = example_inputs(model, 1.0, batch=2)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in shapes.items()}


def _random_plan(model: torch.nn.Module, share: int = 3, seed: int = 1) -> PruningPlan:
    C, W = KINDS["conv"].grid(model)
    gen = torch.Generator().manual_seed(seed)
    removed = {l: tuple(sorted(torch.randperm(W, generator=gen)[: W // share].tolist())) for l in range(C)}
    return PruningPlan(*KINDS["heads"].grid(model), pruned_conv=removed, conv_width=W)


@pytest.mark.parametrize("arch, overrides", CASES, ids=[f"{a}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                                                         for a, o in CASES])
def test_gating_equals_removal_and_the_folder_reloads_exactly(arch, overrides, tmp_path):
    model = tiny(arch, **overrides)
    plan = _random_plan(model)
    inputs = _inputs(model)
    with torch.no_grad():
        full = model(**inputs).logits
        gated = evaluate_gated(model, plan, lambda m: m(**inputs).logits)
        pruned = remove_all_(copy.deepcopy(model), plan)
        removed = pruned(**inputs).logits
    assert (full - removed).abs().max() > 1e-6  # the channels mattered
    torch.testing.assert_close(gated, removed, atol=1e-5, rtol=1e-5)
    assert [c.out_channels for c in conv_layers(pruned)] == [plan.conv_width - len(ids)
                                                             for _, ids in sorted(plan.pruned_conv.items())]
    prunehead.save_pretrained(pruned, tmp_path)
    assert prunehead.PruningPlan.load(tmp_path / "plan.json").pruned_conv == plan.pruned_conv
    again = prunehead.load(tmp_path)
    assert kept_channels(again) == kept_channels(pruned)
    plain = tf.AutoModelForAudioClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).logits, removed, atol=0, rtol=0)
        torch.testing.assert_close(plain(**inputs).logits, removed, atol=0, rtol=0)


def test_a_wav2vec2_model_pruned_only_in_its_front_end_is_a_plain_checkpoint(tmp_path):
    model = tiny("wav2vec2-tiny")
    pruned = remove_all_(model, _random_plan(model))
    prunehead.save_pretrained(pruned, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "wav2vec2" and "auto_map" not in config  # no remote code needed
    assert config["conv_dim"] == [c.out_channels for c in conv_layers(pruned)]
    plain = tf.Wav2Vec2ForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, pruned(**inputs).logits, atol=0, rtol=0)


def _plant_dead_channels(model: torch.nn.Module, dead: int = 4) -> dict[int, tuple[int, ...]]:
    """Zero `dead` channels of conv layers 0-5: the filter, its GroupNorm shift (layer 0) and the next conv's
    input columns, so that nothing flows through them. (Layer 6 feeds the feature projection's LayerNorm,
    whose statistics a zero channel still enters: it is not dead there.)"""
    convs = conv_layers(model)
    planted = {}
    with torch.no_grad():
        for l, conv in enumerate(convs[:-1]):
            ids = tuple(range(l, 32, 32 // dead))[:dead]
            conv.weight[list(ids)] = 0
            convs[l + 1].weight[:, list(ids)] = 0
            planted[l] = ids
        model.wav2vec2.feature_extractor.conv_layers[0].layer_norm.bias[list(planted[0])] = 0
    return planted


def test_magnitude_removes_exactly_the_planted_dead_channels_and_the_outputs_stay():
    model = tiny("wav2vec2-tiny", feat_extract_norm="group", conv_bias=False)
    planted = _plant_dead_channels(model)
    scores = score_conv(model, scorer="magnitude")
    plan = select_conv(scores, PruningPlan(2, 4), ratio=6 * 4 / (7 * 32), scope="global")
    assert plan.pruned_conv == planted
    inputs = _inputs(model)
    with torch.no_grad():
        before = model(**inputs).logits
        after = remove_all_(copy.deepcopy(model), plan)(**inputs).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_taylor_gives_dead_channels_exactly_zero_and_live_ones_more():
    model = tiny("wav2vec2-tiny", feat_extract_norm="group", conv_bias=False)
    planted = _plant_dead_channels(model)
    inputs = _inputs(model)
    labels = torch.tensor([0, 1])

    def objective(outputs, batch):
        return torch.nn.functional.cross_entropy(outputs.logits, batch["labels"], reduction="none")

    raw = score_conv(model, [{**inputs, "labels": labels}], objective, scorer="taylor", normalize_layers=False)
    for layer, ids in planted.items():
        live = [c for c in range(32) if c not in ids]
        assert raw[layer, list(ids)].abs().max() == 0
        assert (raw[layer, live] > 0).sum() > len(live) // 2


def test_the_removal_order_prices_channels_by_the_exact_macs_of_the_front_end():
    model = tiny("wav2vec2-tiny")
    inputs = example_inputs(model, 1.0)
    cost = channel_macs(model, inputs)
    dense = count_macs(model, inputs)["total"]
    for plan in (_random_plan(model, share=3), _random_plan(model, share=2, seed=5)):
        counted = count_macs(remove_all_(copy.deepcopy(model), plan), inputs)["total"]
        assert dense - counted == cost.saved({l: len(ids) for l, ids in plan.pruned_conv.items()})
    order = prunehead.removal_order(model, {"conv": torch.rand(7, 32, generator=torch.Generator().manual_seed(0))})
    for count in (10, 100, len(order.units)):
        counted = count_macs(remove_all_(copy.deepcopy(model), order.plan_at(count)), inputs)["total"]
        assert order.macs_at(count) == counted


def test_channel_gate_shapes_and_unequal_widths_fail_in_one_line():
    model = tiny("wav2vec2-tiny")
    with pytest.raises(prunehead.InputError, match="channel gate must be"):
        with channel_gating(model, torch.ones(3, 3)):
            pass
    with pytest.raises(prunehead.UnsupportedModelError, match="unequal widths"):
        KINDS["conv"].grid(tiny("wav2vec2-tiny", conv_dim=(32, 16, 32, 32, 32, 32, 32)))
    with pytest.raises(prunehead.UnsupportedModelError, match="no convolutional front end"):
        KINDS["conv"].grid(tiny("bert-tiny"))
    with pytest.raises(prunehead.InputError, match="every channel"):
        prune_conv_(model, {0: tuple(range(32))})


def test_conv_paths_run_on_the_meta_device():
    model = tiny("wav2vec2-tiny").to("meta")
    plan = _random_plan(tiny("wav2vec2-tiny"))
    inputs = {k: v.to("meta") for k, v in example_inputs(model, 1.0).items()}
    with torch.no_grad():
        evaluate_gated(model, plan, lambda m: m(**inputs).logits)
    channel_macs(model, inputs)
    remove_all_(model, plan)
    assert [c.weight.device.type for c in conv_layers(model)] == ["meta"] * 7


def test_cli_score_prune_eval_and_export_of_conv_channels(dead_heads, tmp_path):
    root = dead_heads
    cli_ok("score", "-m", root / "model", "-d", root / "data", "--units", "conv", "--scorer", "taylor", "--samples",
         "6", "--out", tmp_path / "conv.json")
    scores = load_scores(tmp_path / "conv.json", expect=(7, 32), units="conv")
    out = tmp_path / "pruned"
    output = cli_ok("prune", "-m", root / "model", "-d", root / "data", "--conv-ratio", "0.25", "--conv-scores",
                  tmp_path / "conv.json", "--batch-size", "8", "--out", out)
    assert "plan: remove 56 conv channels" in output
    plan = prunehead.PruningPlan.load(out / "plan.json")
    expected = select_conv(scores, PruningPlan(2, 4), ratio=0.25, scope="per_layer")
    assert plan.pruned_conv == expected.pruned_conv
    report = json.loads((out / "report.json").read_text())
    assert report["conv"]["channels_removed"] == 56
    assert report["after"]["macs"] < report["before"]["macs"]
    check_saved_folder(out, root / "data", "metrics_after", tmp_path / "onnx")


def test_cli_budgets_span_conv_channels(dead_heads, tmp_path):
    root = dead_heads
    out = tmp_path / "macs"
    cli_ok("prune", "-m", root / "model", "-d", root / "data", "--target-macs", "0.5", "--units", "all", "-s",
         root / "gradient.json", "--ffn-scorer", "magnitude", "--conv-scorer", "magnitude", "--batch-size", "8",
         "--out", out)
    report = json.loads((out / "report.json").read_text())
    assert report["after"]["macs"] == report["target_macs"]["planned_macs"] <= 0.5 * report["target_macs"]["dense_macs"]
    assert prunehead.plan_of(prunehead.load(out)).num_pruned_conv > 0
    out = tmp_path / "drop"
    cli_ok("prune", "-m", root / "model", "-d", root / "data", "--max-drop", "1", "--units", "conv", "--conv-scorer",
         "magnitude", "--batch-size", "8", "--out", out)
    report = json.loads((out / "report.json").read_text())
    chosen = report["max_drop"]["chosen"]
    assert chosen["heads_removed"] == chosen["neurons_removed"] == 0
    assert chosen["channels_removed"] == 7 * 31  # a budget of 1 takes all but the floor of one per layer
    assert report["after"]["macs"] == chosen["planned_macs"]


def test_conv_flags_fail_in_one_line_before_loading():
    from prunehead.commands.prune_request import request_from_flags

    for flags, message in [({"conv_ratio": 0.2}, "--conv-ratio needs scores of the conv channels"),
                           ({"conv_scores": "c.json", "ratio": 0.2, "scores": "s.json"}, "give --conv-ratio"),
                           ({"conv_ratio": 0.2, "conv_scorer": "l1", "data": "d"}, "--conv-scorer must be"),
                           ({"max_drop": 0.1, "units": "conv,conv", "data": "d"}, "distinct kinds"),
                           ({"target_macs": 0.5, "units": "conv", "scores": "s.json", "data": "d"}, "heads too"),
                           ({"plan": "p.json", "conv_ratio": 0.2}, "drop --ffn-ratio, --conv-ratio and --layer-ratio")]:
        with pytest.raises(prunehead.InputError, match=message):
            request_from_flags(flags)


def test_export_times_against_the_dense_fp32_graph_and_int8_keeps_convolutions_fp32(tmp_path):
    import onnx

    from prunehead.export.pipeline import ExportOptions, export_model

    model = tiny("wav2vec2-tiny")
    pruned = remove_all_(copy.deepcopy(model), _random_plan(model))
    summary = export_model(pruned, tmp_path / "int8", ExportOptions(quantize="int8", repeats=1, batches=(1,)))
    row = summary["latency"]["rows"][0]
    assert {"unpruned_ms", "dense_fp32_ms", "speedup", "speedup_vs_dense_fp32"} <= set(row)
    assert row["speedup_vs_dense_fp32"] == pytest.approx(row["dense_fp32_ms"] / row["model_ms"], rel=1e-3)
    assert "dense_fp32_graph" in summary["latency"] and "unpruned_graph" in summary["latency"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8" / "model_quantized.onnx")).graph.node}
    assert "Conv" in ops and "ConvInteger" not in ops  # the waveform convolutions stay fp32
    export_model(pruned, tmp_path / "conv", ExportOptions(quantize="int8-conv", check=False, repeats=1, batches=(1,)))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "conv" / "model_quantized.onnx")).graph.node}
    assert "ConvInteger" in ops
    plain = export_model(pruned, tmp_path / "fp32", ExportOptions(repeats=1, batches=(1,)))
    assert "dense_fp32_ms" not in plain["latency"]["rows"][0]  # the unpruned graph is the dense fp32 one


def test_the_mac_floor_with_and_without_the_conv_front_end():
    model = tiny("wav2vec2-tiny")
    inputs = example_inputs(model, 1.0)
    encoder = prunehead.mac_floor(model, ("heads", "ffn"))
    everything = prunehead.mac_floor(model)
    assert everything["floor_macs"] < encoder["floor_macs"] < encoder["dense_macs"]
    for floor in (encoder, everything):  # the floor is what the physically pruned model costs
        assert count_macs(remove_all_(copy.deepcopy(model), floor["plan"]), inputs)["total"] == floor["floor_macs"]
    assert everything["plan"].num_pruned_conv == 7 * 31 and everything["plan"].num_pruned == 8


def test_sweep_frontier_spans_conv_channels_and_matches_a_physical_prune(dead_heads, tmp_path):
    root = dead_heads
    cli_ok("score", "-m", root / "model", "-d", root / "data", "--units", "conv", "--scorer", "magnitude",
         "--out", tmp_path / "conv.json")
    cli_ok("sweep", "-m", root / "model", "-d", root / "data", "-s", root / "gradient.json", "--ratios", "0",
         "--ffn-ratios", "0", "--conv-ratios", "0,0.25", "--conv-scores", tmp_path / "conv.json", "--batch-size", "8",
         "--out", tmp_path / "frontier")
    points = json.loads((tmp_path / "frontier" / "frontier.json").read_text())["points"]
    assert [p["channels_removed"] for p in points] == [0, 56]
    assert "channels removed" in (tmp_path / "frontier" / "frontier.md").read_text()
    cli_ok("prune", "-m", root / "model", "-d", root / "data", "--conv-ratio", "0.25", "--conv-scores",
         tmp_path / "conv.json", "--batch-size", "8", "--out", tmp_path / "pruned")
    report = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert points[1]["accuracy"] == report["metrics_after"]["accuracy"]  # gated in the sweep == removed here
    assert points[1]["macs"] == report["after"]["macs"]


def test_recovery_trains_the_front_end_when_the_plan_cut_its_channels(dead_heads):
    from prunehead.pruning.targets import Cut
    from prunehead.specs import Data, Ranking, Recovery
    from prunehead.units.base import Amount

    root = dead_heads
    data = Data(str(root / "data"), batch_size=8)
    for amounts, rankings, trains in (({"conv": Amount(ratio=0.25)}, {"conv": Ranking("magnitude")}, True),
                                      ({"heads": Amount(ratio=0.25)}, {"heads": Ranking(scores=root / "gradient.json")},
                                       False)):
        result = prunehead.prune(str(root / "model"), Cut(amounts), ranking=rankings, data=data,
                                 recover=Recovery(1, 1e-3))
        plan = result.plan
        cut = remove_all_(prunehead.load(root / "model"), plan)  # the same cut, not recovered
        moved = [not torch.equal(a.weight, b.weight) for a, b in zip(conv_layers(result.model), conv_layers(cut))]
        assert all(moved) if trains else not any(moved), amounts
        assert result.report["recovery"]["config"]["freeze_feature_encoder"] is (not trains)


def test_data_free_scores_need_no_data(tmp_path):
    model = tiny("wav2vec2-tiny")
    model.save_pretrained(tmp_path / "m")
    for units, expected in (("conv", score_conv(model, scorer="magnitude")),):
        out = tmp_path / f"{units}.json"
        result = runner.invoke(app, ["score", "-m", str(tmp_path / "m"), "--units", units, "--scorer", "magnitude",
                                     "--out", str(out)])
        assert result.exit_code == 0 and "(data-free)" in result.output, result.output
        torch.testing.assert_close(load_scores(out, units=units), expected)
    result = runner.invoke(app, ["score", "-m", str(tmp_path / "m"), "--units", "conv", "--scorer", "taylor",
                                 "--out", str(tmp_path / "t.json")])
    assert result.exit_code != 0 and "missing --data" in result.output
