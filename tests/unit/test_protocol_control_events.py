"""Pidbox and event message shapes (tq.protocol.control, tq.protocol.events) against Celery's
captured traffic in ``shared/spec/captures`` (wire spec 5.2, 5.3). Pure: no Redis."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tq.exceptions import ContentDisallowed, DecodeError
from tq.protocol import control, events
from tq.protocol.serializers import JSON, PICKLE

CAPTURES = Path(
    os.environ.get("TQ_CAPTURES", Path(__file__).resolve().parents[1] / "captures")
)


def decoded_views(name: str) -> list[tuple[str, dict[str, Any]]]:
    """``(command line, decoded payload)`` for every ``=>`` view in a capture that decodes."""
    path = CAPTURES / f"{name}.txt"
    if not path.exists():
        pytest.skip(f"capture {path} not available")
    text = path.read_text()
    out: list[tuple[str, dict[str, Any]]] = []
    decoder = json.JSONDecoder()
    lines = text.splitlines(keepends=True)
    offset = 0
    previous = ""
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith("=> "):
            start = offset + line.index("=> ") + 3
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                value = None
            if isinstance(value, dict):
                out.append((previous, value))
        elif stripped.startswith("+"):
            previous = line
        offset += len(line)
    return out


def envelope_from_view(view: dict[str, Any]) -> str:
    """The real envelope text of a decoded capture view (body re-encoded to base64)."""
    data = dict(view)
    body = data.pop("body(decoded from base64)")
    data["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps(data)


def views_of(name: str, command: str, channel: str) -> list[dict[str, Any]]:
    return [v for line, v in decoded_views(name) if f'"{command}" "{channel}' in line]


def assert_same_properties(envelope: dict[str, Any], captured: dict[str, Any]) -> None:
    """Properties equal Celery's, except the random delivery tag (which must be present)."""
    ours = dict(envelope["properties"])
    theirs = dict(captured["properties"])
    assert ours.pop("delivery_tag") and theirs.pop("delivery_tag")
    assert ours == theirs


