"""The wheel carries the package data the code loads at run time: the Lua scripts of the
transport and the backend, the console's stylesheets, and both ``py.typed`` markers.

Builds from a copy of the sources in a temporary directory, so the work tree gets no
``build/`` or ``*.egg-info`` from the test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("core", "console"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)


def test_wheel_contains_lua_tcss_and_py_typed(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "wheels"
    _copy_sources(src)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
        cwd=src, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = out.glob("tq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    expected = {"tq/py.typed", "tq_console/py.typed"}
    for pattern in ("tq/transport/lua/*.lua", "tq/backend/lua/*.lua"):
        files = sorted((ROOT / "core").glob(pattern))
        assert files, pattern
        expected |= {f.relative_to(ROOT / "core").as_posix() for f in files}
    tcss = sorted((ROOT / "console").glob("tq_console/*.tcss"))
    assert tcss
    expected |= {f.relative_to(ROOT / "console").as_posix() for f in tcss}
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
