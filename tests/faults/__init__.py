"""Fault-injection suite (issue 9): RELIABILITY.md's matrix against real processes."""
