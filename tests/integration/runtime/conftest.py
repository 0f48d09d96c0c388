"""Fixtures of the worker-runtime tests; they live in ``tests/integration/runtime_fixtures.py``
(imported here by name) so ``tests/conftest.py`` stays another engineer's."""

from tests.integration.runtime_fixtures import app_conf, broker, ledger, make_runtime

__all__ = ["app_conf", "broker", "ledger", "make_runtime"]
