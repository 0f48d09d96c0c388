"""``BucketsScreen``: per-task rate-limit token buckets; change a task's rate limit (``l``)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from tq.worker.snapshot import Snapshot
from tq_console.messages import CommandRequest
from tq_console.screens.base import ViewScreen
from tq_console.screens.rate_limit import RateLimitScreen
from tq_console.widgets.bucket_table import BucketTable


class BucketsScreen(ViewScreen):
    """The rate buckets view."""

    VIEW = "buckets"
    TITLE = "Rate limits"
    MUTATING = frozenset({"rate_limit"})

    BINDINGS: ClassVar[list[BindingType]] = [Binding("l", "rate_limit", "Rate limit")]

    def compose_body(self) -> ComposeResult:
        yield BucketTable(id="bucket-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(BucketTable).update(snapshot.buckets)

    def action_rate_limit(self) -> None:
        if self.snapshot is None:
            return
        keys = self.selected()
        if not keys:
            return
        rates = {bucket.task_name: bucket.rate for bucket in self.snapshot.buckets}
        name = keys[0]
        self.app.push_screen(RateLimitScreen(name, rates.get(name, "")), self._rate_chosen)

    def _rate_chosen(self, request: CommandRequest | None) -> None:
        if request is not None:
            self.request(request)
