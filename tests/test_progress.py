"""Progress bars only on a terminal, plain lines in a log once work runs long (PRUNEHEAD_PROGRESS=1/0
overrides)."""

from __future__ import annotations

import io
import re
import sys
import time

import pytest

import prunehead.progress as progress
from prunehead.progress import ENV, bar, enabled


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "env", "shown"), [
    (io.StringIO, None, False), (FakeTerminal, None, True),
    (io.StringIO, "1", True), (FakeTerminal, "0", False),
])
def test_bars_show_on_a_terminal_unless_overridden(monkeypatch, stream, env, shown):
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    if env is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, env)
    assert enabled() is shown
    assert enabled(False) is False  # a caller that asked for no bar never gets one
    assert list(bar(range(5), desc="work", file=err)) == list(range(5))  # the iterable passes through
    assert ("work" in err.getvalue()) is shown  # a log (not a terminal) gets no bar text at all


@pytest.mark.parametrize(("env", "enable", "lines"), [(None, True, True), ("0", True, False), (None, False, False)])
def test_long_work_in_a_log_says_where_it_is_in_plain_lines(monkeypatch, env, enable, lines):
    """Without a terminal, work longer than LOG_EVERY_S gets one line per interval (no bar, no carriage
    return), the last at 100 %; PRUNEHEAD_PROGRESS=0 or a caller that asked for no progress: nothing."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.05)
    if env is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, env)
    work = bar(range(10), desc="l0 epoch 1/2", enable=enable, leave=False)
    for step in work:
        time.sleep(0.02)
        work.set_postfix(loss=f"{step:.3f}")  # every step, as the training loops do: no line of its own
    out = err.getvalue()
    if not lines:
        assert out == ""
        return
    assert "\r" not in out and out.endswith("\n")
    found = out.splitlines()
    assert 2 <= len(found) <= 6 and len(set(found)) == len(found)  # one per interval (10 x 0.02 s / 0.05 s)
    pattern = r"l0 epoch 1/2: (\d+)/10 \((\d+) %\), \d\d:\d\d elapsed, about \d\d:\d\d left, loss=\S+"
    counts = [int(re.fullmatch(pattern, line).group(1)) for line in found]
    assert counts == sorted(counts) and counts[-1] == 10


def test_a_training_log_has_no_bar(monkeypatch, tmp_path):
    """The library's own bars (here: evaluation) write nothing to a non-terminal stderr."""
    from prunehead.tasks import get_task
    from tests.conftest import tiny

    import torch

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv(ENV, raising=False)
    model = tiny("wav2vec2-tiny")
    batch = {"input_values": torch.randn(2, 1600), "attention_mask": torch.ones(2, 1600, dtype=torch.long),
             "labels": torch.tensor([0, 1])}
    get_task("ks", model).evaluate(model, [batch], progress=True)
    assert err.getvalue() == ""


def test_library_bars_follow_the_same_rule(monkeypatch):
    """transformers' 'Writing model shards' and datasets' 'Map' bars: off in a log, on on a terminal."""
    import datasets
    from transformers.utils import logging as tf_logging

    from prunehead.progress import library_bars

    monkeypatch.delenv(ENV, raising=False)
    was = tf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    try:
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        assert library_bars() is False
        assert not tf_logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
        monkeypatch.setattr(sys, "stderr", FakeTerminal())
        assert library_bars() is True
        assert tf_logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()
    finally:
        (tf_logging.enable_progress_bar if was[0] else tf_logging.disable_progress_bar)()
        (datasets.enable_progress_bars if was[1] else datasets.disable_progress_bars)()
