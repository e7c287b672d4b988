"""The email bridge, started as ``maillage up`` starts it, beside the session's Synapse (which
knows its appservice registration from the same rendering)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from maillage.deploy.services import email_service
from tests.conftest import ServerStack, ServiceProcess


@pytest.fixture(scope="session")
def bridge_process(synapse: ServerStack, admin_token: str) -> Iterator[ServiceProcess]:
    controller = ServiceProcess(synapse.config, email_service)
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def bridge(bridge_process: ServiceProcess) -> ServiceProcess:
    """The bridge, running (started again if a previous test stopped it)."""
    if bridge_process.process is None:
        bridge_process.start()
    return bridge_process
