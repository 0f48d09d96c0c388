"""Each view shows the right rows for the recorded state, and follows new snapshots cell by cell."""

from __future__ import annotations

import pytest
from driving import SIZE, column, make_app, press, refresh, row_keys, settle, table
from recorded import FAILED_TASK_ID, HOSTNAME, recorded_snapshot, recorded_snapshots, task_id
from textual.widgets import Static

from tq_console import format as fmt
from tq_console.widgets.failure_banner import FailureBanner
from tq_console.widgets.keyed_table import KeyedTable
from tq_console.widgets.stat import Stat
from tq_console.widgets.status_bar import StatusBar

pytestmark = pytest.mark.console

LAST = recorded_snapshot(4)


async def test_overview_shows_counters_queues_pool_broker_and_events() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.current_mode == "overview"
        screen = app.screen
        assert screen.query_one("#stat-received", Stat).value == fmt.count(LAST.counters.received)
        assert screen.query_one("#stat-failed", Stat).value == "311"
        assert screen.query_one("#stat-rate", Stat).value == fmt.rate(LAST.counters.rate)
        queues = str(screen.query_one("#queue-bars", Static).render())
        assert "default" in queues and "paused" in queues
        pool = str(screen.query_one("#pool-meter", Static).render())
        assert "2/4 busy" in pool and "images.resize" in pool
        broker = str(screen.query_one("#broker-status", Static).render())
        assert (
            "reachable" in broker and "0.46 ms" in broker and "redis://localhost:6379/0" in broker
        )
        tail = str(screen.query_one("#event-tail", Static).render())
        assert "worker-heartbeat" in tail
        status = str(screen.query_one(StatusBar).render())
        assert HOSTNAME in status and "prefork" in status and "running" in status


async def test_queues_view_lists_every_queue_with_priorities_and_unacked_age() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2")
        assert app.current_mode == "queues"
        assert row_keys(pilot) == [q.name for q in LAST.queues]
        assert column(pilot, "ready")[0] == fmt.count(LAST.queues[0].ready)
        assert column(pilot, "p3")[0] == "96"
        assert column(pilot, "state")[3] == "‖ paused"
        oldest = table(pilot).get_cell("reports", "oldest")
        assert "56m" in oldest.plain and "#F0506E" in str(
            oldest.spans[0].style
        )  # red: near timeout
        emails = table(pilot).get_cell("emails", "oldest")
        assert "#FFA62B" in str(emails.spans[0].style)  # amber


async def test_unacked_view_lists_deliveries_with_restore_countdown() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "3")
        assert row_keys(pilot) == [e.delivery_tag for e in LAST.unacked.entries]
        assert "held" not in column(pilot, "holder")
        assert column(pilot, "holder").count("other") == 1
        assert all(text.startswith("in ") for text in column(pilot, "restore"))


async def test_tasks_view_shows_active_reserved_scheduled_and_recent_once_each() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4")
        keys = row_keys(pilot)
        scheduled = sorted(LAST.scheduled, key=lambda r: r.eta or 0.0)
        recent = sorted(LAST.recent, key=lambda r: -(r.finished_at or r.received_at))
        expected = [r.task_id for r in (*LAST.active, *LAST.reserved, *scheduled, *recent)]
        assert keys == expected
        assert keys[5:8] == [task_id(7), task_id(6), task_id(8)]  # soonest ETA first
        states = column(pilot, "state")
        assert states[0] == "▶ started"
        assert states[keys.index(FAILED_TASK_ID)] == "✘ failure"
        assert "in 3 min" in column(pilot, "age")
        assert column(pilot, "worker")[0] == HOSTNAME


async def test_pool_view_shows_each_child() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "5")
        assert row_keys(pilot) == ["0", "1", "2", "3"]
        assert column(pilot, "pid") == ["48211", "48212", "48213", "50977"]
        assert column(pilot, "state") == ["● busy", "● busy", "○ idle", "○ idle"]
        assert column(pilot, "task")[:2] == ["images.resize", "reports.monthly"]
        assert column(pilot, "rss")[0] == "84.0 MiB"
        assert "7 recycled" in str(app.screen.query_one("#body").border_title)


async def test_timers_view_humanizes_due_times_soonest_first() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "6")
        assert column(pilot, "due") == ["in 4s", "in 37s", "in 3 min", "in 2 h", "in 1 day"]
        assert column(pilot, "kind")[0] == "retry"


async def test_buckets_view_shows_rate_tokens_and_waiting() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "7")
        assert row_keys(pilot) == [b.task_name for b in LAST.buckets]
        assert column(pilot, "rate") == ["10/s", "100/m", "1000/h"]
        assert column(pilot, "waiting") == ["4", "0", "12"]
        assert "3.5 / 10" in column(pilot, "tokens")[0]


async def test_workers_view_lists_cluster_nodes_online_first() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "8")
        assert row_keys(pilot) == [HOSTNAME, "tq@worker-2", "celery@legacy-1"]
        assert column(pilot, "status") == ["● online", "● online", "○ offline"]
        assert column(pilot, "software")[2] == "py-celery 5.4.0"


async def test_dead_letters_view_lists_entries_newest_first() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "9")
        assert row_keys(pilot) == ["dl-0004", "dl-0003", "dl-0002", "dl-0001"]
        assert column(pilot, "reason")[1] == "unknown task reports.legacy_export"


async def test_events_view_is_a_live_log_following_the_newest_event() -> None:
    app, _ = make_app(recorded_snapshots(), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "0")
        log = table(pilot)
        assert log.row_count == len(recorded_snapshot(0).events)
        assert log.cursor_row == log.row_count - 1
        await refresh(pilot)
        assert log.row_count == len(recorded_snapshot(1).events)
        assert log.cursor_row == log.row_count - 1


async def test_beat_view_lists_entries_by_next_run() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "b")
        assert row_keys(pilot) == [
            "heartbeat-ping",
            "cleanup-every-5m",
            "send-digest",
            "nightly-report",
        ]
        assert column(pilot, "next")[0] == "in 10s"


async def test_action_log_view_reads_the_runtime_log() -> None:
    app, bridge = make_app()
    bridge.record_action("alice@laptop", "purge('default')", "ok: Purged 1312 messages")
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "a")
        assert column(pilot, "who") == ["alice@laptop"]
        assert column(pilot, "what") == ["purge('default')"]


async def test_tables_follow_snapshots_cell_by_cell_without_refilling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_clear(self: KeyedTable, columns: bool = False) -> KeyedTable:
        raise AssertionError("tables must not be cleared and refilled")

    monkeypatch.setattr(KeyedTable, "clear", no_clear)
    app, _ = make_app(recorded_snapshots(), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "2")
        queues = table(pilot)
        row_objects = {key: queues.rows[key] for key in queues.rows}
        queues.move_cursor(row=2)
        before = queues.get_cell("default", "ready").plain
        await refresh(pilot)
        assert queues.get_cell("default", "ready").plain != before
        assert {key: queues.rows[key] for key in queues.rows} == row_objects
        assert queues.cursor_row == 2


async def test_each_view_gets_the_latest_snapshot_when_shown() -> None:
    app, _ = make_app(recorded_snapshots(), interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await refresh(pilot)
        await refresh(pilot)
        await press(pilot, "4")
        status = str(app.screen.query_one(StatusBar).render())
        assert fmt.timestamp(recorded_snapshot(2).taken_at) in status
        assert not app.screen.query_one(FailureBanner).has_class("-failed")
