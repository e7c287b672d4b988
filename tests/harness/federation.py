"""Three homeservers federating on loopback over TLS, certificates verified by a test CA.

- ``mairie``: a Maillage homeserver (rendered config, access rules module), partner of agglo;
- ``agglo``: a second Maillage homeserver, partner of mairie;
- ``prefecture``: a plain Synapse with no Maillage part (hand-written config, open
  federation), to prove Maillage interoperates with a standard partner.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from maillage.config import Config, load_config
from maillage.deploy.processes import RunningService
from maillage.deploy.provisioning import ensure_admin_token
from maillage.deploy.services import HealthCheck, Service, synapse_service
from maillage.deploy.tls import ServerCertificate, issue_server_certificate
from maillage.secretstore import ensure_secrets, write_private
from maillage.synapse_admin import register_with_shared_secret
from tests.harness.servers import config_document, free_port, running, toml_dump

LOOPBACK_RANGES = ["127.0.0.1/8", "::1/128"]
EXPIRED_EXTERNAL = "ancien.consultant"
VALID_EXTERNAL = "consultante.durand"


@dataclass
class Homeserver:
    name: str
    server_name: str
    client_url: str
    directory: Path
    admin_token: str = ""
    config: Config | None = None
    service: Service | None = None
    process: RunningService | None = field(default=None, repr=False)

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"


def maillage_homeserver_config(directory: Path, name: str, fed_port: int, partners: list[str],
                               tls: ServerCertificate, ca: Path, **sections: Any) -> Config:
    server_name = f"localhost:{fed_port}"
    document = config_document(
        collectivite={"nom": f"Test {name}", "nom_serveur": server_name},
        federation={"partenaires": partners, "port": fed_port, "certificat": str(tls.certificate),
                    "cle": str(tls.key), "autorites": [str(ca)], "adresses_privees": LOOPBACK_RANGES},
        **sections,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "maillage.toml").write_text(toml_dump(document))
    return load_config(directory / "maillage.toml")


def plain_synapse_service(directory: Path, fed_port: int, tls: ServerCertificate, ca: Path) -> tuple[Service, str]:
    """A standard Synapse, configured by hand as any partner administration would."""
    client_port = free_port()
    server_name = f"localhost:{fed_port}"
    shared_secret = "secret-de-test-prefecture"
    directory.mkdir(parents=True, exist_ok=True)
    from signedjson.key import generate_signing_key, write_signing_keys

    with (directory / "signing.key").open("w") as handle:
        write_signing_keys(handle, [generate_signing_key("a_1")])
    settings = {
        "server_name": server_name,
        "pid_file": str(directory / "homeserver.pid"),
        "report_stats": False,
        "listeners": [
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
             "resources": [{"names": ["client"]}]},
            {"port": fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
             "resources": [{"names": ["federation"]}]},
        ],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "media_store_path": str(directory / "media"),
        "signing_key_path": str(directory / "signing.key"),
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": "macaroon-de-test-prefecture",
        "tls_certificate_path": str(tls.certificate),
        "tls_private_key_path": str(tls.key),
        "federation_custom_ca_list": [str(ca)],
        "ip_range_whitelist": LOOPBACK_RANGES,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "rc_login": {k: {"per_second": 100, "burst_count": 1000}
                     for k in ("address", "account", "failed_attempts")},
        "rc_message": {"per_second": 100, "burst_count": 1000},
        "rc_joins": {"local": {"per_second": 100, "burst_count": 1000},
                     "remote": {"per_second": 100, "burst_count": 1000}},
    }
    write_private(directory / "homeserver.yaml", yaml.safe_dump(settings))
    url = f"http://127.0.0.1:{client_port}"
    service = Service(
        name="synapse", label="Synapse (préfecture)",
        argv=[sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(directory / "homeserver.yaml")],
        url=url, health=HealthCheck(url=f"{url}/health"), port=client_port, port_key="-",
    )
    return service, shared_secret


@dataclass
class Federation:
    mairie: Homeserver
    agglo: Homeserver
    prefecture: Homeserver
    ca: Path

    def restart_mairie(self, config: Config) -> float:
        """Render mairie's Synapse from a new config and restart it; seconds until ready."""
        import time

        from maillage.deploy import processes

        assert self.mairie.process is not None
        started = time.perf_counter()
        processes.stop(self.mairie.process)
        self.mairie.config = config
        self.mairie.service = synapse_service(config, ensure_secrets(config.data_dir), relaxed_rate_limits=True)
        self.mairie.process = processes.start(self.mairie.service, self.mairie.process.log)
        processes.wait_ready(self.mairie.process)
        return time.perf_counter() - started


@contextmanager
def three_homeservers(root: Path) -> Iterator[Federation]:
    ca_dir = root / "ca"
    ports = {name: free_port() for name in ("mairie", "agglo", "prefecture")}
    names = {name: f"localhost:{port}" for name, port in ports.items()}
    certs = {name: issue_server_certificate(ca_dir, root / name / "tls", "localhost") for name in ports}
    ca = ca_dir / "ca.pem"
    today = date.today()
    externals = [
        {"compte": f"@{EXPIRED_EXTERNAL}:{names['mairie']}", "expire_le": today - timedelta(days=1)},
        {"compte": f"@{VALID_EXTERNAL}:{names['mairie']}", "expire_le": today + timedelta(days=90)},
    ]
    configs = {
        "mairie": maillage_homeserver_config(root / "mairie", "mairie", ports["mairie"], [names["agglo"]],
                                             certs["mairie"], ca, externes=externals),
        "agglo": maillage_homeserver_config(root / "agglo", "agglo", ports["agglo"], [names["mairie"]],
                                            certs["agglo"], ca),
    }
    with ExitStack() as stack:
        servers: dict[str, Homeserver] = {}
        for name, config in configs.items():
            service = synapse_service(config, ensure_secrets(config.data_dir), relaxed_rate_limits=True)
            process = stack.enter_context(running(config.data_dir, service))
            token = asyncio.run(ensure_admin_token(config, ensure_secrets(config.data_dir)))
            servers[name] = Homeserver(name, names[name], config.synapse_url, root / name, token,
                                       config, service, process)
        service, secret = plain_synapse_service(root / "prefecture" / "synapse", ports["prefecture"],
                                                certs["prefecture"], ca)
        process = stack.enter_context(running(root / "prefecture", service))
        admin = asyncio.run(register_with_shared_secret(service.url, secret, "admin", "Admin-prefecture-1",
                                                        admin=True))
        servers["prefecture"] = Homeserver("prefecture", names["prefecture"], service.url, root / "prefecture",
                                           str(admin["access_token"]), None, service, process)
        federation = Federation(servers["mairie"], servers["agglo"], servers["prefecture"], ca)
        yield federation
        # processes restarted by a test are stopped here too
        from maillage.deploy import processes

        for server in servers.values():
            if server.process is not None:
                processes.stop(server.process)
