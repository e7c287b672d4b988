"""One stack started through `maillage up --detach`, shared by the tests that only look at it or kill its children."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_launcher import init_stack, maillage


@dataclass(frozen=True)
class Stack:
    data_dir: Path
    ports: dict[str, int]

    def status(self) -> dict[str, Any]:
        return dict(json.loads(maillage(self.data_dir, "status", "--json").stdout))

    def services(self) -> dict[str, dict[str, Any]]:
        return {service["nom"]: service for service in self.status()["services"]}


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("pile-partagee") / "pile"
    ports = init_stack(data_dir, demo=False)
    started = maillage(data_dir, "up", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    yield Stack(data_dir, ports)
    maillage(data_dir, "down")


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory of its own, for a test that starts (and stops) its own stack."""
    data_dir = tmp_path / "pile"
    yield data_dir
    if (data_dir / "maillage.toml").exists():
        maillage(data_dir, "down")
