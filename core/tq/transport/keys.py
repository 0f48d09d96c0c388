"""Every Redis key and channel the transport touches, spelled in one place.

kombu's layout (see the wire spec, section 0): queue lists with priority suffixes, the
``unacked`` hash and ``unacked_index`` sorted set, the restore mutex, the ``_kombu.binding.*``
sets, fanout channels ``/<db>.<exchange>[/<routing key>]``, pidbox and reply queues; plus tq's
own ``tq.*`` keys. ``global_keyprefix`` is applied to every key and channel, never to values.
Pure: imports nothing from tq.
"""

from __future__ import annotations

from dataclasses import dataclass

#: kombu's separator for priority queue names and binding members.
SEP = "\x06\x16"
#: kombu's priority steps; a message goes to the greatest step <= its priority.
PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)

UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
UNACKED_MUTEX = "unacked_mutex"
BINDING_DEADLINES = "_kombu.binding_deadlines"

#: tq's dead-letter list: entries are ``<meta JSON>\n<original bytes>``.
DEAD = "tq.dead"
#: Counter behind dead-letter ids.
DEAD_SEQ = "tq.dead.seq"
#: Revoked task ids (ZSET scored by expiry time) so a worker that was offline still honours
#: a revoke; Celery ignores it.
REVOKED = "tq.revoked"
#: The console's action log (LIST of JSON, newest first, trimmed).
ACTIONS = "tq.actions"

CONTROL_EXCHANGE = "celery"
EVENT_EXCHANGE = "celeryev"


def step_for(priority: int, steps: tuple[int, ...] = PRIORITY_STEPS) -> int:
    """The priority step a priority lands in (0..2 → 0, 3..5 → 3, ...)."""
    chosen = steps[0]
    for s in steps:
        if s <= priority:
            chosen = s
    return chosen


@dataclass(frozen=True, slots=True)
class Keys:
    """Key and channel names for one broker connection (``prefix`` = ``global_keyprefix``)."""

    prefix: str = ""
    db: int = 0
    steps: tuple[int, ...] = PRIORITY_STEPS

    @property
    def unacked(self) -> str:
        return self.prefix + UNACKED

    @property
    def unacked_index(self) -> str:
        return self.prefix + UNACKED_INDEX

    @property
    def unacked_mutex(self) -> str:
        return self.prefix + UNACKED_MUTEX

    @property
    def dead(self) -> str:
        return self.prefix + DEAD

    @property
    def dead_seq(self) -> str:
        return self.prefix + DEAD_SEQ

    @property
    def revoked(self) -> str:
        return self.prefix + REVOKED

    @property
    def actions(self) -> str:
        return self.prefix + ACTIONS

    @property
    def binding_deadlines(self) -> str:
        return self.prefix + BINDING_DEADLINES

    def queue(self, name: str, priority: int = 0) -> str:
        """The list key for ``name`` at ``priority``."""
        step = step_for(priority, self.steps)
        return self.prefix + name + (f"{SEP}{step}" if step else "")

    def queue_keys(self, name: str) -> list[str]:
        """The list keys of a queue, one per priority step, in pop order."""
        return [self.prefix + name + (f"{SEP}{s}" if s else "") for s in self.steps]

    def pop_order(self, queues: list[str]) -> list[tuple[str, str]]:
        """``(list key, queue)`` pairs in kombu's priority-major BRPOP order."""
        return [
            (self.prefix + q + (f"{SEP}{s}" if s else ""), q) for s in self.steps for q in queues
        ]

    def binding(self, exchange: str) -> str:
        return f"{self.prefix}_kombu.binding.{exchange}"

    def binding_permanent(self, exchange: str) -> str:
        return f"{self.prefix}_kombu.binding_permanent.{exchange}"

    def fanout_channel(self, exchange: str, routing_key: str = "") -> str:
        """The Pub/Sub channel of a fanout exchange (``/<db>.<exchange>[/<routing key>]``)."""
        base = f"{self.prefix}/{self.db}.{exchange}"
        return f"{base}/{routing_key}" if routing_key else base

    # Remote control ("pidbox") names.
    def pidbox_exchange(self, control_exchange: str = CONTROL_EXCHANGE) -> str:
        return f"{control_exchange}.pidbox"

    def reply_exchange(self, control_exchange: str = CONTROL_EXCHANGE) -> str:
        return f"reply.{control_exchange}.pidbox"

    def pidbox_queue(self, nodename: str, control_exchange: str = CONTROL_EXCHANGE) -> str:
        return f"{nodename}.{control_exchange}.pidbox"

    def reply_queue(self, oid: str, control_exchange: str = CONTROL_EXCHANGE) -> str:
        return f"{oid}.reply.{control_exchange}.pidbox"


def binding_member(routing_key: str, pattern: str, queue: str) -> str:
    """A member of ``_kombu.binding.<exchange>``: ``<routing key>SEP<pattern>SEP<queue>``."""
    return f"{routing_key}{SEP}{pattern}{SEP}{queue}"


def parse_binding_member(member: str) -> tuple[str, str, str]:
    """``(routing key, pattern, queue)`` of a binding member."""
    parts = member.split(SEP)
    if len(parts) != 3:
        return "", "", member
    return parts[0], parts[1], parts[2]
