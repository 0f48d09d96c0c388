"""The console's own layering (STYLE.md rule 4), checked on the import statements.

``app`` → ``screens | bridge`` → ``widgets`` → ``messages | format``; only ``bridge`` (and
``cli``) may reach into tq runtime objects; screens and widgets may use ``tq.worker.snapshot``,
``tq.app.event_state`` and ``tq.states`` only, and never ``redis``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.console

PACKAGE = Path(__file__).resolve().parents[2] / "console" / "tq_console"
#: tq modules the display layers may import (data only).
TQ_DATA = {"tq.worker.snapshot", "tq.app.event_state", "tq.states"}
#: For each layer, the tq_console modules it must not import.
FORBIDDEN = {
    "widgets": ("tq_console.app", "tq_console.screens", "tq_console.bridge", "tq_console.cli"),
    "screens": ("tq_console.app", "tq_console.bridge", "tq_console.cli"),
    "messages": ("tq_console.app", "tq_console.screens", "tq_console.widgets", "tq_console.bridge"),
    "format": ("tq_console.app", "tq_console.screens", "tq_console.widgets", "tq_console.bridge"),
    "bridge": ("tq_console.app", "tq_console.screens", "tq_console.widgets", "textual"),
}


def _imports(path: Path) -> set[str]:
    """Modules imported at run time (``if TYPE_CHECKING:`` blocks are skipped)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = [ast.Pass()]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _layer_files(layer: str) -> list[Path]:
    folder = PACKAGE / layer
    return sorted(folder.glob("*.py")) if folder.is_dir() else [PACKAGE / f"{layer}.py"]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_is_below_it(layer: str) -> None:
    for path in _layer_files(layer):
        bad = {
            name
            for name in _imports(path)
            for forbidden in FORBIDDEN[layer]
            if name == forbidden or name.startswith(f"{forbidden}.")
        }
        assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("layer", ["screens", "widgets", "messages", "format"])
def test_display_layers_touch_only_tq_data_and_never_redis(layer: str) -> None:
    for path in _layer_files(layer):
        imported = _imports(path)
        tq = {
            name
            for name in imported
            if (name == "tq" or name.startswith("tq."))
            and not any(name == allowed or name.startswith(f"{allowed}.") for allowed in TQ_DATA)
            and name not in TQ_DATA
        }
        # "from tq import states" shows up as "tq" and "tq.states"; only the latter counts.
        tq.discard("tq")
        assert not tq, f"{path.name} imports {sorted(tq)}"
        assert not {n for n in imported if n == "redis" or n.startswith("redis.")}, path.name
