"""Runtime: builds the worker's parts, starts them in a written order and stops them in
reverse; ``snapshot()`` for the console; the command API (purge, revoke, retry, requeue_dead,
grow/shrink, add/cancel consumer, pause/resume, set_rate_limit).

Start order: pool (forks children before any thread exists), controller, consumer thread,
control thread, beat, heartbeat. Stop order is the reverse; see ``stop``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tq.exceptions import SecurityError, TransportError
from tq.transport.redis import RedisTransport
from tq.worker.commands import BrokerCommands
from tq.worker.consumer import Consumer
from tq.worker.controller import Controller
from tq.worker.events import WorkerEvents
from tq.worker.pool import PoolOptions, create_pool
from tq.worker.snapshot import CommandResult, Snapshot
from tq.worker.snapshot_builder import build_snapshot

logger = logging.getLogger(__name__)

#: SUCCESS results up to this many bytes of meta JSON are written by the controller in
#: batches instead of by each child (one round trip for many results).
DEFER_RESULT_LIMIT = 16 * 1024


@dataclass(slots=True)
class RuntimeOptions:
    """Worker options (the CLI flags of ``tq-console --worker``)."""

    concurrency: int | None = None
    pool: str = "prefork"
    queues: list[str] = field(default_factory=list)
    hostname: str = ""
    task_events: bool | None = None
    autoscale: tuple[int, int] | None = None
    optimization: str = "default"  # "fair": dispatch only to idle children (tq always does)
    beat: bool = False
    install_signal_handlers: bool = True
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    prefetch_multiplier: int | None = None
    restore_interval: float | None = None  # seconds between visibility-timeout sweeps
    #: On a cold shutdown, seconds running tasks get to finish (worker_soft_shutdown_timeout)
    soft_shutdown_timeout: float | None = None
    heartbeat_interval: float | None = None
    remote_control: bool | None = None
    watch_cluster: bool = False  # follow every worker's events (the console turns it on)


def default_hostname(name: str = "") -> str:
    host = socket.gethostname()
    if not name:
        return f"celery@{host}"
    return (
        name.replace("%h", host).replace("%n", host.split(".")[0])
        if "@" in name
        else (f"{name}@{host}")
    )


class Runtime(BrokerCommands):
    """One worker: controller, pool, consumer, control, events (and beat with ``-B``)."""

    def __init__(self, app: Any, options: RuntimeOptions | None = None) -> None:
        self.app = app
        self.options = options or RuntimeOptions()
        o = self.options
        conf = app.conf
        o.hostname = default_hostname(o.hostname or conf.worker_hostname or "")
        if o.concurrency is None:
            o.concurrency = int(conf.worker_concurrency or os.cpu_count() or 1)
        if o.prefetch_multiplier is not None:
            conf.worker_prefetch_multiplier = o.prefetch_multiplier
        if o.max_tasks_per_child is None:
            o.max_tasks_per_child = conf.worker_max_tasks_per_child
        if o.max_memory_per_child is None:
            o.max_memory_per_child = conf.worker_max_memory_per_child
        if o.autoscale:
            o.concurrency = max(min(o.concurrency, o.autoscale[0]), o.autoscale[1])
        self.queues: list[str] = list(o.queues or [conf.task_default_queue])
        self.paused: set[str] = set()
        self.state = "created"
        self.events = WorkerEvents(
            app,
            o.hostname,
            bool(o.task_events if o.task_events is not None else conf.worker_send_task_events),
        )
        self.pool = create_pool(
            o.pool,
            PoolOptions(
                concurrency=o.concurrency,
                initializer="tq.worker.trace:child_init",
                initargs=(app, o.hostname, DEFER_RESULT_LIMIT if o.pool == "prefork" else 0),
                target="tq.worker.trace:run_job",
                max_tasks_per_child=o.max_tasks_per_child,
                max_memory_per_child=o.max_memory_per_child,
            ),
        )
        self.controller: Controller | None = None
        self.consumer: Consumer | None = None
        self.broker_ok = True
        self.broker_error: str | None = None
        self.started_at = time.time()
        self._stop_requested = threading.Event()
        self._cold = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._extras: list[Any] = []  # control thread, beat … (objects with stop())
        self._last = {"renew": 0.0, "restore": 0.0, "heartbeat": 0.0, "autoscale": 0.0}
        self._idle_since = time.monotonic()
        self.cluster: Any = None

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def hostname(self) -> str:
        return self.options.hostname

    def start(self) -> None:
        """Start every part; returns once the worker consumes (runs in a background thread)."""
        from tq import signals

        self.state = "starting"
        self._startup_checks()
        signals.worker_init.send(sender=self)
        self.pool.start()  # fork before any thread of ours exists
        self.controller = Controller(self.app, self.pool, self.options, self.events)
        self.controller.on_tick(self._housekeeping)
        self._load_stored_revokes()
        consumer_transport = RedisTransport(self.app.conf.broker_url, self.app._transport_options())
        self._sweep()
        self.consumer = Consumer(
            consumer_transport,
            self.consuming_queues,
            self.controller.credit,
            self.controller.deliver,
            self.controller.credit_event,
            self._on_connection,
            self.controller.prefetch_limit,
        )
        self._declare_queues()
        self._thread = threading.Thread(
            target=self._run_controller, name="tq-controller", daemon=True
        )
        self._thread.start()
        self.consumer.start()
        self._start_extras()
        self.events.worker("worker-online", freq=self._heartbeat_interval())
        self.state = "running"
        signals.worker_ready.send(sender=self)

    def _startup_checks(self) -> None:
        """Test clock hook, root/pickle refusal (raises ``SecurityError``), warnings about
        exposure, eviction and clock skew (``startup_checks``); before the pool forks."""
        from tq.clock import install_env_offset
        from tq.worker.startup_checks import run_checks

        offset = install_env_offset()
        if offset:
            logger.warning("TQ_CLOCK_OFFSET: this process's clock is shifted by %+.1f s", offset)
        run_checks(self.app, time.time)

    def _declare_queues(self) -> None:
        """Declare the consumed queues' bindings; a broker that refuses (at maxmemory, T14)
        does not stop the worker: consuming needs no binding, and draining frees memory."""
        for queue in self.queues:
            try:
                self.app.transport.declare_queue(queue)
            except TransportError as exc:
                logger.warning("Could not declare queue %r (consuming anyway): %s", queue, exc)

    def _load_stored_revokes(self) -> None:
        """Honour revokes broadcast while this worker was offline (``tq.revoked``)."""
        assert self.controller is not None
        transport = self.app.transport
        try:
            now = transport.server_time()
            ids = transport.client.zrangebyscore(transport.keys.revoked, now, "+inf")
        except Exception as exc:
            logger.warning("Could not read stored revokes: %s", exc)
            return
        for raw in ids:
            self.controller.revoked.add(raw.decode() if isinstance(raw, bytes) else raw, now)
        if ids:
            logger.info("Loaded %d revoked task id(s) from %s", len(ids), transport.keys.revoked)

    def _start_extras(self) -> None:
        enable = self.options.remote_control
        if enable is None:
            enable = bool(self.app.conf.worker_enable_remote_control)
        if enable:
            from tq.worker.control import ControlServer

            server = ControlServer(self)
            server.start()
            self._extras.append(server)
        if self.options.watch_cluster:
            from tq.worker.cluster import ClusterWatcher

            self.cluster = ClusterWatcher(self.app)
            self.cluster.start()
            self._extras.append(self.cluster)
        if self.options.beat:
            from tq.worker.embedded_beat import EmbeddedBeat

            beat = EmbeddedBeat(self.app)
            beat.start()
            self._extras.append(beat)

    def _run_controller(self) -> None:
        assert self.controller is not None
        try:
            self.controller.run_forever(self._stopped.is_set)
        except Exception:
            logger.exception("Controller loop died")
            self._stopped.set()

    def run(self) -> int:
        """Start and block until stopped (headless ``--worker``); returns the exit code."""
        if self.options.install_signal_handlers:
            self.install_signal_handlers()
        try:
            self.start()
        except SecurityError as exc:
            logger.critical("%s", exc)
            return 1
        try:
            while not self._stop_requested.wait(0.5):
                if self._stopped.is_set():
                    return 1
        except KeyboardInterrupt:
            self._stop_requested.set()
        self.stop()
        return 0

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: warm shutdown; a second one: cold. SIGQUIT: cold."""

        def warm(signum: int, frame: Any) -> None:
            if self._stop_requested.is_set():
                logger.warning("Second %s: cold shutdown", signal.Signals(signum).name)
                self._cold.set()
            else:
                logger.warning("worker: Warm shutdown (%s)", signal.Signals(signum).name)
                self._stop_requested.set()

        def cold(signum: int, frame: Any) -> None:
            logger.warning("worker: Cold shutdown (%s)", signal.Signals(signum).name)
            self._cold.set()
            self._stop_requested.set()

        signal.signal(signal.SIGTERM, warm)
        signal.signal(signal.SIGINT, warm)
        signal.signal(signal.SIGQUIT, cold)

    def request_stop(self, cold: bool = False) -> None:
        if cold:
            self._cold.set()
        self._stop_requested.set()

    def stop(self, timeout: float = 60.0, cold: bool = False) -> None:
        """Warm shutdown: stop consuming, give back unstarted messages, let running tasks
        finish (up to ``timeout``), then stop the pool. ``cold`` skips the waiting."""
        from tq import signals

        if self.state in ("stopping", "stopped"):
            return
        if cold:
            self._cold.set()
        self.state = "stopping"
        signals.worker_shutting_down.send(sender=self)
        for extra in reversed(self._extras):
            extra.stop()
        controller = self.controller
        if self.consumer is not None:
            self.consumer.stop()
        if controller is not None:
            self._give_back_and_wait(controller, timeout)
        self._stopped.set()
        if controller is not None:
            controller.wake()  # out of its wait now, not at the next tick
        if self._thread is not None:
            self._thread.join(5)
        if controller is not None and not (self._thread and self._thread.is_alive()):
            # Anything that reached the controller after the first release (a delivery in
            # flight from the consumer) goes back too; the loop has ended, so call directly.
            self._log_restored(controller.release_unstarted())
        if controller is not None and controller.active:
            self._abandon_active(controller)
        else:
            self.pool.stop(5.0)
        if controller is not None:
            controller.flush()
            controller.close()
        self.events.worker("worker-offline")
        self.state = "stopped"
        signals.worker_shutdown.send(sender=self)
        self._stop_requested.set()

    def _give_back_and_wait(self, controller: Controller, timeout: float) -> None:
        """Stop dispatching, restore what has not started, wait for running tasks."""
        controller.stopping = True
        self._log_restored(controller.call(controller.release_unstarted, timeout=30))
        deadline = time.monotonic() + timeout
        soft_until: float | None = None
        while controller.active and time.monotonic() < deadline:
            if self._cold.is_set():
                if soft_until is None:
                    soft = self._soft_shutdown_timeout()
                    if soft <= 0:
                        break
                    logger.warning(
                        "Soft shutdown: %d running task(s) get %.1f s to finish",
                        len(controller.active),
                        soft,
                    )
                    soft_until = time.monotonic() + soft
                if time.monotonic() >= soft_until:
                    break
            time.sleep(0.05)

    def _soft_shutdown_timeout(self) -> float:
        value = self.options.soft_shutdown_timeout
        if value is None:
            value = self.app.conf.worker_soft_shutdown_timeout
        return float(value or 0.0)

    @staticmethod
    def _log_restored(restored: int) -> None:
        if restored:
            logger.warning("Restoring %d unacknowledged message(s)", restored)

    def _abandon_active(self, controller: Controller) -> None:
        """Cold shutdown (or a warm one past its timeout): kill the children; tasks that were
        not acknowledged go back to their queues, so nothing unfinished is acknowledged."""
        self.pool.kill()
        late = [r for r in controller.active.values() if not r.acknowledged]
        for req in late:
            try:
                controller.transport.requeue(req.tag, front=True)
            except Exception:
                logger.exception("Could not restore %s; it stays in unacked", req.tag)
        if late:
            logger.warning("Restoring %d unacknowledged message(s)", len(late))
        lost = len(controller.active) - len(late)
        if lost:
            logger.warning("%d running task(s) were acknowledged early and did not finish", lost)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    # -- housekeeping (controller thread) -----------------------------------------------------
    def _heartbeat_interval(self) -> float:
        return float(self.options.heartbeat_interval or self.app.conf.worker_heartbeat_interval)

    def _on_connection(self, ok: bool, error: str | None) -> None:
        self.broker_ok = ok
        self.broker_error = error
        if ok and self.controller is not None:
            # After an outage, restore our own unstarted deliveries is not needed (we still
            # hold them); renew their leases at once so no sweep takes them.
            self._last["renew"] = 0.0
            self._redeclare()

    def _redeclare(self) -> None:
        """After an outage: a broker that came back empty (no persistence, an empty replica)
        lost the queue bindings kombu producers route by; declare them again and say so."""
        try:
            missing = self.app.transport.redeclare()
        except TransportError as exc:
            logger.warning("Could not check the queue bindings after reconnecting: %s", exc)
            return
        if missing:
            logger.warning(
                "Broker state was reset (the bindings of %s were gone): declared them again; "
                "messages the broker held before the outage are lost",
                ", ".join(missing),
            )

    def _housekeeping(self, now: float) -> None:
        c = self.controller
        assert c is not None
        vt = c.transport.visibility_timeout
        last = self._last
        if now - last["renew"] >= max(min(vt / 4, 60.0), 0.5):
            last["renew"] = now
            tags = c.held_tags()
            if tags:
                c.transport.renew(tags)
        restore_every = self.options.restore_interval or max(min(vt / 2, 60.0), 1.0)
        if now - last["restore"] >= restore_every:
            last["restore"] = now
            self._sweep()
        if now - last["heartbeat"] >= self._heartbeat_interval():
            last["heartbeat"] = now
            self.events.worker(
                "worker-heartbeat", active=len(c.active), freq=self._heartbeat_interval()
            )
        if self.options.autoscale and now - last["autoscale"] >= 1.0:
            last["autoscale"] = now
            self._autoscale(c)

    def _sweep(self) -> None:
        try:
            self.app.transport.restore_visible()
        except Exception as exc:
            logger.warning("Visibility-timeout sweep failed: %s", exc)

    def _autoscale(self, c: Controller) -> None:
        assert self.options.autoscale is not None
        high, low = self.options.autoscale
        size = self.pool.size()
        if c.reserved and size < high:
            self.pool.grow(min(len(c.reserved), high - size))
            self._idle_since = time.monotonic()
        elif not c.reserved and self.pool.idle() > 0 and size > low:
            if time.monotonic() - self._idle_since > 5.0:
                self.pool.shrink(1)
                self._idle_since = time.monotonic()
        else:
            self._idle_since = time.monotonic()

    # -- reading ------------------------------------------------------------------------------
    def consuming_queues(self) -> list[str]:
        return [q for q in self.queues if q not in self.paused]

    def snapshot(self) -> Snapshot:
        """Everything the console shows; cheap (bounded, no key scans), thread-safe."""
        return build_snapshot(self)

    # -- commands -----------------------------------------------------------------------------
    def _ctl(self) -> Controller:
        if self.controller is None:
            raise RuntimeError("the runtime is not started")
        return self.controller

    def revoke(
        self, task_id: str | list[str], terminate: bool = False, signal: str | int = "SIGTERM"
    ) -> CommandResult:
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        signum = _signum(signal)
        c = self._ctl()
        terminated = c.call(lambda: c.revoke(ids, terminate, signum))
        backend = self.app.backend
        if backend is not None:
            for tid in ids:
                if tid not in terminated and not c.is_active(tid):
                    backend.mark_revoked_if_unready(tid)
        word = f"; terminated {len(terminated)}" if terminate else ""
        return CommandResult(True, f"tasks {ids} flagged as revoked{word}", len(ids), terminated)

    def retry(self, task_id: str) -> CommandResult:
        """Send a finished (failed) task again with its original name, args, kwargs, queue."""
        c = self._ctl()
        with c.lock:
            found = next((r for r in reversed(c.recent) if r.id == task_id), None)
        if found is None:
            return CommandResult(False, f"task {task_id} is not among this worker's recent tasks")
        env = found.envelope
        text = deadletter_retry_text(env)
        self.app.transport.publish(text, found.queue, env.priority)
        return CommandResult(True, f"re-sent {found.name}[{task_id}] to {found.queue!r}", 1)

    def grow(self, n: int = 1) -> CommandResult:
        c = self._ctl()
        size = c.call(lambda: self.pool.grow(n))
        c.credit_event.set()
        return CommandResult(True, f"pool will grow: {size} process(es)", size)

    def shrink(self, n: int = 1) -> CommandResult:
        c = self._ctl()
        size = c.call(lambda: self.pool.shrink(n))
        return CommandResult(True, f"pool will shrink: {size} process(es)", size)

    def add_consumer(self, queue: str) -> CommandResult:
        if queue not in self.queues:
            self.queues.append(queue)
            self.app.transport.declare_queue(queue)
        self.paused.discard(queue)
        self._ctl().credit_event.set()
        return CommandResult(True, f"add consumer {queue}")

    def cancel_consumer(self, queue: str) -> CommandResult:
        if queue not in self.queues:
            return CommandResult(False, f"not consuming from {queue}")
        self.queues.remove(queue)
        self.paused.discard(queue)
        return CommandResult(True, f"no longer consuming from {queue}")

    def pause_queue(self, queue: str) -> CommandResult:
        if queue not in self.queues:
            return CommandResult(False, f"not consuming from {queue}")
        self.paused.add(queue)
        return CommandResult(True, f"paused consuming from {queue}")

    def resume_queue(self, queue: str) -> CommandResult:
        if queue not in self.paused:
            return CommandResult(False, f"{queue} is not paused")
        self.paused.discard(queue)
        self._ctl().credit_event.set()
        return CommandResult(True, f"resumed consuming from {queue}")

    def beat_entries(self) -> tuple[Any, ...]:
        from tq.worker.embedded_beat import EmbeddedBeat

        for extra in self._extras:
            if isinstance(extra, EmbeddedBeat):
                try:
                    return extra.entries()
                except Exception:
                    logger.warning("Could not read beat entries", exc_info=True)
        return ()

    def trigger_beat(self, entry_name: str) -> CommandResult:
        from tq.worker.embedded_beat import EmbeddedBeat

        for extra in self._extras:
            if isinstance(extra, EmbeddedBeat):
                try:
                    task_id = extra.trigger(entry_name)
                except Exception as exc:
                    return CommandResult(False, f"could not trigger {entry_name!r}: {exc}")
                return CommandResult(True, f"sent {entry_name!r} now as task {task_id}", 1)
        return CommandResult(False, "beat is not embedded in this worker (start it with -B)")

    def set_rate_limit(self, task_name: str, rate: str | None) -> CommandResult:
        from tq.exceptions import ConfigurationError

        c = self._ctl()
        if task_name not in self.app.tasks:
            return CommandResult(False, f"unknown task {task_name!r}")
        try:
            c.call(lambda: c.set_rate(task_name, rate))
        except ConfigurationError as exc:
            return CommandResult(False, str(exc))
        self.app.tasks[task_name].rate_limit = rate  # as Celery: inspect registered shows it
        if not rate or rate in ("0", 0):
            return CommandResult(True, f"rate limit disabled for {task_name}")
        return CommandResult(True, f"new rate limit set for {task_name}: {rate}")


def deadletter_retry_text(env: Any) -> str:
    """The original message as a fresh delivery (new tag, not redelivered, retries kept)."""
    from tq.protocol.envelope import build_envelope, new_tag

    props = dict(env.properties)
    props["delivery_tag"] = new_tag()
    info = dict(props.get("delivery_info") or {})
    info.pop("redelivered", None)
    props["delivery_info"] = info
    headers = {k: v for k, v in env.headers.items() if k != "redelivered"}
    return build_envelope(env.body, env.content_type, env.content_encoding, headers, props)


def _signum(sig: str | int) -> int:
    if isinstance(sig, int):
        return sig
    name = sig.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    return int(getattr(signal, name, signal.SIGTERM))
