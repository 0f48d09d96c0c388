"""The console's screens: one ``ViewScreen`` per view plus the modals.

``VIEWS`` lists the views in tab order with the key that switches to each.
"""

from __future__ import annotations

from tq_console.screens.action_log import ActionLogScreen
from tq_console.screens.base import ViewScreen
from tq_console.screens.beat import BeatScreen
from tq_console.screens.buckets import BucketsScreen
from tq_console.screens.dead_letters import DeadLettersScreen
from tq_console.screens.events import EventsScreen
from tq_console.screens.overview import OverviewScreen
from tq_console.screens.pool import PoolScreen
from tq_console.screens.queues import QueuesScreen
from tq_console.screens.tasks import TasksScreen
from tq_console.screens.timers import TimersScreen
from tq_console.screens.unacked import UnackedScreen
from tq_console.screens.workers import WorkersScreen

#: (key, screen class) for every view, in tab order.
VIEWS: tuple[tuple[str, type[ViewScreen]], ...] = (
    ("1", OverviewScreen),
    ("2", QueuesScreen),
    ("3", UnackedScreen),
    ("4", TasksScreen),
    ("5", PoolScreen),
    ("6", TimersScreen),
    ("7", BucketsScreen),
    ("8", WorkersScreen),
    ("9", DeadLettersScreen),
    ("0", EventsScreen),
    ("b", BeatScreen),
    ("a", ActionLogScreen),
)

__all__ = ["VIEWS", "ActionLogScreen", "ViewScreen"]
