"""The layering rule: a package imports only from the layers below it (pyproject.toml's import-linter contract).

config, messages -> faces -> index -> actors -> ui_kivy -> benchmarks -> tests. Imports inside
functions count too. The first test checks the project as it is; the second proves the check
can fail, and names the forbidden import, on a copy with one forbidden import added.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT

PACKAGES = ("config", "messages", "faces", "index", "actors", "ui_kivy", "benchmarks", "tests")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: import-linter is pinned in requirements.lock (make install)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_package_imports_only_from_the_layers_below_it():
    done = _lint(PROJECT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout, done.stdout


def test_a_forbidden_import_is_named(tmp_path: Path):
    """An actor importing the window (the old actors <-> ui_kivy circle) breaks the contract by name."""
    for package in PACKAGES:
        shutil.copytree(PROJECT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    matcher = tmp_path / "actors" / "matcher.py"
    matcher.write_text(matcher.read_text() + "\n\ndef _window():\n    from ui_kivy import session  # noqa: F401\n")
    done = _lint(tmp_path)
    assert done.returncode != 0, done.stdout
    assert "BROKEN" in done.stdout and "actors.matcher -> ui_kivy.session" in done.stdout, done.stdout
