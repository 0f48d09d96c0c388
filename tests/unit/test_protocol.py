"""Protocol round trips against Celery's captures, serializers, compression, and fuzzing.

The captures in ``shared/spec/captures`` cut the raw LPUSH payloads, so the tests compare
envelopes that tq builds field by field with the decoded ``=>`` views of the same calls, and
rebuild envelope text from those views to check that tq parses what Celery sends.
"""

from __future__ import annotations

import base64
import bz2
import datetime as dt
import decimal
import gzip
import json
import os
import pickle
import re
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tq.exceptions import ContentDisallowed, DecodeError, MessageTooLarge, ProtocolError
from tq.protocol import compression, serializers
from tq.protocol.envelope import Envelope, build_envelope, parse_envelope
from tq.protocol.message import TaskHeaders, TaskSpec, build_task, decode_task_body


def _find_captures() -> Path:
    """``TQ_SPEC_CAPTURES``, else the copy in ``tests/captures`` (taken from
    ``shared/spec/captures``), else ``shared/spec/captures`` beside the checkout."""
    if os.environ.get("TQ_SPEC_CAPTURES"):
        return Path(os.environ["TQ_SPEC_CAPTURES"])
    here = Path(__file__).resolve()
    copy = here.parents[1] / "captures"
    if copy.is_dir():
        return copy
    for parent in here.parents:
        candidate = parent / "shared" / "spec" / "captures"
        if candidate.is_dir():
            return candidate
    return here.parents[3] / "shared" / "spec" / "captures"


CAPTURES = _find_captures()
JSON_ONLY = serializers.normalize_accept(["json"])
MAX = 1 << 20
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")



@pytest.fixture(autouse=True)
def _captures_present(request: pytest.FixtureRequest) -> None:
    """Capture-based tests need the wire captures: skipped without them, failed under CI."""
    if "capture" not in request.node.name and "celery" not in request.node.name:
        return
    if not CAPTURES.is_dir():
        message = f"no wire captures at {CAPTURES} (set TQ_SPEC_CAPTURES)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


# -- reading the captures ---------------------------------------------------------------------
TOP_KEYS = ("body(decoded from base64)", "content-encoding", "content-type", "headers",
            "properties")


def _decoded_fields(view: str) -> dict[str, Any]:
    """The top-level fields of a decoded view; a view cut short keeps its complete fields."""
    decoder = json.JSONDecoder()
    out: dict[str, Any] = {}
    for key in TOP_KEYS:
        match = re.search(r'(?m)^\s{0,8}"' + re.escape(key) + r'": ', view) or re.search(
            r'[{,]\s*"' + re.escape(key) + r'": ', view
        )
        if match is None:
            continue
        try:
            value, _ = decoder.raw_decode(view, match.end())
        except ValueError:
            continue  # cut by "...(decoded view truncated)"
        out[key] = value
    return out


def lpush_views(name: str) -> list[tuple[str, dict[str, Any]]]:
    """``(list key, decoded envelope fields)`` of every LPUSH with a decoded view."""
    lines = (CAPTURES / f"{name}.txt").read_text("utf-8").splitlines()
    found: list[tuple[str, dict[str, Any]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if '"LPUSH"' in line and i + 1 < len(lines) and lines[i + 1].lstrip().startswith("=>"):
            key = line.split('"LPUSH" "', 1)[1].split('"', 1)[0]
            view = [lines[i + 1].split("=>", 1)[1]]
            i += 2
            while i < len(lines) and not lines[i].startswith(("+", "#")):
                view.append(lines[i])
                i += 1
            found.append((key, _decoded_fields("\n".join(view))))
            continue
        i += 1
    return found


def only_view(name: str) -> dict[str, Any]:
    views = lpush_views(name)
    assert views, f"no decoded LPUSH in {name}.txt"
    return views[0][1]


def envelope_text(view: dict[str, Any]) -> str:
    """Envelope text rebuilt from a decoded view: the body JSON base64-encoded again."""
    body = json.dumps(view["body(decoded from base64)"]).encode()
    return json.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": view["content-encoding"],
        "content-type": view["content-type"],
        "headers": view["headers"],
        "properties": view["properties"],
    })


