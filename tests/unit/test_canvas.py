"""Canvas without Redis: what tq builds is compared, dict for dict, with what Celery 5.7 builds
for the same workflow (ids normalized). Also the chord-join helpers, the errback style
classification and the built-in tasks.

Celery apps are created without ever connecting: signatures, ``freeze`` and ``prepare_steps``
do not touch the broker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import celery
import pytest
from celery import Celery

import tq
from tq import App, states
from tq.app import canvas
from tq.app.canvas import Signature, chain, chord, group, signature
from tq.app.context import Request
from tq.app.result import GroupResult
from tq.app.workflow import BUILTINS, takes_request
from tq.backend.chord import ChordPart, ChordSettings, decode_parts, encode_part
from tq.exceptions import ChordError

#: Never contacted: only needed so that both apps can build chords.
NOWHERE = "redis://127.0.0.1:1/14"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NAMES = ("add", "mul", "xsum", "on_error", "on_error_old")


def _bodies() -> dict[str, Any]:
    def add(x: int, y: int) -> int:
        return x + y

    def mul(x: int, y: int) -> int:
        return x * y

    def xsum(numbers: list[int]) -> int:
        return sum(numbers)

    def on_error(request: Any, exc: BaseException, traceback: str | None) -> None:
        return None

    def on_error_old(task_id: str) -> None:
        return None

    return {"add": add, "mul": mul, "xsum": xsum, "on_error": on_error,
            "on_error_old": on_error_old}


class Pair:
    """The same tasks on a tq App (``t``) and a Celery app (``c``), by the same names."""

    def __init__(self) -> None:
        self.tq_app = App("canvas_unit", broker=NOWHERE, backend=NOWHERE, set_as_current=False)
        self.celery_app = Celery("canvas_unit", broker=NOWHERE, backend="cache+memory://",
                                 set_as_current=False)
        self.t: dict[str, Any] = {}
        self.c: dict[str, Any] = {}
        for name, fun in _bodies().items():
            self.t[name] = self.tq_app.task(name=f"canvas.{name}")(fun)
            self.c[name] = self.celery_app.task(name=f"canvas.{name}", shared=False)(fun)

    def close(self) -> None:
        self.tq_app.close()
        self.celery_app.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def norm(value: Any) -> Any:
    """JSON form with every uuid replaced by its order of appearance, and the per-thread
    ``reply_to`` (different ids in two apps) by a marker."""
    ids: dict[str, str] = {}
    text = json.dumps(value, sort_keys=True, default=dict)
    text = UUID.sub(lambda mo: ids.setdefault(mo.group(0), f"<id{len(ids)}>"), text)
    data = json.loads(text)
    return _mark_reply_to(data)


def _mark_reply_to(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: ("<oid>" if k == "reply_to" else _mark_reply_to(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_mark_reply_to(v) for v in data]
    return data


# -- signatures ------------------------------------------------------------------------------
def test_signature_is_the_dict_celery_puts_on_the_wire(pair: Pair) -> None:
    t, c = pair.t, pair.c
    cases = [
        (t["add"].s(2, 2), c["add"].s(2, 2)),
        (t["add"].si(2, 2), c["add"].si(2, 2)),
        (t["add"].s(2).set(countdown=10, queue="q"), c["add"].s(2).set(countdown=10, queue="q")),
        (t["add"].signature((1,), {"y": 2}, priority=3), c["add"].signature((1,), {"y": 2},
                                                                            priority=3)),
    ]
    for ours, theirs in cases:
        assert norm(ours) == norm(theirs)
        assert isinstance(ours, dict)


def test_clone_prepends_partial_args_and_merges_kwargs_unless_immutable(pair: Pair) -> None:
    add = pair.t["add"]
    partial = add.s(2)
    assert partial.clone((1,)).args == [1, 2]
    assert add.s(y=1).clone(kwargs={"x": 5, "y": 2}).kwargs == {"x": 5, "y": 2}
    frozen = add.si(1, 1)
    assert frozen.clone((9,), {"z": 1}).args == [1, 1]
    assert frozen.clone((9,)).kwargs == {}
    assert norm(partial.clone((1,), countdown=3)) == norm(pair.c["add"].s(2).clone((1,),
                                                                                 countdown=3))


def test_clone_copies_options_so_links_do_not_leak(pair: Pair) -> None:
    sig = pair.t["add"].s(1)
    copy = sig.clone()
    copy.link(pair.t["mul"].s(2))
    assert "link" not in sig.options


def test_link_link_error_and_on_error_match_celery(pair: Pair) -> None:
    t, c = pair.t, pair.c
    ours, theirs = t["add"].s(1, 2), c["add"].s(1, 2)
    assert ours.link(t["add"].s(10)) == t["add"].s(10)
    theirs.link(c["add"].s(10))
    assert ours.on_error(t["on_error"].s()) is ours
    theirs.on_error(c["on_error"].s())
    ours.link_error(t["on_error_old"].s())
    theirs.link_error(c["on_error_old"].s())
    assert norm(ours) == norm(theirs)


def test_local_call_runs_the_task_here_with_partial_args(pair: Pair) -> None:
    assert pair.t["add"].s(2)(3) == 5
    assert pair.t["add"].si(2, 2)(99) == 4
    assert pair.t["add"].s(2).apply((3,)).get() == 5


def test_signature_from_a_celery_dict_rebuilds_the_workflow_class(pair: Pair) -> None:
    t, c = pair.t, pair.c
    celery_sigs = [
        (chain, celery.chain(c["add"].s(1, 1), c["add"].s(2))),
        (group, celery.group(c["add"].s(1, 1), c["add"].s(2, 2))),
        (chord, celery.chord([c["add"].s(1, 1)], c["xsum"].s())),
        # Celery writes no subtask_type for these: they come back as built-in task calls.
        (Signature, c["xsum"].map([[1], [2]])),
        (Signature, c["add"].starmap([(1, 2)])),
        (Signature, c["add"].chunks([(1, 2), (3, 4)], 1)),
    ]
    for cls, theirs in celery_sigs:
        wire = json.loads(json.dumps(theirs))
        ours = signature(wire, app=pair.tq_app)
        assert type(ours) is cls
        assert norm(ours) == norm(wire)
        assert norm(celery.signature(json.loads(json.dumps(ours)))) == norm(wire)
    assert type(signature({"task": "canvas.add", "args": [1]}, app=pair.tq_app)) is Signature
    assert canvas.maybe_signature(None) is None
    assert t["add"].s(1) == signature(dict(t["add"].s(1)))


# -- composition -----------------------------------------------------------------------------
def test_pipe_builds_the_same_workflows_as_celery(pair: Pair) -> None:
    t, c = pair.t, pair.c
    cases = [
        (t["add"].s(1, 1) | t["add"].s(10) | t["add"].s(100),
         c["add"].s(1, 1) | c["add"].s(10) | c["add"].s(100)),
        (tq.group(t["add"].s(i, i) for i in range(3)) | t["xsum"].s(),
         celery.group(c["add"].s(i, i) for i in range(3)) | c["xsum"].s()),
        (t["add"].s(4, 4) | tq.group(t["add"].si(2, 2), t["add"].si(4, 4)) | t["xsum"].s(),
         c["add"].s(4, 4) | celery.group(c["add"].si(2, 2), c["add"].si(4, 4)) | c["xsum"].s()),
        (tq.chord([t["add"].s(1, 1)], t["xsum"].s()) | t["add"].s(1),
         celery.chord([c["add"].s(1, 1)], c["xsum"].s()) | c["add"].s(1)),
        (t["add"].s(1, 1) | tq.group(t["add"].s(1)), c["add"].s(1, 1) | celery.group(
            c["add"].s(1))),
        (tq.chain(t["add"].s(1, 1), tq.chain(t["add"].s(2), t["add"].s(3)), t["add"].s(4)),
         celery.chain(c["add"].s(1, 1), celery.chain(c["add"].s(2), c["add"].s(3)),
                      c["add"].s(4))),
        (tq.chain(t["add"].s(1, 1), tq.group(t["add"].s(1), t["add"].s(2)), t["xsum"].s(),
                  t["add"].s(5)),
         celery.chain(c["add"].s(1, 1), celery.group(c["add"].s(1), c["add"].s(2)),
                      c["xsum"].s(), c["add"].s(5))),
    ]
    for ours, theirs in cases:
        assert type(ours).__name__ == type(theirs).__name__.lstrip("_")
        assert norm(ours) == norm(theirs)


def test_group_then_task_is_promoted_to_a_chord(pair: Pair) -> None:
    t = pair.t
    workflow = tq.group(t["add"].s(1, 1), t["add"].s(2, 2)) | t["xsum"].s()
    assert isinstance(workflow, chord)
    assert workflow.body.name == "canvas.xsum"
    in_chain = tq.chain(t["add"].s(1, 1), tq.group(t["add"].s(1), t["add"].s(2)), t["xsum"].s())
    assert isinstance(in_chain, chain)
    assert isinstance(in_chain.tasks[-1], chord)
    unrolled = t["add"].s(1, 1) | tq.group(t["add"].s(1))
    assert isinstance(unrolled, chain)  # after a task, a group of one task is that task
    assert [type(s) for s in unrolled.tasks] == [Signature, Signature]


def test_chain_prepare_steps_matches_celery(pair: Pair) -> None:
    """The frozen steps, last-first, are exactly what the first task carries in
    ``embed.chain``; the results are linked through ``.parent``."""
    t, c = pair.t, pair.c
    builds = [
        (lambda a, g: a["add"].s(1, 1) | a["add"].s(10) | a["add"].s(100)),
        (lambda a, g: a["add"].s(1, 1) | g(a["add"].s(1), a["add"].s(2)) | a["xsum"].s()
         | a["add"].s(5)),
        (lambda a, g: a["add"].s(1, 1) | g(a["add"].s(1), a["add"].s(2))),
    ]
    for build in builds:
        ours, theirs = build(t, tq.group), build(c, celery.group)
        our_tasks, our_results = ours.prepare_steps((), {}, ours.tasks)
        their_tasks, their_results = theirs.prepare_steps((), {}, theirs.tasks)
        assert norm([our_tasks, [r.id for r in our_results]]) == norm(
            [their_tasks, [r.id for r in their_results]])
        ids = []
        node = our_results[0]  # the last task's result leads back to the first
        while node is not None:
            ids.append(node.id)
            node = node.parent
        assert ids[0] == our_results[0].id
        assert ids[-1] == our_results[-1].id


def test_chord_freeze_and_group_freeze_match_celery(pair: Pair) -> None:
    t, c = pair.t, pair.c
    ours = tq.chord([t["add"].s(i, i) for i in range(3)], t["xsum"].s())
    theirs = celery.chord([c["add"].s(i, i) for i in range(3)], c["xsum"].s())
    body_result = ours.freeze()
    theirs.freeze()
    assert norm(ours) == norm(theirs)
    assert isinstance(body_result.parent, GroupResult)
    assert [r.id for r in body_result.parent.results] == [s.id for s in ours.tasks.tasks]
    for index, member in enumerate(ours.tasks.tasks):
        assert member.options["group_index"] == index
        assert member.options["chord"] is ours.body
    g_ours = tq.group(t["add"].s(1, 1), tq.group(t["add"].s(2, 2), t["add"].s(3, 3)))
    g_theirs = celery.group(c["add"].s(1, 1), celery.group(c["add"].s(2, 2), c["add"].s(3, 3)))
    assert norm(g_ours.freeze().as_tuple()) == norm(g_theirs.freeze().as_tuple())
    assert norm(g_ours) == norm(g_theirs)


def test_chord_header_carries_the_body_as_in_the_capture(pair: Pair) -> None:
    """``chord.txt``: the body in ``embed.chord`` has options task_id, reply_to, group_id."""
    workflow = tq.chord([pair.t["add"].s(i, i) for i in range(3)], pair.t["xsum"].s())
    workflow.freeze()
    body = workflow.tasks.tasks[0].options["chord"]
    assert set(body.options) >= {"task_id", "reply_to"}
    assert {k: body[k] for k in ("task", "args", "kwargs", "subtask_type", "immutable")} == {
        "task": "canvas.xsum", "args": [], "kwargs": {}, "subtask_type": None,
        "immutable": False}


def test_chord_size_counts_parts_like_celery(pair: Pair) -> None:
    t, c = pair.t, pair.c
    ours = tq.chord([t["add"].s(1, 1) | t["add"].s(2), tq.group(t["add"].s(1, 1),
                                                                t["add"].s(2, 2))], t["xsum"].s())
    theirs = celery.chord([c["add"].s(1, 1) | c["add"].s(2), celery.group(
        c["add"].s(1, 1), c["add"].s(2, 2))], c["xsum"].s())
    assert len(ours) == theirs.__length_hint__() == 3


def test_map_starmap_and_chunks_are_celery_builtin_signatures(pair: Pair) -> None:
    t, c = pair.t, pair.c
    assert norm(t["xsum"].map([[1, 2], [3]])) == norm(c["xsum"].map([[1, 2], [3]]))
    assert norm(t["add"].starmap([(1, 2)])) == norm(c["add"].starmap([(1, 2)]))
    ours = t["add"].chunks(zip(range(5), range(5), strict=True), 2)
    theirs = c["add"].chunks(zip(range(5), range(5), strict=True), 2)
    assert norm(ours) == norm(theirs)
    assert norm(ours.group()) == norm(theirs.group())
    assert [len(s.kwargs["it"]) for s in ours.group().tasks] == [2, 2, 1]


def test_group_link_goes_to_the_first_task_and_link_error_to_all(pair: Pair) -> None:
    t = pair.t
    g = tq.group(t["add"].s(1, 1), t["add"].s(2, 2))
    g.link(t["xsum"].s())
    g.link_error(t["on_error"].s())
    assert g.tasks[0].options["link"][0].immutable
    assert "link" not in g.tasks[1].options
    assert all(len(task.options["link_error"]) == 1 for task in g.tasks)
    with pytest.raises(TypeError):
        g.apply_async(link=t["xsum"].s())


# -- eager -----------------------------------------------------------------------------------
def test_workflows_run_eagerly_with_task_always_eager() -> None:
    app = App("canvas_eager", broker=NOWHERE, backend=NOWHERE, set_as_current=False,
              task_always_eager=True)
    try:
        fns = _bodies()
        add = app.task(name="e.add")(fns["add"])
        xsum = app.task(name="e.xsum")(fns["xsum"])
        assert (add.s(1, 1) | add.s(10))().get() == 12
        assert tq.group(add.s(i, i) for i in range(3))().get() == [0, 2, 4]
        assert tq.chord((add.s(i, i) for i in range(3)), xsum.s())().get() == 6
        assert add.starmap([(1, 2), (3, 4)]).apply_async().get() == [3, 7]
    finally:
        app.close()


# -- chord join pieces -----------------------------------------------------------------------
def test_chord_settings_give_celery_defaults_seen_in_the_capture() -> None:
    app = App("canvas_conf", broker=NOWHERE, backend=NOWHERE, set_as_current=False)
    try:
        settings = ChordSettings.from_conf(app.conf)
    finally:
        app.close()
    # chord.txt: EVALSHA ... "86400" "86400" "6" <token>; claim extended to 21; "done" EX 300.
    assert (settings.chord_expires_s, settings.group_expires_s) == (86400, 86400)
    assert (settings.claim_s, settings.publish_claim_s, settings.done_s) == (6, 21, 300)
    assert settings.ordered


def test_parts_are_encoded_as_celery_stores_them() -> None:
    ok = ChordPart("g", "tid-1", 1, states.SUCCESS, 2)
    assert json.loads(encode_part(ok)) == [1, "tid-1", "SUCCESS", 2]
    bad = ChordPart("g", "tid-2", 0, states.FAILURE, ValueError("hdr-fail"))
    assert json.loads(encode_part(bad)) == [1, "tid-2", "FAILURE", {
        "exc_type": "ValueError", "exc_message": ["hdr-fail"], "exc_module": "builtins"}]
    assert decode_parts([encode_part(ok)]) == [2]
    expected = r"Dependency tid-2 raised ValueError\('hdr-fail'\)"
    with pytest.raises(ChordError, match=expected) as info:
        decode_parts([encode_part(ok), encode_part(bad)])
    assert isinstance(info.value.__cause__, ValueError)


# -- errbacks and built-ins ------------------------------------------------------------------
def test_errback_style_follows_celerys_arity_rule(pair: Pair) -> None:
    app, t = pair.tq_app, pair.t
    assert takes_request(t["on_error"], t["on_error"].s())
    assert not takes_request(t["on_error_old"], t["on_error_old"].s())
    assert not takes_request(t["add"], t["add"].s(1))  # one argument left to fill
    assert takes_request(t["add"], t["add"].si(1))

    @app.task(name="canvas.bound_errback", bind=True)
    def bound(self: Any, request: Any, exc: Any, traceback: Any) -> None:
        return None

    assert not takes_request(bound, bound.s())  # Celery sends bound errbacks as tasks


def test_every_app_registers_celerys_builtin_tasks(pair: Pair) -> None:
    assert set(BUILTINS) <= set(pair.tq_app.tasks)
    starmap = pair.tq_app.tasks["celery.starmap"]
    task_dict = json.loads(json.dumps(pair.t["add"].s()))
    assert starmap.apply((), {"task": task_dict, "it": [[1, 2], [3, 4]]}).get() == [3, 7]
    xmap_task = pair.tq_app.tasks["celery.map"]
    assert xmap_task.apply((), {"task": dict(pair.t["xsum"].s()), "it": [[1], [2, 3]]}).get() == [
        1, 5]
    assert "celery.map" not in pair.tq_app.tasks.names()


def test_request_fields_used_by_the_continuations_exist() -> None:
    request = Request(id="a", chain=[{"task": "x"}], chord={"task": "y"}, group="g",
                      group_index=0, callbacks=[], errbacks=[], root_id="r")
    assert request.children == []
    assert request.get("group_index") == 0
