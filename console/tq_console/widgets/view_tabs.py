"""``ViewTabs``: the row of views with their keys, the current one highlighted (k9s's crumbs).

Each tab is clickable and runs ``app.switch_view``. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.content import Content
from textual.widgets import Static


class ViewTabs(Static):
    """``1 overview  2 queues  …`` with the active view shown inverted.

    Args:
        views: ``(key, name, title)`` for every view, in order.
        active: The name of the view this bar belongs to.
    """

    def __init__(self, views: Sequence[tuple[str, str, str]], active: str) -> None:
        super().__init__(self._content(views, active), markup=False)

    @staticmethod
    def _content(views: Sequence[tuple[str, str, str]], active: str) -> Content:
        parts: list[Content] = []
        for key, name, _title in views:
            style = "bold reverse $accent" if name == active else ""
            tab = Content.assemble(
                (f" {key}", "bold $accent" if name != active else style), (f" {name} ", style)
            )
            parts.append(tab.stylize(f"@click=app.switch_view('{name}')"))
        return Content("").join(parts)
