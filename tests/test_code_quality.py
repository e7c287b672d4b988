"""ruff and mypy (strict) are clean: the code stays readable for the next engineer."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _package_tree(destination: Path) -> Path:
    """The `maillage` import package as a tree of links, following pyproject's package-dir.

    The repository keeps one top-level folder per part (bots/, deploy/, …) mapped into
    one import package; mypy does not read that mapping, so it checks this tree.
    """
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        target = destination.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / folder).iterdir():
            if entry.name != "__pycache__" and not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry)
    return destination


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing(tmp_path: Path) -> None:
    tree = _package_tree(tmp_path / "arbre")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".cache" / "mypy"),
         str(tree / "maillage"), str(ROOT / "tests")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "MYPYPATH": str(tree)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
