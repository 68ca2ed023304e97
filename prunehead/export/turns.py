"""The timing process of `time_in_turns` (run as a script in a fresh interpreter: `python -I turns.py FOLDER`).

It reads FOLDER/request.json ({"models": {name: path}, "repeats", "warmup", "threads"}) and FOLDER/feeds.npz,
and writes FOLDER/times.json ({"times": {name: [seconds]}, "setup": {...}}). Only numpy and onnxruntime are
imported: no PyTorch threads that spin after the parent's work, and one intra-op thread pool shared by every
session. With a pool per session (ONNX Runtime's default), the idle workers of the sessions waiting their turn
busy-wait on the same cores as the session running, which added 40-70 % to the times on 2 cores and moved
the ratios by 0.2-0.4x either way (bench/bench_timing.py measures it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def take_turns(sessions: dict, feeds: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each of `repeats` runs per session on `feeds`: run r of every session back to back, the order
    alternating between runs, after `warmup` untimed runs each. Cost: (warmup + repeats) runs per session."""
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


def main(folder: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.capi import _pybind_state

    request = json.loads((folder / "request.json").read_text())
    _pybind_state.set_global_thread_pool_sizes(int(request["threads"]), 1)  # before the first session
    with np.load(folder / "feeds.npz") as data:
        feeds = {k: data[k] for k in data.files}
    options = ort.SessionOptions()
    options.use_per_session_threads = False  # the shared pool above
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # the pool-size options of a shared pool are ignored: no warning for it
    sessions = {name: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                for name, path in request["models"].items()}
    times = take_turns(sessions, feeds, int(request["repeats"]), int(request["warmup"]))
    setup = {"thread_pool": "shared", "threads": int(request["threads"]), "torch_loaded": "torch" in sys.modules}
    (folder / "times.json").write_text(json.dumps({"times": times, "setup": setup}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
