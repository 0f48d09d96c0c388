"""The dependency rules of STYLE.md: import-linter's contracts (pyproject.toml), and a
subprocess check for what the static graph cannot see (deferred imports): importing tq, the
worker runtime and beat loads none of the console or its UI libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI_MODULES = ("tq_console", "textual", "rich", "click")


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"import-linter is not installed in {sys.prefix}"
    done = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: " in done.stdout and " 0 broken" in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize("module", ["tq", "tq.worker.runtime", "tq.beat"])
def test_core_imports_load_no_console_or_ui_library(module: str) -> None:
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {UI_MODULES!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
