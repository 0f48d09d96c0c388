"""The wire format: envelopes, protocol-2 task messages, serializers, compression, events and
control messages. Pure: imports nothing from tq but ``tq.exceptions``."""

from __future__ import annotations

from tq.protocol.envelope import Envelope, build_envelope, parse_envelope
from tq.protocol.message import TaskHeaders, TaskSpec, build_task, decode_task_body

__all__ = [
    "Envelope",
    "TaskHeaders",
    "TaskSpec",
    "build_envelope",
    "build_task",
    "decode_task_body",
    "parse_envelope",
]
