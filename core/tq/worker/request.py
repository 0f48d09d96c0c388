"""Request: one received task message on the controller side.

Holds the delivery (tag, queue, raw envelope), the parsed headers, and the options the worker
resolved for it (acks_late, time limits, rate limit). Knows how to tell whether it expired,
what to send a pool child, and how to describe itself to ``inspect`` and the console.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tq.protocol.envelope import Envelope
from tq.protocol.message import TaskHeaders

#: Header tq adds to a message it requeues after losing a worker (ignored by Celery).
DELIVERY_HEADER = "x-tq-deliveries"


@dataclass(slots=True)
class Request:
    tag: str
    queue: str
    raw: bytes
    envelope: Envelope
    headers: TaskHeaders
    received_at: float
    task: Any = None  # the registered Task, or None when unknown here
    acks_late: bool = False
    reject_on_worker_lost: bool = False
    acks_on_failure_or_timeout: bool = True
    soft_time_limit: float | None = None
    time_limit: float | None = None
    state: str = "RECEIVED"
    started_at: float | None = None
    worker_pid: int | None = None
    acknowledged: bool = False
    terminated_signal: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.headers.id

    @property
    def name(self) -> str:
        return self.headers.task

    @property
    def eta(self) -> float | None:
        return self.headers.eta.timestamp() if self.headers.eta else None

    @property
    def expires(self) -> float | None:
        return self.headers.expires.timestamp() if self.headers.expires else None

    @property
    def deliveries(self) -> int:
        raw = self.envelope.headers.get(DELIVERY_HEADER) or 0
        return int(raw) if isinstance(raw, int) else 0

    @property
    def redelivered(self) -> bool:
        return bool(
            self.envelope.delivery_info.get("redelivered")
            or self.envelope.headers.get("redelivered")
        )

    def is_expired(self, now: float) -> bool:
        exp = self.expires
        return exp is not None and now >= exp

    def payload(self, ack_first: bool = False, defer: bool = True) -> tuple[Any, ...]:
        """What a pool child needs to run this task (the body stays encoded). With
        ``ack_first`` the runner acknowledges the delivery before the task starts; with
        ``defer`` a small SUCCESS result comes back to the controller to be batched."""
        env = self.envelope
        return (
            self.id,
            self.name,
            env.headers,
            env.body,
            env.content_type,
            env.content_encoding,
            env.delivery_info,
            {
                "priority": env.priority,
                "reply_to": env.properties.get("reply_to"),
                "correlation_id": env.properties.get("correlation_id"),
            },
            self.tag if ack_first else None,
            defer,
        )

    def args_repr(self) -> str:
        return self.headers.argsrepr if self.headers.argsrepr is not None else "?"

    def kwargs_repr(self) -> str:
        return self.headers.kwargsrepr if self.headers.kwargsrepr is not None else "?"

    def info(self, hostname: str, safe: bool = True) -> dict[str, Any]:
        """The request-info dict ``inspect active/reserved`` replies with (Celery's shape)."""
        info = self.envelope.delivery_info
        return {
            "id": self.id,
            "name": self.name,
            "args": self.args_repr() if safe else self._decoded(0),
            "kwargs": self.kwargs_repr() if safe else self._decoded(1),
            "type": self.name,
            "hostname": hostname,
            "time_start": self.started_at,
            "acknowledged": self.acknowledged,
            "delivery_info": {
                "exchange": info.get("exchange", ""),
                "routing_key": info.get("routing_key", self.queue),
                "priority": self.envelope.priority,
                "redelivered": self.redelivered,
            },
            "worker_pid": self.worker_pid,
        }

    def _decoded(self, index: int) -> Any:
        """args (0) or kwargs (1) as values, for ``inspect`` without ``safe``; reprs when the
        body cannot be decoded here."""
        from tq.exceptions import ProtocolError
        from tq.protocol.message import decode_task_body
        from tq.protocol.serializers import JSON

        try:
            args, kwargs, _ = decode_task_body(self.envelope, frozenset({JSON}), 1 << 20)
        except ProtocolError:
            return self.args_repr() if index == 0 else self.kwargs_repr()
        return args if index == 0 else kwargs

    def age(self, now: float | None = None) -> float:
        return (now or time.time()) - self.received_at
