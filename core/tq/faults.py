"""Test-only fault hooks: ``TQ_FAULT=<point>[,<point>…]`` makes the process exit with code
137 (as if SIGKILLed) when it reaches that point, so the fault suite can hit race windows
deterministically instead of by timing. ``TQ_FAULT_AFTER=N`` skips the first N hits.

Points: ``after_pop`` (a message was popped and recorded in unacked), ``before_ack``
(acknowledgements are about to be sent), ``after_retry_publish`` (a retry was published but
the original not yet acknowledged). Unset (the normal case) costs one dict lookup.
"""

from __future__ import annotations

import os

#: Exit code of a fault (the same as a SIGKILLed process as shells report it).
FAULT_EXIT_CODE = 137


def hit(point: str) -> None:
    """Exit now if ``point`` is armed in ``TQ_FAULT``."""
    armed = os.environ.get("TQ_FAULT")
    if not armed or point not in armed.split(","):
        return
    skip = int(os.environ.get("TQ_FAULT_AFTER", "0") or 0)
    if skip > 0:
        os.environ["TQ_FAULT_AFTER"] = str(skip - 1)
        return
    os._exit(FAULT_EXIT_CODE)
