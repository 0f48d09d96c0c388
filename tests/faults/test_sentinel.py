"""A ``sentinel://`` broker that fails over in the middle of a drain: a real primary, a replica
and three sentinels (``redis-server --sentinel``) on loopback. The primary is SIGKILLed; the
sentinels promote the replica; the worker must follow the new primary by itself.

Replication is asynchronous, so the last writes before the kill (pops, acks) may be missing on
the replica. A missing ack brings a finished message back (a duplicate, restored by the sweep
after the visibility timeout); a missing pop leaves the message on the list (a duplicate if it
had run). Neither loses a message: the publishes were replicated (``WAIT``) before the kill.
"""

from __future__ import annotations

import time

import pytest
from tests.faults.harness import RedisServer, Rig, is_answering, publish_many, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MASTER = "mymaster"
VT_S = 5.0


def _sentinel(rig: Rig, name: str, primary_port: int) -> RedisServer:
    server = rig.server(name, start=False, sentinel=True)
    (server.directory / "sentinel.conf").write_text(
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 4000\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )
    server.start()
    return server


def _master_port(sentinel: RedisServer) -> int | None:
    client = sentinel.client(socket_timeout=1)
    try:
        addr = client.sentinel_get_master_addr_by_name(MASTER)
    except Exception:
        return None
    finally:
        client.close()
    return int(addr[1]) if isinstance(addr, tuple | list) else None


def _sentinels_ready(sentinels: list[RedisServer]) -> bool:
    """Every sentinel knows the replica and the two other sentinels."""
    for s in sentinels:
        client = s.client(socket_timeout=1)
        try:
            info = client.sentinel_master(MASTER)
        finally:
            client.close()
        if (
            not isinstance(info, dict)
            or int(info["num-slaves"]) < 1
            or int(info["num-other-sentinels"]) < 2
        ):
            return False
    return True


@pytest.mark.timeout(300)
def test_worker_follows_a_sentinel_failover_mid_drain_and_loses_nothing(
    rig: Rig, figures: dict[str, object]
) -> None:
    primary = rig.broker
    replica = rig.server("replica", extra=["--replicaof", "127.0.0.1", str(primary.port)])
    wait_until(
        lambda: primary.client().info("replication").get("connected_slaves") == 1,
        30,
        "the replica to attach",
    )
    sentinels = [_sentinel(rig, f"sentinel{i}", primary.port) for i in range(3)]
    wait_until(lambda: _sentinels_ready(sentinels), 60, "the sentinels to see each other")
    url = ";".join(f"sentinel://127.0.0.1:{s.port}/0" for s in sentinels)
    transport = {"master_name": MASTER}
    app = rig.app(vt=VT_S, transport=transport, broker_url=url)
    worker = rig.worker(concurrency=2, vt=VT_S, transport=transport, broker_url=url)
    ids = publish_many(app, "fault.work", 2000, kwargs={"seconds": 0.01})
    assert primary.client().wait(1, 5000) == 1  # every publish is on the replica too
    wait_until(lambda: rig.ledger.done_count() >= 300, 60, "the drain to be under way")
    primary.kill()
    killed = time.monotonic()
    wait_until(lambda: _master_port(sentinels[0]) == replica.port, 60, "the failover")
    failover_s = time.monotonic() - killed
    rig.broker = replica  # what drain() and unacked() read from now on
    wait_until(lambda: is_answering(app, worker.nodename), 60, "ping through the new primary")
    ping_s = time.monotonic() - killed
    counts = rig.drain(app, ids, 180, grace=2 * VT_S)
    why = f"{counts.line()}\n{rig.logs()}"
    assert counts.lost == 0, why
    assert counts.stranded == 0 and counts.queued == 0, why
    assert worker.is_alive()
    figures.update(
        row="sentinel",
        failover_s=round(failover_s, 2),
        ping_after_kill_s=round(ping_s, 2),
        **counts.figures(),
    )