def raw_envelope(body: Any, content_type: str = JSON) -> str:
    """An envelope around ``body`` (JSON-encoded; a ``bytes`` body is used as it is)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return json.dumps(
        {
            "body": base64.b64encode(data).decode(),
            "content-type": content_type,
            "headers": {},
            "properties": {"body_encoding": "base64", "delivery_tag": "x", "delivery_info": {}},
        }
    )


def reply_view(name: str) -> dict[str, Any]:
    """The first reply a worker LPUSHed in a capture."""
    return next(v for line, v in decoded_views(name) if '"LPUSH"' in line)


def decode(envelope: str) -> tuple[dict[str, Any], Any]:
    data = json.loads(envelope)
    return data, json.loads(base64.b64decode(data["body"]))


# -- control requests -------------------------------------------------------------------------
def test_ping_request_has_the_captured_shape() -> None:
    (captured,) = views_of("inspect_ping", "PUBLISH", "/0.celery.pidbox")
    oid = captured["body(decoded from base64)"]["reply_to"]["routing_key"]
    ticket = captured["body(decoded from base64)"]["ticket"]
    request = control.ControlRequest(
        method="ping",
        ticket=ticket,
        reply_to=control.ReplyTo(control.reply_exchange(), oid),
        clock=1,
        expires=captured["headers"]["expires"],
    )
    envelope, body = decode(control.build_request(request))
    assert body == captured["body(decoded from base64)"]
    assert list(body) == list(captured["body(decoded from base64)"])
    assert envelope["headers"] == captured["headers"]
    assert_same_properties(envelope, captured)
    assert envelope["content-type"] == "application/json"
    assert envelope["content-encoding"] == "utf-8"


def test_request_without_reply_has_no_ticket_or_reply_to() -> None:
    (captured,) = [
        v
        for v in views_of("events_dump", "PUBLISH", "/0.celery.pidbox")
        if v["body(decoded from base64)"]["method"] == "heartbeat"
    ]
    _, body = decode(control.build_request(control.ControlRequest("heartbeat", clock=1)))
    assert body == captured["body(decoded from base64)"]
    assert "ticket" not in body and "reply_to" not in body


@pytest.mark.parametrize(
    ("capture", "method", "arguments", "destination"),
    [
        ("inspect_ping", "ping", {}, None),
        ("inspect_active", "active", {}, None),
        ("control_pool_grow", "pool_grow", {"n": 1}, None),
        ("inspect_flower_set", "registered", {"taskinfoitems": []}, ("w1@lab",)),
        ("mingle_two_workers", "hello", {"from_node": "w2@lab", "revoked": []}, None),
    ],
)
def test_parse_request_reads_celerys_requests(
    capture: str, method: str, arguments: dict[str, Any], destination: tuple[str, ...] | None
) -> None:
    view = views_of(capture, "PUBLISH", "/0.celery.pidbox")[0]
    request = control.parse_request(envelope_from_view(view))
    assert request.method == method
    assert request.arguments == arguments
    assert request.destination == destination
    assert request.wants_reply
    assert request.reply_to is not None
    assert request.reply_to.exchange == "reply.celery.pidbox"
    assert request.clock == view["headers"]["clock"]
    assert request.expires == view["headers"]["expires"]


def test_parse_request_reads_a_revoke_broadcast_without_reply() -> None:
    first = views_of("revoke", "PUBLISH", "/0.celery.pidbox")[0]
    request = control.parse_request(envelope_from_view(first))
    assert request.method == "revoke"
    assert request.arguments == {
        "task_id": "05050cfc-82b6-45c6-a042-7dde60cfed63",
        "terminate": False,
        "signal": "SIGTERM",
    }
    assert not request.wants_reply
    assert request.is_for("anyone@host")


def test_request_round_trips() -> None:
    request = control.ControlRequest(
        method="rate_limit",
        arguments={"task_name": "tasks.add", "rate_limit": "10/s"},
        destination=("a@h", "b@h"),
        ticket="t-1",
        reply_to=control.ReplyTo("reply.celery.pidbox", "oid-1"),
        clock=7,
        expires=123.5,
    )
    assert control.parse_request(control.build_request(request)) == request


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {"arguments": {}},
        {"method": ""},
        {"method": "ping", "arguments": [1]},
        {"method": "ping", "destination": [1, 2]},
        {"method": "ping", "reply_to": "somewhere"},
        {"method": "ping", "pattern": 5},
    ],
)
def test_parse_request_rejects_malformed_bodies(body: Any) -> None:
    with pytest.raises(DecodeError):
        control.parse_request(raw_envelope(body))


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"body": "e30="}', "\x00"])
def test_parse_request_rejects_junk_envelopes(raw: bytes | str) -> None:
    with pytest.raises(DecodeError):
        control.parse_request(raw)


def test_parse_request_refuses_content_types_not_accepted() -> None:
    envelope = raw_envelope(base64.b64decode("gAR9lC4="), PICKLE)
    with pytest.raises(ContentDisallowed):
        control.parse_request(envelope, frozenset({JSON}))


# -- control replies --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        ("inspect_ping", {"w1@lab": {"ok": "pong"}}),
        ("control_pool_grow", {"w1@lab": {"ok": "pool will grow"}}),
        ("mingle_two_workers", {"w1@lab": {"revoked": ["a", "b"], "clock": 52}}),
    ],
)
def test_parse_reply_reads_celerys_replies(capture: str, expected: dict[str, Any]) -> None:
    view = reply_view(capture)
    reply = control.parse_reply(envelope_from_view(view))
    assert reply.replies == expected
    assert reply.ticket == view["headers"]["ticket"]
    assert reply.clock == view["headers"]["clock"]
    assert reply.expires is None


def test_parse_reply_reads_active_stats_and_queue_lists() -> None:
    active = reply_view("inspect_active")
    tasks = control.parse_reply(envelope_from_view(active)).replies["w1@lab"]
    assert [t["name"] for t in tasks] == ["tasks.sleeper", "tasks.sleeper"]
    assert tasks[0]["delivery_info"]["routing_key"] == "celery"
    stats = reply_view("inspect_stats")
    info = control.parse_reply(envelope_from_view(stats)).replies["w1@lab"]
    assert info["total"] == {"tasks.add": 15, "tasks.sleeper": 2}
    assert info["clock"] == "154"
    queues = reply_view("inspect_active_queues")
    names = [q["name"] for q in control.parse_reply(envelope_from_view(queues)).replies["w1@lab"]]
    assert names == ["celery", "prio"]


def test_reply_has_the_captured_shape() -> None:
    view = reply_view("inspect_ping")
    info = view["properties"]["delivery_info"]
    envelope, body = decode(
        control.build_reply(
            "w1@lab",
            {"ok": "pong"},
            view["headers"]["ticket"],
            control.ReplyTo(info["exchange"], info["routing_key"]),
            clock=5,
        )
    )
    assert body == view["body(decoded from base64)"]
    assert envelope["headers"] == view["headers"]
    assert_same_properties(envelope, view)


def test_unknown_command_reply_is_celerys() -> None:
    assert control.unknown_command("no_such_cmd") == {"error": "KeyError('no_such_cmd')"}
    assert control.ok("pong") == {"ok": "pong"}
    assert control.error("nope") == {"error": "nope"}


def test_merge_replies_flattens_and_logs_duplicate_names(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        merged = control.merge_replies([{"a@h": 1}, {"b@h": 2}, {"a@h": 3}])
    assert merged == {"a@h": 3, "b@h": 2}
    assert "a@h" in caplog.text


# -- node matching ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("node", "destination", "pattern", "matcher", "expected"),
    [
        ("w1@lab", None, None, None, True),
        ("w1@lab", [], None, None, True),
        ("w1@lab", ["w1@lab", "w9@nowhere"], None, None, True),
        ("w2@lab", ["w1@lab"], None, None, False),
        ("w2@lab", ["w1@lab"], "w*", "glob", False),  # destination wins over the pattern
        ("w1@lab", None, "w*@lab", "glob", True),
        ("x1@lab", None, "w*@lab", "glob", False),
        ("w1@lab", None, r"w\d@", "pcre", True),
        ("w1@lab", None, r"lab", "pcre", False),  # re.match anchors at the start
        ("w1@lab", None, "x*", None, True),  # a pattern without a matcher is ignored (kombu)
        ("w1@lab", None, "(", "pcre", False),
        ("w1@lab", None, "w*", "nosuch", False),
    ],
)
def test_is_addressed_to_follows_kombu(
    node: str,
    destination: list[str] | None,
    pattern: str | None,
    matcher: str | None,
    expected: bool,
) -> None:
    assert control.is_addressed_to(node, destination, pattern, matcher) is expected


@pytest.mark.parametrize(
    ("node", "pattern", "matcher"),
    [
        ("w1@lab", "w*", "glob"),
        ("w1@lab", "*@l?b", "glob"),
        ("w1@lab", "[wx]1@*", "glob"),
        ("w1@lab", "w1", "pcre"),
        ("w1@lab", ".*lab$", "pcre"),
        ("w1@lab", "lab", "pcre"),
    ],
)
def test_match_node_agrees_with_kombu(node: str, pattern: str, matcher: str) -> None:
    from kombu.matcher import match

    theirs = match(node.encode(), pattern.encode(), matcher)
    assert control.match_node(node, pattern, matcher) == bool(theirs)


# -- events -----------------------------------------------------------------------------------
def test_heartbeat_event_has_the_captured_shape() -> None:
    (captured,) = views_of("events_dump", "PUBLISH", "/0.celeryev/worker.heartbeat")
    body = captured["body(decoded from base64)"]
    ev = events.event(
        "worker-heartbeat",
        "w1@lab",
        8373,
        356,
        timestamp=body["timestamp"],
        utcoffset=0.0,
        freq=5,
        sw_ident="py-celery",
        sw_ver="5.7.0",
        sw_sys="Linux",
    )
    assert ev == body
    assert list(ev) == list(body)
    envelope, decoded = decode(
        events.build_event_envelope(ev, "w1@lab", events.routing_key_of("worker-heartbeat"))
    )
    assert decoded == body
    assert envelope["headers"] == captured["headers"]
    assert_same_properties(envelope, captured)


def test_task_multi_batch_has_the_captured_shape() -> None:
    received = views_of("events_dump", "PUBLISH", "/0.celeryev/task.multi")[0]
    batch = received["body(decoded from base64)"]
    [(routing_key, items)] = events.batches(batch)
    assert routing_key == "task.multi"
    envelope, decoded = decode(events.build_event_envelope(items, "w1@lab", routing_key))
    assert decoded == batch
    assert envelope["properties"]["delivery_info"] == {
        "exchange": "celeryev",
        "routing_key": "task.multi",
    }
    headers, parsed = events.parse_event_message(envelope_from_view(received))
    assert headers == {"hostname": "w1@lab"}
    assert [e["type"] for e in parsed] == ["task-received"]
    assert parsed[0]["args"] == "(2, 3)"


def test_task_sent_is_a_single_object_event() -> None:
    (captured,) = views_of("task_sent_event", "PUBLISH", "/0.celeryev/task.sent")
    _, parsed = events.parse_event_message(envelope_from_view(captured))
    assert len(parsed) == 1
    assert parsed[0]["type"] == "task-sent"
    assert set(events.TASK_FIELDS["task-sent"]) <= set(parsed[0])


def test_batches_group_by_type_group_and_cap_at_24() -> None:
    evs = [{"type": "task-received", "uuid": str(i)} for i in range(50)]
    evs.insert(10, {"type": "worker-heartbeat"})
    out = events.batches(evs)
    assert [(rk, len(items)) for rk, items in out] == [
        ("task.multi", 24),
        ("task.multi", 24),
        ("task.multi", 2),
        ("worker.multi", 1),
    ]
    assert [e["uuid"] for _, items in out[:3] for e in items] == [str(i) for i in range(50)]


def test_event_names_and_routing_keys() -> None:
    assert events.routing_key_of("worker-heartbeat") == "worker.heartbeat"
    assert events.routing_key_of("task-succeeded") == "task.succeeded"
    assert events.group_of("task-sent") == "task"
    assert events.group_of("custom-my-event") == "custom"
    assert {"task-sent", "worker-offline"} <= events.EVENT_TYPES


def test_event_builder_fills_common_fields() -> None:
    before = time.time()
    ev = events.event("task-started", "w@h", 42, 3, uuid="u")
    assert list(ev) == ["hostname", "utcoffset", "pid", "clock", "uuid", "timestamp", "type"]
    assert ev["timestamp"] >= before
    assert ev["utcoffset"] == events.utcoffset()


def test_utcoffset_is_hours_positive_west_of_utc() -> None:
    assert events.utcoffset() == pytest.approx(-time.localtime().tm_gmtoff / 3600)


@pytest.mark.parametrize("value", ["x", 3, None, 1.5])
def test_parse_event_body_rejects_non_containers(value: Any) -> None:
    with pytest.raises(DecodeError):
        events.parse_event_body(value)


def test_parse_event_body_drops_elements_without_a_type() -> None:
    body = [{"type": "task-started", "uuid": "a"}, 5, {"uuid": "b"}, {"type": 7}, "x"]
    assert events.parse_event_body(body) == [{"type": "task-started", "uuid": "a"}]
    assert events.parse_event_body({"type": "worker-online"}) == [{"type": "worker-online"}]


def test_heartbeat_expiry_is_two_intervals() -> None:
    assert events.heartbeat_expires(100.0, 2.0) == 104.0


def test_lamport_clock_forwards_and_adjusts() -> None:
    clock = events.LamportClock()
    assert clock.forward() == 1
    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12
    assert clock.adjust("junk") == 12
    assert clock.adjust(True) == 12
    assert clock.forward() == 13


def test_signed_requests_verify_only_with_their_key() -> None:
    envelope = control.build_request(control.ControlRequest("shutdown", clock=1))
    signed = control.sign_request(envelope, "k1")
    assert control.is_signed_by(signed, "k1")
    assert not control.is_signed_by(signed, "k2")
    assert not control.is_signed_by(envelope, "k1")
    assert not control.is_signed_by(b"not json", "k1")
    assert control.parse_request(signed).method == "shutdown"


def test_signed_request_cannot_be_replayed_after_it_expires() -> None:
    import time

    envelope = control.build_request(control.ControlRequest("shutdown", clock=1))
    signed = control.sign_request(envelope, "k1")
    assert control.is_signed_by(signed, "k1", now=time.time())
    assert not control.is_signed_by(signed, "k1", now=time.time() + 3600)
    tampered = signed.replace('"expires": ', '"expires": 9', 1)
    assert not control.is_signed_by(tampered, "k1")
