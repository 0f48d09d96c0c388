"""``PoolScreen``: the pool's children; grow (``+``) and shrink (``-``) the pool.

Also defines ``pool_request``, shared with the overview.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from tq.worker.snapshot import Snapshot
from tq_console import format as fmt
from tq_console.messages import Call, CommandRequest
from tq_console.screens.base import ViewScreen
from tq_console.widgets.children_table import ChildrenTable


def pool_request(snapshot: Snapshot, delta: int) -> CommandRequest:
    """The confirmation for growing (``delta`` > 0) or shrinking the pool by ``abs(delta)``."""
    size = snapshot.concurrency
    if delta > 0:
        return CommandRequest(
            title="Grow pool",
            summary=(
                f"Start {delta} more child process(es) in the {snapshot.pool} pool of "
                f"{snapshot.hostname}: {size} → {size + delta}. The prefetch limit grows with it."
            ),
            calls=(Call("grow", (delta,)),),
        )
    n = -delta
    return CommandRequest(
        title="Shrink pool",
        summary=(
            f"Retire {n} child process(es) of the {snapshot.pool} pool of {snapshot.hostname}: "
            f"{size} → {max(0, size - n)}. A busy child finishes its current task first."
        ),
        calls=(Call("shrink", (n,)),),
    )


class PoolScreen(ViewScreen):
    """The pool view."""

    VIEW = "pool"
    TITLE = "Pool"
    MUTATING = frozenset({"grow", "shrink"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus", "grow", "Grow", key_display="+"),
        Binding("minus", "shrink", "Shrink", key_display="-"),
    ]

    def compose_body(self) -> ComposeResult:
        yield ChildrenTable(id="children-table")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one(ChildrenTable).update(snapshot.children, snapshot.taken_at)

    def body_title(self) -> str:
        if self.snapshot is None:
            return self.TITLE
        s = self.snapshot
        busy = sum(child.state == "busy" for child in s.children)
        return (
            f"{self.TITLE} [{s.pool} {fmt.TIMES}{s.concurrency} · {busy} busy · "
            f"{len(s.children) - busy} idle · {s.recycled_children} recycled]"
        )

    def action_grow(self) -> None:
        if self.snapshot is not None:
            self.request(pool_request(self.snapshot, 1))

    def action_shrink(self) -> None:
        if self.snapshot is not None:
            self.request(pool_request(self.snapshot, -1))
