"""A Celery app with message signing set up (``setup_security``), for the S9 interop tests.

Key, certificate and certificate store come from ``TQ_TEST_SECURITY_KEY``,
``TQ_TEST_SECURITY_CERT`` and ``TQ_TEST_SECURITY_STORE`` (throwaway files the test writes).
Started as ``celery -A tests.interop.celery_auth_app worker …``, or run as a one-shot client:
``python -m tests.interop.celery_auth_app tests.add 2 3`` prints the task's result as JSON.
Imports Celery, never tq. Only ever loaded in a subprocess: ``setup_security`` changes kombu's
process-wide serializer registry.
"""

from __future__ import annotations

import json
import os
import sys

from celery import Celery
from tests.interop.celery_app import make_celery


def make_secure_celery(url: str) -> Celery:
    celery = make_celery(url)
    celery.conf.update(
        security_key=os.environ["TQ_TEST_SECURITY_KEY"],
        security_certificate=os.environ["TQ_TEST_SECURITY_CERT"],
        security_cert_store=os.environ["TQ_TEST_SECURITY_STORE"],
        security_digest="sha256",
        task_serializer="auth",
        accept_content=["auth"],
        result_accept_content=["json"],
    )
    celery.setup_security()
    return celery


app = make_secure_celery(os.environ.get("TQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/1"))


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    result = app.send_task(name, [int(a) for a in args])
    print(json.dumps({"id": result.id, "result": result.get(timeout=20.0)}))
