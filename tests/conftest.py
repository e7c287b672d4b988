"""Fixtures: real Synapse, Radicale and WsgiDAV on free loopback ports, and nio agents.

The servers are started once per test session from the project's own service
definitions and renderers (what `maillage up` runs), in a temporary directory.
Their logs are attached to the report of any failing test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from maillage.config import Config
from maillage.deploy import processes
from maillage.deploy.processes import RunningService
from maillage.deploy.provisioning import ensure_admin_token
from maillage.deploy.services import (
    Service,
    bots_service,
    caldav_service,
    email_service,
    synapse_service,
    webdav_service,
)
from maillage.i18n import current_language, set_language
from maillage.secretstore import Secrets, ensure_secrets
from tests.harness.federation import Federation, Homeserver, three_homeservers
from tests.harness.matrix import AgentFactory
from tests.harness.processes_report import failure_sections
from tests.harness.servers import SERVER_LOGS, running, write_config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class ServerStack:
    config: Config
    secrets: Secrets

    @property
    def homeserver(self) -> str:
        return self.config.synapse_url

    @property
    def server_name(self) -> str:
        return self.config.collectivite.nom_serveur


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> ServerStack:
    config = write_config(tmp_path_factory.mktemp("pile"))
    return ServerStack(config=config, secrets=ensure_secrets(config.data_dir))


@pytest.fixture(scope="session")
def synapse(stack: ServerStack) -> Iterator[ServerStack]:
    service = synapse_service(stack.config, stack.secrets, relaxed_rate_limits=True)
    with running(stack.config.data_dir, service):
        yield stack


@pytest.fixture(scope="session")
def admin_token(synapse: ServerStack) -> str:
    token = asyncio.run(ensure_admin_token(synapse.config, synapse.secrets))
    return token


@pytest.fixture(scope="session")
def caldav_process(stack: ServerStack) -> Iterator[ServiceProcess]:
    controller = ServiceProcess(stack.config, lambda config: caldav_service(config, stack.secrets))
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def caldav(caldav_process: ServiceProcess) -> str:
    """Radicale, running (started again if a previous test stopped it); its URL."""
    if caldav_process.process is None:
        caldav_process.start()
    return caldav_process.url


@pytest.fixture(scope="session")
def webdav_process(stack: ServerStack) -> Iterator[ServiceProcess]:
    controller = ServiceProcess(stack.config, lambda config: webdav_service(config, stack.secrets))
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def webdav(webdav_process: ServiceProcess) -> str:
    """WsgiDAV, running (started again if a previous test stopped it); its URL."""
    if webdav_process.process is None:
        webdav_process.start()
    return webdav_process.url


@pytest.fixture
async def agents(synapse: ServerStack, admin_token: str, tmp_path: Path) -> AsyncIterator[AgentFactory]:
    """``await agents("claire")``: a new account, logged in with E2EE, syncing."""
    factory = AgentFactory(synapse.homeserver, synapse.server_name, admin_token, tmp_path / "nio")
    yield factory
    await factory.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.failed:  # type: ignore[attr-defined]
        for title, text in failure_sections():
            report.sections.append((title, text))  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """mairie and agglo (Maillage, partners of each other) and prefecture (plain Synapse)."""
    with three_homeservers(tmp_path_factory.mktemp("federation")) as servers:
        yield servers


@pytest.fixture
async def agents_on(federation: Federation, tmp_path: Path) -> AsyncIterator[Callable[[Homeserver], AgentFactory]]:
    """``agents_on(federation.agglo)("nom")``: agents on any of the three homeservers."""
    factories: dict[str, AgentFactory] = {}

    def factory(server: Homeserver) -> AgentFactory:
        if server.name not in factories:
            factories[server.name] = AgentFactory(server.client_url, server.server_name, server.admin_token,
                                                  tmp_path / f"nio-{server.name}")
        return factories[server.name]

    yield factory
    for made in factories.values():
        await made.close()


class ServiceProcess:
    """One service of the test stack, which a test may stop (an outage) and start again."""

    def __init__(self, config: Config, make: Callable[[Config], Service]) -> None:
        self.config = config
        self.make = make
        self.service = make(config)
        self.url = self.service.url
        self.process: RunningService | None = None

    def start(self, config: Config | None = None) -> None:
        self.service = self.make(config or self.config)
        log = self.config.data_dir / "logs" / f"{self.service.name}.log"
        SERVER_LOGS.append(log)
        self.process = processes.start(self.service, log)
        processes.wait_ready(self.process)

    def stop(self) -> None:
        if self.process is not None:
            processes.stop(self.process)
            self.process = None

    def launch(self) -> None:
        """Start without waiting for its health check (a crash may come at any moment of its start).

        Call it from the test's own thread, never through ``asyncio.to_thread``: the child
        gets SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG follows the
        thread), which a worker thread does when the test's event loop closes."""
        self.service = self.make(self.config)
        log = self.config.data_dir / "logs" / f"{self.service.name}.log"
        SERVER_LOGS.append(log)
        self.process = processes.start(self.service, log)

    def wait_ready(self) -> None:
        assert self.process is not None
        processes.wait_ready(self.process)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no clean-up of any kind."""
        if self.process is not None:
            self.process.process.send_signal(signal.SIGKILL)
            self.process.process.wait(timeout=30)
            self.process = None

    async def kill_and_restart(self, after: float) -> None:
        """After ``after`` seconds, SIGKILL, then start again and wait until it is ready: a crash
        while work is in flight."""
        await asyncio.sleep(after)
        self.kill()
        self.launch()
        await asyncio.to_thread(self.wait_ready)


BotProcess = ServiceProcess


@contextmanager
def standalone_stack(directory: Path, **sections: Any) -> Iterator[tuple[ServerStack, ServiceProcess, ServiceProcess]]:
    """A Synapse and a bot process of their own, for a test that stops its homeserver or
    configures the bots differently without disturbing the session's stack."""
    config = write_config(directory, **sections)
    stack = ServerStack(config, ensure_secrets(config.data_dir))
    homeserver = ServiceProcess(config, lambda c: synapse_service(c, stack.secrets, relaxed_rate_limits=True))
    bots = ServiceProcess(config, bots_service)
    homeserver.start()
    try:
        asyncio.run(ensure_admin_token(config, stack.secrets))
        yield stack, homeserver, bots
    finally:
        bots.stop()
        homeserver.stop()


