"""Result meta as Celery stores it, and Celery-style exception encoding.

A meta is ``{"status", "result", "traceback", "children", "date_done", "task_id"}`` plus
``group_id`` / ``parent_id`` when known and the ``result_extended`` fields. Exceptions are
``{"exc_type", "exc_message", "exc_module"}``.

Rebuilding an exception never imports a module named in a stored result (RELIABILITY.md S2):
builtins and tq's own (Celery-named) exceptions come back as themselves; a class from a module
this process has *already* imported comes back as itself; anything else becomes a
``RemoteError`` that carries the stored type and module names.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import sys
from typing import Any

from tq import states
from tq.exceptions import CELERY_COMPAT_EXCEPTIONS, RemoteError
from tq.protocol.serializers import dumps_json

TASK_KEY_PREFIX = "celery-task-meta-"
GROUP_KEY_PREFIX = "celery-taskset-meta-"
#: Module name under which tq's task-control exceptions are stored, so Celery rebuilds them.
CELERY_EXC_MODULE = "celery.exceptions"


def now_iso() -> str:
    """``date_done``: UTC now in ISO-8601 with ``+00:00``."""
    return dt.datetime.now(dt.UTC).isoformat()


def _json_safe(value: Any) -> Any:
    try:
        dumps_json(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """Celery's JSON shape of an exception."""
    cls = type(exc)
    module = cls.__module__
    if module == "tq.exceptions" and cls.__name__ in CELERY_COMPAT_EXCEPTIONS:
        module = CELERY_EXC_MODULE
    if isinstance(exc, RemoteError):
        return {
            "exc_type": exc.exc_type,
            "exc_message": [_json_safe(a) for a in exc.args],
            "exc_module": exc.exc_module,
        }
    return {
        "exc_type": cls.__qualname__,
        "exc_message": [_json_safe(a) for a in exc.args],
        "exc_module": module,
    }


def _loaded_exception_class(module: str | None, name: str) -> type[BaseException] | None:
    if module in (None, "builtins", "exceptions"):
        cls = getattr(builtins, name, None)
    elif module in (CELERY_EXC_MODULE, "tq.exceptions", "billiard.exceptions"):
        cls = CELERY_COMPAT_EXCEPTIONS.get(name)
        if cls is None and module in sys.modules:
            cls = getattr(sys.modules[module], name, None)
    else:
        mod = sys.modules.get(module or "")  # never import: only what is already loaded
        cls = mod
        for part in name.split("."):
            cls = getattr(cls, part, None) if cls is not None else None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    return None


def decode_exception(data: Any) -> BaseException:
    """Rebuild an exception from its stored dict, safely (see the module docstring)."""
    if isinstance(data, BaseException):
        return data
    if not isinstance(data, dict) or "exc_type" not in data:
        return RemoteError("Exception", None, data)
    name = str(data.get("exc_type"))
    module = data.get("exc_module")
    message = data.get("exc_message", [])
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    cls = _loaded_exception_class(module if isinstance(module, str) else None, name)
    if cls is None:
        return RemoteError(name, module if isinstance(module, str) else None, *args)
    try:
        return cls(*args)
    except Exception:
        exc = cls.__new__(cls)
        exc.args = args
        return exc


def build_meta(
    task_id: str,
    status: str,
    result: Any,
    traceback: str | None = None,
    children: list[Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A result meta in Celery's field order."""
    if status in states.EXCEPTION_STATES and isinstance(result, BaseException):
        result = encode_exception(result)
    meta: dict[str, Any] = {
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": children if children is not None else [],
        "date_done": now_iso() if status in states.READY_STATES else None,
        "task_id": task_id,
    }
    if extra:
        meta.update({k: v for k, v in extra.items() if v is not None or k in ("parent_id",)})
    return meta


def dumps_meta(meta: dict[str, Any]) -> str:
    """Meta JSON text; a result JSON cannot carry is stored as its repr."""
    try:
        return dumps_json(meta)
    except (TypeError, ValueError):
        safe = dict(meta)
        safe["result"] = repr(meta.get("result"))
        return dumps_json(safe)


def loads_meta(raw: bytes | str | None, task_id: str) -> dict[str, Any]:
    """Parse a stored meta; a missing key is PENDING."""
    if raw is None:
        return {"status": states.PENDING, "result": None, "traceback": None, "task_id": task_id}
    from tq.protocol.serializers import loads_json

    meta = loads_json(raw)
    if not isinstance(meta, dict):
        return {"status": states.PENDING, "result": None, "traceback": None, "task_id": task_id}
    meta.setdefault("task_id", task_id)
    return meta


def result_value(meta: dict[str, Any]) -> Any:
    """The value a reader sees: the return value, or the exception for exception states."""
    if meta.get("status") in states.EXCEPTION_STATES:
        return decode_exception(meta.get("result"))
    return meta.get("result")


def as_tuple_children(child_ids: list[str]) -> list[Any]:
    """``children`` as Celery writes it: ``[[[id, null], null], ...]``."""
    return [[[cid, None], None] for cid in child_ids]


def json_text(value: Any) -> str:
    return json.dumps(value)
