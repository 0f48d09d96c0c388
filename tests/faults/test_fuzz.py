"""Property-based fuzzing (hypothesis) of what reads untrusted bytes, and of the management
CLI's arguments.

* The message parser (``parse_envelope``, ``TaskHeaders.parse``, ``decode_task_body``) and the
  control and event parsers: any input either parses or raises ``ProtocolError``; nothing
  else ever escapes (a worker treats ProtocolError as "dead-letter or ignore", anything else
  as a bug).
* ``tq-console`` subcommands call/inspect/control/purge/queues/dead with random arguments,
  through click's ``CliRunner`` against a private broker: the exit code is one of the
  documented ones (0-4) and no traceback escapes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.faults.harness import APP_SPEC, RedisServer

from tq.exceptions import ProtocolError
from tq.protocol.control import parse_request
from tq.protocol.envelope import Envelope, parse_envelope
from tq.protocol.events import parse_event_message
from tq.protocol.message import TaskHeaders, TaskSpec, build_task, decode_task_body
from tq.protocol.serializers import JSON, MSGPACK
from tq_console.manage import CONTROL_ARGS, INSPECT_COMMANDS

SMALL_LIMIT = 1 << 16

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
HEADER_NAMES = [
    "task",
    "id",
    "eta",
    "expires",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "group",
    "group_index",
    "shadow",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "compression",
    "x-tq-deliveries",
    "redelivered",
]
headers_strategy = st.dictionaries(
    st.sampled_from(HEADER_NAMES) | st.text(max_size=6), json_values, max_size=8
)
content_types = st.sampled_from(
    [JSON, MSGPACK, "application/x-python-serialize", "application/x-yaml", "", "text/plain"]
) | st.text(max_size=12)
compressions = (
    st.sampled_from(
        [
            None,
            "application/x-gzip",
            "zlib",
            "application/gzip",
            "application/x-bz2",
            "bzip2",
            "nope",
        ]
    )
    | json_values
)


def _valid_envelope() -> dict[str, Any]:
    _tag, text = build_task(TaskSpec(name="fault.echo", id=str(uuid.uuid4()), args=(1, "a")))
    data: dict[str, Any] = json.loads(text)
    return data


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """A valid envelope with some fields replaced by random JSON (or removed)."""
    env = _valid_envelope()
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.sampled_from(["top", "headers", "properties"]))
        target = env if where == "top" else env.get(where)
        if not isinstance(target, dict):
            continue
        key = draw(st.sampled_from([*target.keys(), "body", "content-type"]) | st.text(max_size=6))
        if draw(st.booleans()):
            target[key] = draw(json_values)
        else:
            target.pop(key, None)
    return json.dumps(env).encode()


raw_inputs = (
    st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | json_values.map(lambda v: json.dumps(v).encode())
    | mutated_envelopes()
)


def _full_parse(raw: bytes) -> None:
    envelope = parse_envelope(raw, SMALL_LIMIT)
    TaskHeaders.parse(envelope.headers)
    decode_task_body(envelope, frozenset({JSON, MSGPACK}), SMALL_LIMIT)


@settings(max_examples=300, deadline=None)
@given(raw_inputs)
def test_parse_envelope_and_the_rest_of_the_pipeline_raise_only_protocol_errors(
    raw: bytes,
) -> None:
    with contextlib.suppress(ProtocolError):
        _full_parse(raw)


@settings(max_examples=200, deadline=None)
@given(headers_strategy)
def test_task_headers_parse_accepts_or_raises_invalid_task_error(
    headers: dict[str, Any],
) -> None:
    try:
        parsed = TaskHeaders.parse(headers)
    except ProtocolError:
        return
    assert isinstance(parsed.id, str) and parsed.id
    assert isinstance(parsed.task, str) and parsed.task
    assert isinstance(parsed.retries, int)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
    content_type=content_types,
    compression=compressions,
    accept=st.sampled_from([frozenset({JSON}), frozenset({JSON, MSGPACK})]),
)
def test_decode_task_body_returns_the_three_parts_or_raises_protocol_error(
    body: bytes, content_type: str, compression: Any, accept: frozenset[str]
) -> None:
    headers = {} if compression is None else {"compression": compression}
    envelope = Envelope(body, content_type, "utf-8", headers, {})
    try:
        args, kwargs, embed = decode_task_body(envelope, accept, SMALL_LIMIT)
    except ProtocolError:
        return
    assert isinstance(args, list) and isinstance(kwargs, dict) and isinstance(embed, dict)


@settings(max_examples=300, deadline=None)
@given(raw_inputs, st.sampled_from(["control", "event"]))
def test_control_and_event_parsers_raise_only_protocol_errors(raw: bytes, kind: str) -> None:
    with contextlib.suppress(ProtocolError):
        if kind == "control":
            parse_request(raw)
        else:
            parse_event_message(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=4))
def test_bodies_of_random_json_arguments_round_trip(args: list[Any]) -> None:
    """What tq writes it can read back (NaN aside, which JSON cannot compare equal)."""
    _tag, text = build_task(TaskSpec(name="fault.echo", id="x", args=tuple(args)))
    env = parse_envelope(text)
    got, kwargs, _embed = decode_task_body(env, frozenset({JSON}), SMALL_LIMIT)
    assert json.dumps(got) == json.dumps(args)
    assert kwargs == {}


# -- the management CLI ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("cli-broker"), persistent=False)
    server.start()
    yield server.url()
    server.stop()


#: Options whose random values could make one example wait for minutes.
_SLOW_OPTIONS = ("-t", "--timeout", "--wait")
tokens = st.sampled_from(
    [
        "-d",
        "-j",
        "--json",
        "-a",
        "-k",
        "--countdown",
        "--eta",
        "--expires",
        "-Q",
        "--priority",
        "-f",
        "--force",
        "--terminate",
        "--signal",
        "-n",
        "--limit",
        "list",
        "requeue",
        "purge",
        "--help",
        "[1, 2]",
        '{"a": 1}',
        "-1",
        "0",
        "1e308",
        "nan",
        "",
        "--",
        "fault.echo",
        "ping",
        "stats",
        "revoke",
        "rate_limit",
        "10/m",
        "pool_grow",
        "time_limit",
        "x" * 300,
    ]
) | st.text(max_size=30)
SUBCOMMANDS = {
    "call": [],
    "inspect": ["-t", "0.05"],
    "control": ["-t", "0.05"],
    "purge": [],
    "queues": [],
    "dead": [],
}
values = st.text(max_size=30) | st.sampled_from(
    [
        "[1, 2]",
        '{"a": 1}',
        "[",
        "-1",
        "0",
        "3",
        "1e308",
        "nan",
        "inf",
        "",
        "fault.echo",
        "2026-01-01T00:00:00",
        "not-a-date",
        "celery",
        "10/m",
        "x" * 300,
        "\x00",
        "é",
    ]
)


def _options(pairs: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    """Some of the options in ``pairs``, each followed by a value from its strategy."""

    def with_values(names: list[str]) -> st.SearchStrategy[list[str]]:
        def flatten(values: tuple[str, ...]) -> list[str]:
            return [x for n, v in zip(names, values, strict=True) for x in (n, v)]

        return st.tuples(*(pairs[n] for n in names)).map(flatten)

    return st.lists(st.sampled_from(sorted(pairs)), max_size=4, unique=True).flatmap(with_values)


def _flags(*names: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(names), max_size=len(names), unique=True)


#: Arguments shaped like each subcommand's usage, with random values in every slot.
STRUCTURED: dict[str, st.SearchStrategy[list[str]]] = {
    "call": st.tuples(
        values,
        _options(
            {
                o: values
                for o in ("-a", "-k", "--countdown", "--eta", "--expires", "-Q", "--priority")
            }
        ),
    ).map(lambda t: [t[0], *t[1]]),
    "inspect": st.tuples(
        st.sampled_from(INSPECT_COMMANDS),
        st.lists(values, max_size=3),
        _options({"-d": values}),
        _flags("-j"),
    ).map(lambda t: [t[0], *t[1], *t[2], *t[3]]),
    "control": st.sampled_from(sorted(CONTROL_ARGS))
    .flatmap(
        lambda cmd: st.tuples(
            st.just(cmd),
            st.lists(values, min_size=len(CONTROL_ARGS[cmd]), max_size=len(CONTROL_ARGS[cmd]) + 1),
            _options({"-d": values, "--signal": values}),
            _flags("--terminate", "-j"),
        )
    )
    .map(lambda t: [t[0], *t[1], *t[2], *t[3]]),
    "purge": st.tuples(_flags("-f"), _options({"-Q": values})).map(lambda t: [*t[0], *t[1]]),
    "queues": st.tuples(_flags("-j"), _options({"-Q": values})).map(lambda t: [*t[0], *t[1]]),
    "dead": st.one_of(
        st.tuples(st.just("list"), _options({"-n": values}), _flags("-j")).map(
            lambda t: [t[0], *t[1], *t[2]]
        ),
        st.lists(values, max_size=3).map(lambda ids: ["requeue", *ids]),
        _flags("-f").map(lambda f: ["purge", *f]),
    ),
}


@st.composite
def cli_invocations(draw: st.DrawFn) -> tuple[str, list[str]]:
    sub = draw(st.sampled_from(sorted(SUBCOMMANDS)))
    args = draw(STRUCTURED[sub] | st.lists(tokens, max_size=6))
    return sub, [a for a in args if a not in _SLOW_OPTIONS]


@pytest.mark.redis
@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cli_invocations())
def test_cli_subcommands_with_random_arguments_exit_cleanly(
    cli_broker: str, monkeypatch: pytest.MonkeyPatch, invocation: tuple[str, list[str]]
) -> None:
    """Exit code 0-4 and never a traceback, whatever the arguments."""
    import sys
    import traceback

    from tq_console.cli import cli

    sub, args = invocation
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app prepends cwd on every call
    argv = ["-A", APP_SPEC, "-b", cli_broker, sub, *SUBCOMMANDS[sub], *args]
    result = CliRunner().invoke(cli, argv, obj={}, input="")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"tq-console {' '.join(argv)} raised:\n{trace}")
    assert result.exit_code in (0, 1, 2, 3, 4), (argv, result.output)
    assert "Traceback" not in result.output


def test_fuzzed_body_is_base64_safe() -> None:
    """A sanity check of the helpers above: a mutated envelope is still bytes."""
    assert base64.b64decode(_valid_envelope()["body"])