@contextlib.asynccontextmanager
async def agents_of_stack(stack: ServerStack, directory: Path) -> AsyncIterator[AgentFactory]:
    """Agents on a stack of a test's own (``standalone_stack``)."""
    factory = AgentFactory(stack.homeserver, stack.server_name, await ensure_admin_token(stack.config, stack.secrets),
                           directory)
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
async def own_agents(external: tuple[ServerStack, ServiceProcess, str], tmp_path: Path) -> AsyncIterator[AgentFactory]:
    """Agents on the stack of a module's ``external`` fixture (a stack with another DAV server)."""
    async with agents_of_stack(external[0], tmp_path / "nio") as factory:
        yield factory


@pytest.fixture(scope="session")
def bot_process(synapse: ServerStack, admin_token: str) -> Iterator[ServiceProcess]:
    controller = ServiceProcess(synapse.config, bots_service)
    controller.start()
    yield controller
    controller.stop()


@pytest.fixture
def bots(bot_process: ServiceProcess) -> str:
    """The bots, running (started again if a previous test stopped them); their health URL."""
    if bot_process.process is None:
        bot_process.start()
    return bot_process.url


@pytest.fixture(scope="module")
def in_french() -> Iterator[None]:
    """Messages in French for a module's tests (``pytestmark = pytest.mark.usefixtures("in_french")``)."""
    before = current_language()
    set_language("fr")
    yield
    set_language(before)


# --- the email bridge (tests/bridges, and the portal's mailbox test) ------------------


@dataclass(frozen=True)
class SenderDomain:
    """exemple.fr as the DNS tells the world: its SPF record (its mail leaves from 192.0.2.10)
    and the public key of its DKIM selector « sel »."""

    name: str
    server_ip: str
    selector: str
    private_key: bytes


@pytest.fixture(scope="session")
def dns_server(synapse: ServerStack) -> Iterator[SenderDomain]:
    """Debian's dnsmasq on the loopback port the bridge's config names, answering for exemple.fr."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    public = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.DER,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    domain = SenderDomain("exemple.fr", "192.0.2.10", "sel", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    port = synapse.config.courriel.serveur_dns.rsplit(":", 1)[1]
    log = synapse.config.data_dir / "logs" / "dnsmasq.log"
    with log.open("ab") as output:
        server = subprocess.Popen(
            ["/usr/sbin/dnsmasq", "-k", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
             "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=", "--user=root",
             f"--txt-record={domain.name},v=spf1 ip4:{domain.server_ip} -all",
             f"--txt-record={domain.selector}._domainkey.{domain.name},v=DKIM1; k=rsa; p={public}"],
            stdout=output, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    assert server.poll() is None, log.read_text()
    yield domain
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def bridge_process(synapse: ServerStack, admin_token: str, dns_server: SenderDomain) -> Iterator[ServiceProcess]:
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
