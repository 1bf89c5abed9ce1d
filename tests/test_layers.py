"""The import contracts in pyproject.toml hold: edges -> services -> core, and no import
cycles beyond the few listed there as remaining work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [str(Path(sys.executable).with_name("lint-imports")), "--config", str(config), "--no-cache"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_contracts_catch_an_upward_import(tmp_path: Path) -> None:
    """A copy of the contracts without one of the listed exceptions fails: the check is live."""
    text = (ROOT / "pyproject.toml").read_text()
    stricter = text.replace('    "scoregate.serving.runner -> scoregate.serving.supervisor",\n', "")
    assert stricter != text
    config = tmp_path / "pyproject.toml"
    config.write_text(stricter)
    result = lint_imports(config)
    assert result.returncode != 0
    assert ".supervisor -> .runner" in result.stdout or ".runner -> .supervisor" in result.stdout
