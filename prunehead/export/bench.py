"""`LatencyBench`: many models exported to ONNX in a temporary folder, then timed in turns at each batch size.

Every model is exported once when it is added (`export_onnx`, not checked against PyTorch: only its
speed is used), so no PyTorch copy has to be kept. Timing goes in groups: the reference model and at most
`group` others take turns on the same feeds (`time_in_turns`), so each model's speedup is a paired
measurement against the reference runs of its own group, and no more than group + 1 ONNX Runtime sessions
are held at once (a session holds its weights: ~0.4 GB for a 95 M-parameter model).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from torch import nn

from .latency import DEFAULT_THREADS, time_in_turns
from .onnx import Signature, export_onnx

GROUP = 8  # models timed in turns beside the reference at once


class LatencyBench:
    """A temporary folder of ONNX graphs, timed against one reference graph (use as a context manager)."""

    def __init__(self, reference: nn.Module, group: int = GROUP):
        self._tmp = tempfile.TemporaryDirectory(prefix="prunehead-bench-")
        self.folder = Path(self._tmp.name)
        self.group = group
        self.files: dict[str, Path] = {}
        self.paired: dict[str, dict[str, float]] = {}  # name -> batch -> the reference's median in its group
        try:
            self.signature: Signature = self.add("reference", reference)
        except BaseException:
            self._tmp.cleanup()
            raise

    def add(self, name: str, model: nn.Module) -> Signature:
        """Export `model` (on the CPU) as `name`. Cost: one ONNX export."""
        path = self.folder / f"{len(self.files)}.onnx"
        signature = export_onnx(model, path)
        self.files[name] = path
        return signature

    def time(self, batch_sizes: Sequence[int], length: int, repeats: int = 20, threads: int = DEFAULT_THREADS,
             tick: Callable[[], None] | None = None) -> dict[str, dict[str, float]]:
        """Median ms of every model at each batch size on inputs of `length` (speech: samples, text: tokens,
        Whisper: its fixed window whatever `length`): {name: {str(batch): ms}}.

        The reference's entry is the median over all its runs (it runs in every group); `speedups` turns
        the result into paired ratios. `tick` is called after each group. Cost: (3 + repeats) ONNX Runtime
        runs per model, batch size and group (the reference: per group).
        """
        others = [name for name in self.files if name != "reference"]
        groups = [others[i:i + self.group] for i in range(0, len(others), self.group)] or [[]]
        self.paired = {}
        runs: dict[str, dict[str, list[float]]] = {name: {} for name in self.files}
        for batch in batch_sizes:
            feeds = {k: v.numpy() for k, v in self.signature.inputs(batch, length, seed=batch).items()}
            for names in groups:
                files = {name: self.files[name] for name in ["reference", *names]}
                times = time_in_turns(files, feeds, repeats, threads=threads)
                runs["reference"].setdefault(str(batch), []).extend(times["reference"])
                for name in names:
                    runs[name][str(batch)] = times[name]
                    self.paired.setdefault(name, {})[str(batch)] = statistics.median(times["reference"])
                if tick is not None:
                    tick()
        return {name: {b: 1e3 * statistics.median(t) for b, t in per.items()} for name, per in runs.items()}

    def speedups(self, medians: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """{name: {batch: reference median / model median}}, both from the same group (after `time`)."""
        return {name: {b: 1e3 * self.paired[name][b] / ms for b, ms in per.items()}
                for name, per in medians.items() if name in self.paired}

    def __enter__(self) -> LatencyBench:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._tmp.cleanup()
