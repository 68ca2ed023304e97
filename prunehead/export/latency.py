"""ONNX Runtime latency, measured side by side: models take turns on the same inputs, median of repeats.

Taking turns (and alternating who goes first) exposes every model to the same drift of a shared machine
(other processes, CPU frequency), so their ratio is fairer than that of two runs one after the other.
Sessions for timing keep ONNX Runtime's defaults apart from the thread count (what a deployment gets);
sessions for checks stop idle worker threads from busy-waiting, which only burns a shared machine's CPU.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

DEFAULT_THREADS = 2


def ort_session(path: str | Path, threads: int = DEFAULT_THREADS, spin: bool = True):
    """A CPU `onnxruntime.InferenceSession` with `threads` intra-op threads and full graph optimization.

    `spin=False` stops idle worker threads from busy-waiting (ONNX Runtime's default is to spin).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_in_turns(models: dict[str, str | Path], feeds: dict[str, np.ndarray], repeats: int = 20,
                  warmup: int = 3, threads: int = DEFAULT_THREADS, spin: bool = True) -> dict[str, list[float]]:
    """Wall-clock seconds of each of `repeats` runs per model on `feeds`, the models taking turns.

    Run r of every model happens back to back (the order alternates), so runs with the same index saw
    about the same load: their ratio is a paired measurement. Cost: (warmup + repeats) runs per model.
    """
    sessions = {name: ort_session(path, threads, spin) for name, path in models.items()}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feeds)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            sessions[name].run(None, feeds)
            times[name].append(time.perf_counter() - start)
    return times


def side_by_side(models: dict[str, str | Path], feeds: dict[str, np.ndarray], repeats: int = 20,
                 warmup: int = 3, threads: int = DEFAULT_THREADS, spin: bool = True) -> dict[str, float]:
    """Median latency in ms of each model on `feeds` (input name -> array), measured in turns.

    Args:
        models: name -> .onnx path; every model must take the inputs in `feeds`.
        feeds: one batch of inputs, the same for every model.
        repeats: timed runs per model (the median is reported).
        warmup: untimed runs per model first.
        threads: ONNX Runtime intra-op threads.
        spin: let idle worker threads busy-wait (ONNX Runtime's default).
    """
    times = time_in_turns(models, feeds, repeats, warmup, threads, spin)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}
