"""The app layer: App, settings, tasks, routing, canvas, results, control and events."""

from __future__ import annotations

from tq.app.base import App, shared_task

__all__ = ["App", "shared_task"]
