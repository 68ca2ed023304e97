"""Distillation recovery (#25): the loss against closed forms, zero for a student equal to its teacher, the
layer map by original ids, recovery that learns from the teacher (its loss falls), the CLI round trip and
flag errors."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import prunehead
from prunehead.cli import app
from prunehead.specs import Distill
from prunehead.training.distill import DistillTask, distill_loss, layer_map
from prunehead.units.depth import remove_layers_

from conftest import ce, tiny

runner = CliRunner()


def _out(logits: torch.Tensor, states: list[torch.Tensor]) -> SimpleNamespace:
    return SimpleNamespace(logits=logits, hidden_states=tuple(states))


def test_the_loss_is_zero_for_a_student_equal_to_its_teacher_and_matches_closed_forms():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, generator=gen)
    states = [torch.randn(3, 7, 4, generator=gen) for _ in range(3)]  # embeddings + 2 layers
    same = distill_loss(_out(logits, states), _out(logits.clone(), [s.clone() for s in states]), Distill(), [(0, 0), (1, 1)])
    assert torch.allclose(same, torch.zeros(3), atol=1e-6)
    other = torch.randn(3, 5, generator=gen)
    T = 3.0
    got = distill_loss(_out(other, states), _out(logits, states), Distill(temperature=T, hidden=0.0), [(0, 0)])
    p, q = torch.softmax(logits / T, -1), torch.softmax(other / T, -1)
    expected = T * T * (p * (p.log() - q.log())).sum(-1)  # T^2 KL(teacher || student)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    doubled = [states[0], 2 * states[1], states[2]]  # layer 0's output twice the teacher's: (2h - h)^2 / h^2 = 1
    hidden = distill_loss(_out(logits, doubled), _out(logits, states), Distill(hidden=0.5), [(0, 0)])
    torch.testing.assert_close(hidden, torch.full((3,), 0.5), atol=1e-6, rtol=1e-6)


def test_the_task_adds_the_weighted_labels_and_runs_the_teacher_on_the_same_batch():
    model = tiny("wav2vec2-tiny").eval()
    batch = {"input_values": torch.randn(2, 8000), "labels": torch.tensor([0, 2])}
    task = SimpleNamespace(model_inputs=lambda b: {k: v for k, v in b.items() if k != "labels"}, objective=ce)
    distill = DistillTask(task, copy.deepcopy(model), Distill(labels=0.25), model)
    with torch.no_grad():
        outputs = model(**distill.model_inputs(batch))
        loss = distill.objective(outputs, batch)
    torch.testing.assert_close(loss, 0.25 * ce(outputs, batch), atol=1e-5, rtol=1e-5)  # the teacher is itself


def test_the_layer_map_pairs_layers_by_their_original_ids():
    teacher = tiny("wav2vec2-tiny", num_hidden_layers=4)
    student = remove_layers_(copy.deepcopy(teacher), [1])
    assert layer_map(student, teacher) == [(0, 0), (1, 2), (2, 3)]
    assert layer_map(student, teacher, "last") == [(2, 3)]
    assert layer_map(student, teacher, "0,2") == [(0, 0), (2, 3)]
    assert layer_map(student, teacher, "none") == []
    with pytest.raises(prunehead.InputError, match="no layer"):
        layer_map(student, teacher, "5")
    with pytest.raises(prunehead.InputError, match="--distill-layers"):
        Distill(layers="first")


def test_distillation_training_brings_a_student_closer_to_its_teacher(dead_heads):
    from prunehead.training.config import TrainConfig
    from prunehead.training.finetune import fit_

    root = dead_heads
    ws = prunehead.open_workspace(str(root / "model"), str(root / "data"), "train", batch_size=12)
    teacher, batches = ws.model, ws.batches()
    student = remove_layers_(copy.deepcopy(teacher), [1])  # a cut, and noise on what is left of the encoder
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in student.wav2vec2.encoder.layers.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
    settings = Distill(labels=0.0)

    def loss(model: torch.nn.Module) -> float:
        pairs = layer_map(model, teacher)
        with torch.no_grad():
            terms = [distill_loss(model(input_values=b["input_values"], output_hidden_states=True),
                                  teacher(input_values=b["input_values"], output_hidden_states=True), settings, pairs)
                     for b in batches]
        return float(torch.cat(terms).mean())

    before = loss(student)
    record = fit_(student, str(root / "data"), TrainConfig(epochs=4, lr=3e-4, head_lr=3e-4, batch_size=6,
                                                           eval_split=None), source=str(root / "model"),
                  teacher=teacher, distill=settings)
    assert record["distill"]["pairs"] == [(0, 0)]
    after = loss(student.eval())
    assert after < 0.7 * before, (before, after)


def test_cli_recover_distill_round_trips_and_its_flags_fail_in_one_line(dead_heads, tmp_path):
    root = dead_heads
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "-m", str(root / "model"), "-s", str(root / "gradient.json"), "--ratio",
                                 "0.25", "-d", str(root / "data"), "--batch-size", "6", "--recover-epochs", "1",
                                 "--recover-distill", "--distill-temperature", "4", "--distill-layers", "last",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["recovery"]["distill"]["temperature"] == 4.0 and len(report["recovery"]["distill"]["pairs"]) == 1
    fresh = prunehead.evaluate(str(out), str(root / "data"), split="test")
    assert fresh["accuracy"] == report["metrics_after_recovery"]["accuracy"]
    for args, message in ((["--distill-temperature", "3"], "add it"),
                          (["--recover-distill"], "--recover-epochs 1 or more")):
        result = runner.invoke(app, ["prune", "-m", str(root / "model"), "-s", str(root / "gradient.json"),
                                     "--ratio", "0.25", "-d", str(root / "data"), "--out", str(tmp_path / "x"), *args])
        assert result.exit_code != 0 and message in result.output, result.output
