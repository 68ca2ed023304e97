"""Progress bars only on a terminal (PRUNEHEAD_PROGRESS=1/0 overrides)."""

from __future__ import annotations

import io
import sys

import pytest

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
