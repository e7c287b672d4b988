"""The portal and the development OIDC provider, started as ``maillage up`` starts them, beside
the session's Synapse, Radicale, WsgiDAV and bots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from maillage.deploy.services import dev_idp_service, portal_service
from maillage.portal.idp_dev import ensure_admin_accounts
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.browserless import Browser
from tests.harness.servers import PORTAL_ADMIN, running


@dataclass(frozen=True)
class PortalStack:
    stack: ServerStack
    url: str
    issuer: str
    admin_email: str
    admin_password: str
    process: ServiceProcess  # the portal's: a test may kill it and start it again


@pytest.fixture(scope="session")
def portal(synapse: ServerStack, admin_token: str, webdav_process: ServiceProcess, caldav_process: ServiceProcess,
           bot_process: ServiceProcess) -> Iterator[PortalStack]:
    config = synapse.config
    password = ensure_admin_accounts(config.data_dir, [PORTAL_ADMIN])[PORTAL_ADMIN]
    process = ServiceProcess(config, portal_service)
    with running(config.data_dir, dev_idp_service(config)):
        process.start()
        try:
            yield PortalStack(synapse, config.portal_url, config.oidc_issuer, PORTAL_ADMIN, password, process)
        finally:
            process.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    client = Browser()
    yield client
    await client.close()
