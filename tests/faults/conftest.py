"""Fixtures of the fault suite (see ``harness.py``): a session ledger server, a per-test
``rig`` with its own AOF-persistent broker, and a clean environment (no ``TQ_*`` variable of
the developer's leaks into the producer apps or the worker subprocesses)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.faults.harness import Ledger, RedisServer, Rig


@pytest.fixture(scope="session")
def ledger_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The counting ledger: a second private redis-server, apart from every broker."""
    if not os.path.exists("/usr/bin/redis-server"):
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("ledger"), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_tq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TQ_"):
            monkeypatch.delenv(name)


@pytest.fixture
def ledger(ledger_server: RedisServer) -> Iterator[Ledger]:
    client = ledger_server.client()
    client.flushall()
    yield Ledger(client)
    client.close()


@pytest.fixture
def rig(tmp_path: Path, ledger_server: RedisServer, ledger: Ledger) -> Iterator[Rig]:
    made = Rig(tmp_path, ledger_server, ledger)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """A dict a test fills with the figures its row reports; printed (``-s``) and appended
    as one JSON line to ``$FAULT_FIGURES`` when set (docs/faults.md is written from them)."""
    data: dict[str, object] = {}
    yield data
    if not data:
        return
    import json

    line = json.dumps({"test": request.node.nodeid, **data}, default=str)
    print(f"\nFIGURES {line}")
    path = os.environ.get("FAULT_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
