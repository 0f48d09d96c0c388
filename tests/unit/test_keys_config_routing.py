"""Transport key names (wire spec sections 0, 3 and 5), the settings table, and the router."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tq.app.config import DEFAULTS, OLD_NAMES, Settings, canonical
from tq.app.routing import Route, Router
from tq.exceptions import ConfigurationError
from tq.transport import keys
from tq.transport.connection import mask_url, parse_url
from tq.transport.keys import SEP, Keys, binding_member, parse_binding_member, step_for


# -- keys -------------------------------------------------------------------------------------
def test_separator_is_kombus_two_bytes() -> None:
    assert SEP == "\x06\x16"


@pytest.mark.parametrize(
    ("priority", "key"),
    [(0, "celery"), (1, "celery"), (2, "celery"), (3, "celery\x06\x163"), (5, "celery\x06\x163"),
     (6, "celery\x06\x166"), (8, "celery\x06\x166"), (9, "celery\x06\x169")],
)
def test_priority_suffixes(priority: int, key: str) -> None:
    assert Keys().queue("celery", priority) == key


def test_step_for_picks_the_greatest_step_not_above_the_priority() -> None:
    assert [step_for(p) for p in range(10)] == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]


def test_queue_keys_are_in_pop_order() -> None:
    assert Keys().queue_keys("q") == ["q", "q\x06\x163", "q\x06\x166", "q\x06\x169"]


def test_pop_order_is_priority_major_across_queues() -> None:
    # BRPOP "celery" "prio" "celery\x06\x163" "prio\x06\x163" ... [cap: add_consumer]
    assert Keys().pop_order(["celery", "prio"]) == [
        ("celery", "celery"), ("prio", "prio"),
        ("celery\x06\x163", "celery"), ("prio\x06\x163", "prio"),
        ("celery\x06\x166", "celery"), ("prio\x06\x166", "prio"),
        ("celery\x06\x169", "celery"), ("prio\x06\x169", "prio"),
    ]


def test_binding_members_and_tables() -> None:
    k = Keys()
    assert k.binding("celery") == "_kombu.binding.celery"
    assert k.binding_permanent("celery") == "_kombu.binding_permanent.celery"
    assert k.binding_deadlines == "_kombu.binding_deadlines"
    member = binding_member("celery", "", "celery")
    assert member == "celery\x06\x16\x06\x16celery"
    assert parse_binding_member(member) == ("celery", "", "celery")
    topic = "jobs.*\x06\x16^jobs\\.[^\\.]+$\x06\x16tq_a"
    assert parse_binding_member(topic) == ("jobs.*", "^jobs\\.[^\\.]+$", "tq_a")
    assert parse_binding_member("garbage") == ("", "", "garbage")


def test_unacked_and_tq_keys() -> None:
    k = Keys()
    assert (k.unacked, k.unacked_index, k.unacked_mutex) == (
        "unacked", "unacked_index", "unacked_mutex")
    assert (k.dead, k.dead_seq, k.revoked, k.actions) == (
        "tq.dead", "tq.dead.seq", "tq.revoked", "tq.actions")


def test_fanout_channel_names() -> None:
    k = Keys(db=0)
    assert k.fanout_channel("celery.pidbox") == "/0.celery.pidbox"
    assert k.fanout_channel("celeryev", "worker.heartbeat") == "/0.celeryev/worker.heartbeat"
    assert Keys(db=5).fanout_channel("celeryev", "task.multi") == "/5.celeryev/task.multi"


def test_pidbox_names() -> None:
    k = Keys()
    assert k.pidbox_exchange() == "celery.pidbox"
    assert k.reply_exchange() == "reply.celery.pidbox"
    assert k.pidbox_queue("w1@lab") == "w1@lab.celery.pidbox"
    assert k.reply_queue("oid") == "oid.reply.celery.pidbox"


def test_global_keyprefix_prefixes_every_key_and_channel_but_no_value() -> None:
    k = Keys(prefix="pfx:", db=0)
    assert k.queue("celery", 3) == "pfx:celery\x06\x163"
    assert k.queue_keys("celery")[0] == "pfx:celery"
    assert [key for key, _ in k.pop_order(["celery"])][-1] == "pfx:celery\x06\x169"
    assert [q for _, q in k.pop_order(["celery"])] == ["celery"] * 4  # queue names unprefixed
    assert (k.unacked, k.unacked_index, k.unacked_mutex) == (
        "pfx:unacked", "pfx:unacked_index", "pfx:unacked_mutex")
    assert k.binding("celery") == "pfx:_kombu.binding.celery"
    assert k.binding_deadlines == "pfx:_kombu.binding_deadlines"
    assert k.fanout_channel("celery.pidbox") == "pfx:/0.celery.pidbox"
    assert k.fanout_channel("celeryev", "task.multi") == "pfx:/0.celeryev/task.multi"
    assert k.dead == "pfx:tq.dead"
    assert binding_member("celery", "", "celery") == "celery\x06\x16\x06\x16celery"


def test_keys_module_is_the_only_speller_of_constants() -> None:
    assert keys.PRIORITY_STEPS == (0, 3, 6, 9)
    assert keys.DEAD == "tq.dead"


# -- URLs -------------------------------------------------------------------------------------
def test_parse_url_reads_db_host_and_port() -> None:
    spec = parse_url("redis://user:secret@example.org:6380/4")
    assert (spec.db, spec.host, spec.port, spec.scheme) == (4, "example.org", 6380, "redis")
    assert spec.masked == "redis://user:**@example.org:6380/4"
    assert parse_url("unix:///tmp/redis.sock?db=3").db == 3
    assert parse_url("redis://localhost").db == 0


@pytest.mark.parametrize("url", ["amqp://guest@localhost//", "redis://localhost/notanumber"])
def test_unsupported_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_url(url)


def test_mask_url_hides_passwords_only() -> None:
    assert mask_url("redis://:hunter2@h:1/0") == "redis://:**@h:1/0"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"
    assert mask_url(None) == ""


# -- settings ---------------------------------------------------------------------------------
def test_defaults_are_celerys() -> None:
    conf = Settings()
    assert conf.task_default_queue == "celery"
    assert conf.accept_content == ["json"]
    assert conf.worker_prefetch_multiplier == 4
    assert conf.result_expires == 86400
    assert conf.task_serializer == "json"


@pytest.mark.parametrize(("old", "new"), sorted(OLD_NAMES.items()))
def test_old_upper_case_names_are_translated(old: str, new: str) -> None:
    assert canonical(old) == new
    assert new in DEFAULTS
    conf = Settings()
    conf[old] = "sentinel"
    assert conf[new] == "sentinel"
    assert getattr(conf, new) == "sentinel"


def test_from_object_reads_upper_and_lower_case_settings() -> None:
    class Config:
        BROKER_URL = "redis://old/1"
        task_default_queue = "jobs"
        CELERY_ACCEPT_CONTENT = ["json", "msgpack"]
        _private = "ignored"

    conf = Settings()
    conf.from_object(Config)
    assert conf.broker_url == "redis://old/1"
    assert conf.task_default_queue == "jobs"
    assert conf.accept_content == ["json", "msgpack"]
    assert "_private" not in conf.changes()


def test_from_object_with_a_bad_module_path_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot load configuration"):
        Settings().from_object("no_such_module_for_tq_tests")


def test_environment_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = Settings({"broker_url": "redis://configured/1", "result_backend": "redis://cfg/2"})
    monkeypatch.setenv("TQ_BROKER_URL", "redis://from-env/3")
    monkeypatch.setenv("TQ_RESULT_BACKEND", "redis://from-env/4")
    assert conf.broker_url == "redis://from-env/3"
    assert conf["result_backend"] == "redis://from-env/4"
    monkeypatch.delenv("TQ_BROKER_URL")
    assert conf.broker_url == "redis://configured/1"


def test_unknown_setting_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no setting named"):
        Settings().no_such_setting  # noqa: B018


def test_masked_hides_url_passwords_and_secret_settings() -> None:
    conf = Settings({
        "broker_url": "redis://:brokerpass@h/1",
        "result_backend": "redis://u:backendpass@h/2",
        "stripe_secret_key": "sk_live_123",
        "my_api_token": "tok",
        "worker_control_key": "k",
    })
    masked = conf.masked()
    text = repr(masked)
    for secret in ("brokerpass", "backendpass", "sk_live_123", "'tok'"):
        assert secret not in text
    assert masked["broker_url"] == "redis://:**@h/1"
    assert masked["stripe_secret_key"] == "********"
    assert masked["task_default_queue"] == "celery"


# -- routing ----------------------------------------------------------------------------------
def route(routes: Any, name: str = "proj.tasks.add", queues: Any = None,
          **options: Any) -> Route:
    return Router(routes, "celery", queues).route(name, (), {}, options)


def test_no_routes_means_the_default_queue_on_the_anonymous_exchange() -> None:
    assert route(None) == Route(queue="celery", exchange="", routing_key=None, priority=None)


def test_exact_name_route() -> None:
    assert route({"proj.tasks.add": {"queue": "math"}}).queue == "math"
    assert route({"proj.tasks.add": "math"}).queue == "math"  # a bare queue name


def test_glob_route() -> None:
    routes = {"proj.tasks.*": {"queue": "proj", "priority": 5}, "other.*": "other"}
    assert route(routes) == Route(queue="proj", exchange="", routing_key=None, priority=5)
    assert route(routes, name="other.x").queue == "other"
    assert route(routes, name="unrouted").queue == "celery"


def test_regex_route() -> None:
    assert route({re.compile(r"proj\..*add$"): "adders"}).queue == "adders"


def test_exact_name_beats_glob() -> None:
    routes = {"proj.*": "glob", "proj.tasks.add": "exact"}
    assert route(routes).queue == "exact"


def test_function_route_and_list_order() -> None:
    seen: list[tuple[Any, ...]] = []

    def by_function(name: str, args: Any, kwargs: Any, options: Any, task: Any = None,
                    **kw: Any) -> dict[str, Any] | None:
        seen.append((name, options))
        return {"queue": "fn"} if name.endswith("add") else None

    routes = [by_function, {"proj.*": "dict"}]
    assert route(routes).queue == "fn"
    assert route(routes, name="proj.mul").queue == "dict"
    assert seen[0][0] == "proj.tasks.add"


def test_queue_option_wins_over_routes() -> None:
    assert route({"proj.*": "routed"}, queue="explicit").queue == "explicit"
    assert route({"proj.*": {"queue": "routed", "priority": 3}}, priority=7).priority == 7


def test_named_exchange_and_routing_key_are_kept() -> None:
    r = route({"proj.*": {"queue": "q", "exchange": "jobs", "routing_key": "jobs.add"}})
    assert (r.queue, r.exchange, r.routing_key) == ("q", "jobs", "jobs.add")


def test_direct_exchange_named_like_its_queue_becomes_anonymous() -> None:
    r = route({"proj.*": {"queue": "q", "exchange": "q", "routing_key": "q"}})
    assert (r.exchange, r.routing_key) == ("", "q")


def test_task_queues_supply_exchange_and_routing_key() -> None:
    queues = [{"name": "topicq", "exchange": "jobs", "routing_key": "jobs.#"}]
    r = route({"proj.*": "topicq"}, queues=queues)
    assert (r.queue, r.exchange, r.routing_key) == ("topicq", "jobs", "jobs.#")


def test_a_route_that_is_not_a_dict_or_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        route({"proj.*": 42})
