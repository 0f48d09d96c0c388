"""The summary a pool child sends back for a failure is bounded (T30: a task that raises an
exception carrying tens of megabytes must not push them through the pool pipe, into the
controller's memory and into every task event); the stored result keeps the whole text."""

from __future__ import annotations

from tq.worker import trace


def test_a_short_traceback_is_sent_whole() -> None:
    text = "Traceback (most recent call last):\n  File 'x.py', line 1\nValueError: boom\n"
    assert trace._clip_trace(text) == text
    assert trace._clip_trace(None) is None


def test_a_huge_traceback_keeps_its_tail_and_says_how_much_was_cut() -> None:
    head = "Traceback (most recent call last):\n" + "  frame\n" * 10
    text = head + "ValueError: " + "x" * 5_000_000 + "\nthe last line\n"
    clipped = trace._clip_trace(text)
    assert clipped is not None
    cut = len(text) - trace.SUMMARY_TRACE_MAX
    assert clipped.startswith(f"[{cut} characters cut]\n")
    assert clipped.endswith("x\nthe last line\n")
    assert len(clipped) <= trace.SUMMARY_TRACE_MAX + 40