def spec_like(view: dict[str, Any], **changes: Any) -> TaskSpec:
    """The TaskSpec a tq client fills in for the call a capture shows."""
    headers = view["headers"]
    args, kwargs, _embed = view["body(decoded from base64)"]
    hard, soft = headers["timelimit"]
    spec = TaskSpec(
        name=headers["task"],
        id=headers["id"],
        args=tuple(args),
        kwargs=kwargs,
        queue=view["properties"]["delivery_info"]["routing_key"],
        origin=headers["origin"],
        reply_to=view["properties"]["reply_to"],
        time_limit=hard,
        soft_time_limit=soft,
        shadow=headers["shadow"],
        ignore_result=headers["ignore_result"],
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def assert_same_envelope(built: str, view: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Compare a tq-built envelope with a Celery view, field by field."""
    data = json.loads(built)
    assert set(data) == {"body", "content-encoding", "content-type", "headers", "properties"}
    assert json.loads(base64.b64decode(data["body"])) == view["body(decoded from base64)"]
    assert data["content-type"] == view["content-type"]
    assert data["content-encoding"] == view["content-encoding"]
    assert set(data["headers"]) == set(view["headers"])
    for key, value in view["headers"].items():
        if key not in skip:
            assert data["headers"][key] == value, f"header {key}"
    props, celery_props = data["properties"], view["properties"]
    assert set(props) == set(celery_props)
    for key in ("correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority",
                "body_encoding"):
        assert props[key] == celery_props[key], f"property {key}"
    assert UUID4.match(props["delivery_tag"]) and UUID4.match(celery_props["delivery_tag"])
    assert props["delivery_tag"] != celery_props["delivery_tag"]


# -- round trips against the captures ---------------------------------------------------------
def test_delay_envelope_matches_celery_field_by_field() -> None:
    view = only_view("delay")
    tag, built = build_task(spec_like(view))
    assert tag == json.loads(built)["properties"]["delivery_tag"]
    assert_same_envelope(built, view)


def test_countdown_eta_is_aware_utc_like_celery() -> None:
    view = only_view("countdown")
    eta = dt.datetime.fromisoformat(view["headers"]["eta"])
    _, built = build_task(spec_like(view, eta=eta))
    assert_same_envelope(built, view)
    assert json.loads(built)["headers"]["eta"].endswith("+00:00")


def test_eta_aware_and_naive_forms_round_trip() -> None:
    views = [fields for _, fields in lpush_views("eta")]
    assert len(views) == 2
    aware, naive = views
    for view in views:
        eta = dt.datetime.fromisoformat(view["headers"]["eta"])
        _, built = build_task(spec_like(view, eta=eta))
        assert_same_envelope(built, view)
    assert naive["headers"]["eta"][-6] != "+"  # Celery sends a naive ETA without an offset
    parsed = TaskHeaders.parse(naive["headers"])
    assert parsed.eta is not None and parsed.eta.tzinfo == dt.UTC  # read as UTC, like Celery
    assert parsed.eta.replace(tzinfo=None) == dt.datetime.fromisoformat(naive["headers"]["eta"])
    aware_parsed = TaskHeaders.parse(aware["headers"])
    assert aware_parsed.eta == dt.datetime.fromisoformat(aware["headers"]["eta"])


def test_expires_header_and_expiration_property_match_celery() -> None:
    views = [fields for _, fields in lpush_views("expires")]
    assert len(views) == 2
    for view in views:
        expires = dt.datetime.fromisoformat(view["headers"]["expires"])
        spec = spec_like(view, expires=expires)
        _, built = build_task(spec)
        assert_same_envelope(built, view)
        expiration = json.loads(built)["properties"]["expiration"]
        assert expiration.isdigit()  # milliseconds as a decimal string, like Celery's "60000"
        assert view["properties"]["expiration"].isdigit()
        assert TaskHeaders.parse(view["headers"]).expires == expires


def test_shadow_time_limits_and_custom_headers_match_celery() -> None:
    view = only_view("shadow")
    assert view["headers"]["shadow"] == "my.shadow.name"
    _, built = build_task(spec_like(view, headers={"x-custom": "hello"}))
    assert_same_envelope(built, view)
    parsed = TaskHeaders.parse(json.loads(built)["headers"])
    assert (parsed.shadow, parsed.time_limit, parsed.soft_time_limit) == ("my.shadow.name", 30, 20)
    assert parsed.raw["x-custom"] == "hello"


def test_json_type_tags_decode_and_encode_like_kombu() -> None:
    view = only_view("json_types")
    body = view["body(decoded from base64)"]
    args, kwargs, _ = serializers.loads(json.dumps(body).encode(), "application/json", JSON_ONLY)
    assert args[0] == [
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.date(2024, 1, 2),
        decimal.Decimal("1.10"),
        uuid.UUID(int=1),
        b"raw",
        b"\xff\x00",
    ]
    assert kwargs == {"t": dt.time(1, 2, 3)}
    assert json.loads(serializers.dumps_json([args, kwargs])) == body[:2]


@pytest.mark.parametrize("capture", ["delay", "countdown", "eta", "expires", "shadow"])
def test_celery_envelopes_parse_and_decode(capture: str) -> None:
    for _, view in lpush_views(capture):
        envelope = parse_envelope(envelope_text(view))
        assert envelope.delivery_tag == view["properties"]["delivery_tag"]
        assert envelope.delivery_info == view["properties"]["delivery_info"]
        headers = TaskHeaders.parse(envelope.headers)
        assert (headers.id, headers.task) == (view["headers"]["id"], view["headers"]["task"])
        args, kwargs, embed = decode_task_body(envelope, JSON_ONLY, MAX)
        expected_args, expected_kwargs, expected_embed = view["body(decoded from base64)"]
        assert (args, kwargs, embed) == (expected_args, expected_kwargs, expected_embed)


def test_minimal_envelope_a_celery_worker_accepts_is_accepted() -> None:
    # The "minimal" message of wire spec section 2: only task and id headers, embed {}.
    raw = json.dumps({
        "body": "W1s0MCwgMl0sIHt9LCB7fV0=", "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "tasks.add", "id": "2e1ddb70-6e15-42b1-b378-08a51b3338f0"},
        "properties": {"delivery_tag": "1b5715e0-68bd-4500-b518-b5e165ea58cc",
                       "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": "celery"}},
    })
    envelope = parse_envelope(raw)
    assert TaskHeaders.parse(envelope.headers).retries == 0
    assert decode_task_body(envelope, JSON_ONLY, MAX) == ([40, 2], {}, {})


def test_plain_text_body_without_body_encoding_is_read_as_is() -> None:
    raw = json.dumps({"body": "[[1], {}, {}]", "headers": {"task": "t", "id": "i"},
                      "properties": {"delivery_tag": "x", "delivery_info": {}}})
    assert decode_task_body(parse_envelope(raw), JSON_ONLY, MAX) == ([1], {}, {})


def test_hybrid_protocol_one_body_is_executed_with_its_args() -> None:
    env = Envelope(b'{"args": [1, 2], "kwargs": {"z": 3}}', "application/json", "utf-8", {}, {})
    assert decode_task_body(env, JSON_ONLY, MAX) == ([1, 2], {"z": 3}, {})


# -- serializers ------------------------------------------------------------------------------
def test_user_dict_that_looks_like_a_type_tag_with_unknown_type_is_refused() -> None:
    with pytest.raises(DecodeError, match="unknown JSON type tag"):
        serializers.loads_json('{"__type__": "evil", "__value__": 1}')


def test_refused_content_type_is_never_deserialized(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = serializers.SERIALIZERS[serializers.PICKLE]
    spy = serializers.Serializer(real.content_type, real.encoding, real.dumps,
                                 lambda data: calls.append(data))
    monkeypatch.setitem(serializers.SERIALIZERS, serializers.PICKLE, spy)
    payload = pickle.dumps([[1], {}, {}])
    with pytest.raises(ContentDisallowed, match="untrusted content"):
        serializers.loads(payload, serializers.PICKLE, JSON_ONLY)
    env = Envelope(payload, serializers.PICKLE, "binary", {}, {})
    with pytest.raises(ContentDisallowed):
        decode_task_body(env, JSON_ONLY, MAX)
    assert calls == []


def test_pickle_is_read_only_when_accepted() -> None:
    content_type, encoding, payload = serializers.dumps([[1, 2], {"k": b"v"}, {}], "pickle")
    assert (content_type, encoding) == (serializers.PICKLE, "binary")
    accept = serializers.normalize_accept(["json", "pickle"])
    assert serializers.loads(payload, content_type, accept) == [[1, 2], {"k": b"v"}, {}]
    with pytest.raises(ContentDisallowed):
        serializers.loads(payload, content_type, JSON_ONLY)


def test_msgpack_round_trip_when_accepted() -> None:
    content_type, encoding, payload = serializers.dumps([[1, "a"], {"b": 2.5}, {}], "msgpack")
    assert (content_type, encoding) == ("application/x-msgpack", "binary")
    accept = serializers.normalize_accept(["msgpack"])
    assert serializers.loads(payload, content_type, accept) == [[1, "a"], {"b": 2.5}, {}]
    with pytest.raises(DecodeError):
        serializers.loads(b"\xc1", content_type, accept)


def test_accepted_but_unknown_content_type_is_refused() -> None:
    accept = serializers.normalize_accept(["json", "application/x-made-up"])
    with pytest.raises(ContentDisallowed, match="no deserializer"):
        serializers.loads(b"{}", "application/x-made-up", accept)


def test_unknown_serializer_name_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown serializer"):
        serializers.dumps([1], "yaml")


@pytest.mark.parametrize(
    "text",
    [
        '{"__type__": "bytes", "__value__": null}',
        '{"__type__": "uuid", "__value__": []}',
        '{"__type__": "decimal", "__value__": "not a number"}',
        '{"__type__": "datetime", "__value__": 5}',
        '{"__type__": "uuid", "__value__": {"hex": "zz"}}',
    ],
)
def test_malformed_type_tags_are_decode_errors(text: str) -> None:
    with pytest.raises(DecodeError):
        serializers.loads_json(text)


@pytest.mark.parametrize("eta", [1e300, -1e300, float("nan"), 10**30])
def test_out_of_range_numeric_eta_is_an_invalid_task(eta: Any) -> None:
    with pytest.raises(ProtocolError):
        TaskHeaders.parse({"task": "t", "id": "i", "eta": eta})


def test_deep_nesting_and_huge_integers_are_decode_errors() -> None:
    with pytest.raises(DecodeError):
        serializers.loads_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DecodeError):
        serializers.loads_json("[" + "9" * 5000 + "]")


def test_msgpack_message_round_trips_through_build_and_decode() -> None:
    spec = TaskSpec(name="t", id="i", args=(1, 2), kwargs={"k": "v"}, serializer="msgpack")
    _, text = build_task(spec)
    env = parse_envelope(text)
    assert env.content_type == "application/x-msgpack"
    accept = serializers.normalize_accept(["msgpack"])
    assert decode_task_body(env, accept, MAX)[:2] == ([1, 2], {"k": "v"})


# -- compression ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["zlib", "gzip", "bzip2"])
def test_compressed_body_round_trips(method: str) -> None:
    spec = TaskSpec(name="t", id="i", args=("x" * 1000,), compression=method)
    _, text = build_task(spec)
    env = parse_envelope(text)
    assert env.headers["compression"] == compression.ALIASES[method]
    assert decode_task_body(env, JSON_ONLY, MAX)[0] == ["x" * 1000]


@pytest.mark.parametrize(
    ("header", "squash"),
    [(compression.ZLIB, zlib.compress), (compression.GZIP, gzip.compress),
     (compression.BZ2, bz2.compress)],
)
def test_compression_bomb_is_refused_before_it_is_inflated(header: str, squash: Any) -> None:
    bomb = squash(b"\0" * (64 * MAX))  # 64 MiB of zeros, a few KiB compressed
    assert len(bomb) < MAX // 4
    with pytest.raises(MessageTooLarge):
        compression.decompress(bomb, header, MAX)
    env = Envelope(bomb, "application/json", "utf-8", {"compression": header}, {})
    with pytest.raises(MessageTooLarge):
        decode_task_body(env, JSON_ONLY, MAX)


def test_corrupt_or_unknown_compression_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        compression.decompress(b"not zlib at all", compression.ZLIB, MAX)
    with pytest.raises(DecodeError, match="unknown compression"):
        compression.decompress(zlib.compress(b"x"), "application/x-lzma", MAX)


def test_oversized_envelope_is_refused() -> None:
    with pytest.raises(MessageTooLarge):
        parse_envelope(b"{" + b" " * 100 + b"}", max_size=50)


# -- fuzzing: any input → a ProtocolError or a valid result, never anything else -------------
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
header_values = json_values | st.sampled_from(
    ["2024-01-02T03:04:05", "2024-13-45", "not-a-date", 1e300, -1e300, float("nan"), 10**30,
     [30, 20], [None, None], ["a", 1], 2**70]
)
headers_strategy = st.dictionaries(
    st.sampled_from(["task", "id", "eta", "expires", "retries", "timelimit", "group_index",
                     "root_id", "parent_id", "shadow", "ignore_result", "compression"]),
    header_values,
) | st.fixed_dictionaries(
    {"task": st.text(min_size=1, max_size=5), "id": st.text(min_size=1, max_size=5)},
    optional={"eta": header_values, "expires": header_values, "retries": header_values,
              "timelimit": header_values, "group_index": header_values},
)
type_tags = st.fixed_dictionaries({
    "__type__": st.sampled_from(["datetime", "date", "time", "decimal", "uuid", "bytes",
                                 "base64", "set", "unknown"]),
    "__value__": json_values | st.sampled_from(["abc", "1.5", "NaN", "--", {"hex": "zz"}]),
})
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.tuples(json_values, json_values, json_values | type_tags).map(
        lambda t: json.dumps(list(t)).encode())
    | st.tuples(st.lists(type_tags, max_size=3), st.just({}), st.just({})).map(
        lambda t: json.dumps(list(t)).encode())
)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_envelope_fuzz(raw: bytes) -> None:
    try:
        env = parse_envelope(raw)
    except ProtocolError:
        return
    assert isinstance(env, Envelope) and isinstance(env.body, bytes)


@FUZZ
@given(headers_strategy)
def test_task_headers_parse_fuzz(headers: dict[str, Any]) -> None:
    try:
        parsed = TaskHeaders.parse(headers)
    except ProtocolError:
        return
    assert parsed.id and parsed.task


@FUZZ
@given(
    bodies,
    st.sampled_from(["application/json", "application/x-msgpack",
                     "application/x-python-serialize", "application/x-made-up", ""]),
    st.none() | st.sampled_from([compression.ZLIB, compression.GZIP, compression.BZ2, "bogus"]),
)
def test_decode_task_body_fuzz(body: bytes, content_type: str, method: str | None) -> None:
    headers = {"compression": method} if method else {}
    env = Envelope(body, content_type, "utf-8", headers, {})
    accept = serializers.normalize_accept(["json", "msgpack"])
    try:
        args, kwargs, embed = decode_task_body(env, accept, MAX)
    except ProtocolError:
        return
    assert isinstance(args, list) and isinstance(kwargs, dict) and isinstance(embed, dict)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["base64", None, "utf-8"]))
def test_whole_envelope_pipeline_fuzz(body: bytes, encoding: str | None) -> None:
    props: dict[str, Any] = {"delivery_tag": "t", "delivery_info": {}}
    if encoding:
        props["body_encoding"] = encoding
    text = build_envelope(body, "application/json", "utf-8", {"task": "t", "id": "i"}, props)
    try:
        env = parse_envelope(text)
        TaskHeaders.parse(env.headers)
        decode_task_body(env, JSON_ONLY, MAX)
    except ProtocolError:
        return
