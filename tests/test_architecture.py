"""The shape of the code, checked on its source: short signatures, keyword calls, small modules, no import
cycle (deferred imports included), every target type has a decider and every value round-trips through JSON.

The rules are the ones docs/architecture.md states; each check reads the AST of `prunehead/`, so a new
long signature, a 7-positional call or a cycle hidden in a function body fails here.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import prunehead
from prunehead.pruning.plan import PruningPlan
from prunehead.pruning.targets import TARGETS, AccuracyBudget, Cut, MacBudget, SavedPlan, target_from_json, target_json
from prunehead.specs import Data, Frontier, Ranking, Recovery
from prunehead.units.base import Amount

PACKAGE = Path(prunehead.__file__).parent
MAX_PARAMS, MAX_POSITIONAL, MAX_LINES = 10, 6, 400


def _modules() -> dict[str, ast.Module]:
    """{dotted module name: AST} of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The package modules `name` imports anywhere (top level and inside functions), with the packages
    whose __init__ runs on the way (importing a.b.c runs a and a.b first)."""
    base = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            root = node.module or ""
            if node.level:
                anchor = base.split(".")[: len(base.split(".")) - node.level + 1]
                root = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in MODULES else root for a in node.names]
        for target in targets:  # the target and the packages its import runs, except those `name` is inside
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts))} - _ancestors(name)
            found.add(target)
    return (found & set(MODULES)) - {name}


def _ancestors(name: str) -> set[str]:
    """The packages that are already importing when `name` runs (a and a.b for a.b.c)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), the package root left out: it
    imports nothing eagerly (its names load on first use)."""
    graph = {n: sorted(_imports(n, t) - {"prunehead"}) for n, t in MODULES.items() if n != "prunehead"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_even_through_deferred_imports():
    assert _cycles() == []


def test_the_cycle_finder_sees_a_deferred_cycle(monkeypatch):
    """The check can fail: a planted deferred import that closes a loop is found."""
    planted = ast.parse("def f():\n    from .control import controlled\n")
    tree = ast.Module(body=MODULES["prunehead.attention"].body + planted.body, type_ignores=[])
    assert "prunehead.control" in _imports("prunehead.attention", tree)
    monkeypatch.setitem(MODULES, "prunehead.attention", tree)
    assert any("prunehead.attention" in c and "prunehead.control" in c for c in _cycles())


def _public_functions() -> list[tuple[str, ast.FunctionDef]]:
    """Module-level public functions and public methods of public classes, outside `commands/` (the CLI's
    typer signatures are one parameter per option by design)."""
    out = []
    for name, tree in MODULES.items():
        if name.startswith("prunehead.commands") or name == "prunehead.cli":
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                out.append((name, node))
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                out += [(f"{name}.{node.name}", f) for f in node.body
                        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and not f.name.startswith("_")]
    return out


def _params(fn: ast.FunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return len([n for n in names if n not in ("self", "cls")])


def test_no_public_function_takes_more_than_ten_parameters():
    long = [f"{where}.{fn.name} ({_params(fn)})" for where, fn in _public_functions() if _params(fn) > MAX_PARAMS]
    assert long == []


def test_no_call_passes_more_than_six_positional_arguments():
    calls = [f"{name}:{node.lineno}" for name, tree in MODULES.items() for node in ast.walk(tree)
             if isinstance(node, ast.Call) and len(node.args) > MAX_POSITIONAL]
    assert calls == []


def test_no_module_is_longer_than_four_hundred_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_target_type_has_a_decider():
    from prunehead.api import DECIDERS

    assert set(TARGETS.values()) <= set(DECIDERS)


PLAN = PruningPlan(2, 4, {0: (1, 3)}, {1: (0, 5)}, 8)
VALUES = [
    Cut.heads(0.4), Cut.heads(count=2, scope="per_layer", min_per_layer=1, rounds=3),
    Cut({"heads": Amount(0.25), "ffn": Amount(0.5, scope="per_layer", min_per_layer=1)}),
    AccuracyBudget(0.01), AccuracyBudget(0.02, units=("heads", "ffn"), min_per_layer={"ffn": 4}),
    MacBudget(0.6, {"heads": 1}), SavedPlan(PLAN, "plan.json"),
]


@pytest.mark.parametrize("target", VALUES, ids=lambda t: type(t).__name__)
def test_every_target_round_trips_through_json_text(target):
    text = json.dumps(target_json(target))
    back = target_from_json(json.loads(text))
    assert back == target and type(back) is type(target)


@pytest.mark.parametrize("value", [
    Ranking("hib", options={"beta": 1e-4}, samples=64, seed=3), Ranking(scores="s.json"),
    Ranking("auto", candidates=("gradient", "attention")),
    Data("fsdd-ks", split="validation", batch_size=8, clip_seconds=1.0, task="ks"),
    Recovery(2, 1e-4, 5),
], ids=lambda v: type(v).__name__)
def test_every_value_round_trips_through_json_text(value):
    back = type(value).from_json(json.loads(json.dumps(value.to_json())))
    assert back == value


def test_a_matrix_ranking_says_json_cannot_hold_it():
    data = json.loads(json.dumps(Ranking(scores=torch.rand(2, 4)).to_json()))
    with pytest.raises(prunehead.InputError, match="pass the matrix again"):
        Ranking.from_json(data)


@pytest.mark.parametrize("make, flag", [
    (lambda: Cut.heads(1.5), "--ratio"), (lambda: Cut.heads(count=2), "--per-layer"),
    (lambda: AccuracyBudget(float("nan")), "--max-drop"), (lambda: MacBudget(0.0), "--target-macs"),
    (lambda: Ranking("hib", samples=0), "--samples"), (lambda: Data("d", batch_size=0), "--batch-size"),
    (lambda: Recovery(0), "--recover-epochs"), (lambda: Frontier(()), "--ffn-ratios"),
    (lambda: SavedPlan({"pruned_heads": {}}), "PruningPlan"),
])
def test_every_value_validates_its_own_fields(make, flag):
    with pytest.raises(prunehead.InputError, match=flag):
        make()


def test_a_new_target_needs_only_its_value_and_a_decider(tmp_path):
    """A toy target ("the first K heads of layer 0") joins `prune` without a change to the pruner."""
    from dataclasses import dataclass

    from prunehead.api import DECIDERS, Decision, decider
    from tests.conftest import tiny

    @dataclass(frozen=True)
    class FirstHeads:
        count: int

    @decider(FirstHeads)
    def decide(ctx, target):
        layers, heads = prunehead.head_adapter(ctx.model).num_layers, prunehead.head_adapter(ctx.model).num_heads
        return Decision(PruningPlan(layers, heads, {0: tuple(range(target.count))}))

    try:
        result = prunehead.prune(tiny("wav2vec2-tiny"), FirstHeads(2))
        assert result.plan.pruned_heads == {0: (0, 1)}
        assert prunehead.head_adapter(result.model).heads_per_layer(result.model) == [2, 4]
    finally:
        DECIDERS.pop(FirstHeads)
