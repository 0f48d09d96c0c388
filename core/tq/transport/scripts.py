"""Loads the Lua files shipped in ``transport/lua`` and registers them once per client."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua`` (read once per process)."""
    return resources.files("tq.transport").joinpath("lua", f"{name}.lua").read_text("utf-8")


class Scripts:
    """The atomic operations, registered on one client (EVALSHA with EVAL fallback)."""

    def __init__(self, client: redis.Redis) -> None:
        self.pop: Any = client.register_script(source("pop"))
        self.renew: Any = client.register_script(source("renew"))
        self.unlock: Any = client.register_script(source("unlock"))
        self.dead_take: Any = client.register_script(source("dead_take"))
