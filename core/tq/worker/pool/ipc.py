"""Framing of supervisor ↔ child messages: pickled tuples over a ``multiprocessing`` pipe.

To a child: ``(job_id, payload)`` or ``STOP``. From a child: ``(job_id, value, exiting)``.
Payloads are small by design (the task body stays raw bytes; results go to Redis from the
child, so only a summary comes back).
"""

from __future__ import annotations

import pickle
from typing import Any

STOP = b"\x00stop"


def dumps(message: Any) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    # Only our own processes write to these pipes.
    return pickle.loads(data)
