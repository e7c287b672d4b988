"""The email bridge, started as ``maillage up`` starts it, beside the session's Synapse (which
knows its appservice registration from the same rendering)."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from maillage.deploy.services import email_service
from tests.conftest import ServerStack, ServiceProcess


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
