"""ONNX Runtime latency, measured side by side: models take turns on the same inputs, median of repeats.

Taking turns (and alternating who goes first) exposes every model to the same drift of a shared machine
(other processes, CPU frequency), so their ratio is fairer than that of two runs one after the other.
Timing sessions keep ONNX Runtime's defaults apart from the thread count (what a deployment gets) and
share one thread pool in a process of their own (`turns.py`); sessions for checks stop idle worker threads
from busy-waiting, which only burns a shared machine's CPU.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import PruneheadError

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
                  warmup: int = 3, threads: int = DEFAULT_THREADS) -> dict[str, list[float]]:
    """Wall-clock seconds of each of `repeats` runs per model on `feeds`, the models taking turns.

    Run r of every model happens back to back (the order alternates), so runs with the same index saw
    about the same load: their ratio is a paired measurement. The runs happen in a fresh interpreter that
    loads only ONNX Runtime, its sessions sharing one pool of `threads` intra-op threads (`turns.py`): a model
    waiting its turn then has no worker busy-waiting beside the one running, and no PyTorch thread of this
    process spins either. Cost: (warmup + repeats) runs per model, plus about a second to start the process.
    """
    with tempfile.TemporaryDirectory(prefix="prunehead-timing-") as tmp:
        folder = Path(tmp)
        np.savez(folder / "feeds.npz", **feeds)
        request = {"models": {name: str(Path(path).resolve()) for name, path in models.items()},
                   "repeats": repeats, "warmup": warmup, "threads": threads}
        (folder / "request.json").write_text(json.dumps(request))
        proc = subprocess.run([sys.executable, "-I", str(Path(__file__).with_name("turns.py")), str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            raise PruneheadError(f"timing with ONNX Runtime failed: {lines[-1] if lines else proc.returncode}")
        return json.loads((folder / "times.json").read_text())["times"]


def side_by_side(models: dict[str, str | Path], feeds: dict[str, np.ndarray], repeats: int = 20,
                 warmup: int = 3, threads: int = DEFAULT_THREADS) -> dict[str, float]:
    """Median latency in ms of each model on `feeds` (input name -> array), measured in turns.

    Args:
        models: name -> .onnx path; every model must take the inputs in `feeds`.
        feeds: one batch of inputs, the same for every model.
        repeats: timed runs per model (the median is reported).
        warmup: untimed runs per model first.
        threads: ONNX Runtime intra-op threads (one pool that the models share).
    """
    times = time_in_turns(models, feeds, repeats, warmup, threads)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}
