"""The services of one Maillage stack, in start order.

Each service says how to prepare its files, how to start, where it listens and
how to know it is ready. ``stack_services`` is the one place where a later part
of Maillage (bots, bridge, portal) adds its own.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from maillage.config import Config, url_host
from maillage.deploy.dav_access import WSGIDAV_CONFIG_KEY, access_directory, publish_service_account
from maillage.deploy.scaled import ensure_databases, scaled_servers_problem
from maillage.homeserver.render import pgpass_path, render_synapse
from maillage.homeserver.workers import LOOPBACK, render_nginx, scaled_ports, workers_of
from maillage.secretstore import Secrets, write_private


class PrepareError(Exception):
    """A service cannot be prepared (a server it needs does not answer…): the message says
    which and what to do, for the admin."""


@dataclass(frozen=True)
class HealthCheck:
    """An HTTP request that answers one of ``ok_status`` once the service is ready."""

    url: str
    method: str = "GET"
    auth: tuple[str, str] | None = None
    ok_status: tuple[int, ...] = (200,)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    name: str  # stable id: state file, logs, status --json
    label: str  # shown to people
    argv: list[str]
    url: str  # what a person or another service connects to
    health: HealthCheck
    port: int
    port_key: str  # the config key to change when the port is taken
    # Other ports the service listens on, with their config keys (federation…).
    more_ports: tuple[tuple[int, str], ...] = ()
    prepare: Callable[[], None] = lambda: None
    startup_timeout: float = 120.0
    env: dict[str, str] = field(default_factory=dict)


def _dav_health(url: str, user: str, password: str) -> HealthCheck:
    """A DAV server is ready once it answers an authenticated PROPFIND on its root."""
    return HealthCheck(url=url, method="PROPFIND", auth=(user, password), ok_status=(207,),
                       headers={"Depth": "0"})


def _host(config: Config) -> str:
    return url_host(config.reseau.adresse_ecoute)


def synapse_service(config: Config, secrets: Secrets, *, relaxed_rate_limits: bool = False) -> Service:
    config_file = config.data_dir / "synapse" / "homeserver.yaml"

    def prepare() -> None:
        render_synapse(config, secrets, relaxed_rate_limits=relaxed_rate_limits)

    return Service(
        name="synapse",
        label="Synapse",
        argv=[sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config_file)],
        url=config.synapse_url,
        health=HealthCheck(url=f"{config.synapse_url}/health"),
        port=config.reseau.port_synapse,
        port_key="reseau.port_synapse",
        more_ports=((config.federation.port, "federation.port"),) if config.federation.active else (),
        prepare=prepare,
        startup_timeout=180.0,
    )


def scaled_synapse_services(config: Config, secrets: Secrets) -> list[Service]:
    """The scaled profile's Synapse: its databases checked or made, the main process, each
    worker, then the front door (nginx) where clients reach Synapse."""
    config_file = config.data_dir / "synapse" / "homeserver.yaml"
    workers_dir = config.data_dir / "synapse" / "workers"

    def prepare_main() -> None:
        problem = scaled_servers_problem(config, secrets)
        if problem:
            raise PrepareError(problem)
        ensure_databases(config, secrets)
        render_synapse(config, secrets)

    internal = scaled_ports(config).main_client
    main = Service(
        name="synapse", label="Synapse (processus principal)",
        argv=[sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config_file)],
        url=config.synapse_url, health=HealthCheck(url=f"http://{LOOPBACK}:{internal}/health"),
        port=internal, port_key="deploiement.port_interne",
        more_ports=((scaled_ports(config).replication, "deploiement.port_interne"),
                    *(((config.federation.port, "federation.port"),) if config.federation.active else ())),
        prepare=prepare_main, startup_timeout=240.0, env=pg_env(config))
    workers = [Service(
        name=f"synapse-{worker.name}", label=worker.label,
        argv=[sys.executable, "-m", "synapse.app.generic_worker", "--config-path", str(config_file),
              "--config-path", str(workers_dir / f"{worker.name}.yaml")],
        url=worker.url, health=HealthCheck(url=f"{worker.url}/health"), port=worker.port,
        port_key="deploiement.port_interne", startup_timeout=180.0, env=pg_env(config))
        for worker in workers_of(config)]
    nginx_dir = config.data_dir / "routeur"
    router = Service(
        name="routeur", label="Routeur Synapse (nginx)",
        argv=[nginx_binary(), "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"), "-e", "stderr"],
        url=config.synapse_url, health=HealthCheck(url=f"{config.synapse_url}/health"),
        port=config.reseau.port_synapse, port_key="reseau.port_synapse",
        more_ports=((scaled_ports(config).bots_door, "deploiement.port_interne"),),
        prepare=lambda: _write_nginx(config, nginx_dir), startup_timeout=30.0)
    return [main, *workers, router]


def _write_nginx(config: Config, directory: Path) -> None:
    render_nginx(config, directory, config.data_dir / "logs")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def pg_env(config: Config) -> dict[str, str]:
    """Where libpq and asyncpg find the PostgreSQL password (a 0600 file), if there is one."""
    path = pgpass_path(config)
    return {"PGPASSFILE": str(path)} if path.exists() else {}


def caldav_service(config: Config, secrets: Secrets) -> Service:
    """Radicale: calendars (VEVENT) and task lists (VTODO) of the stack."""
    directory = config.data_dir / "caldav"
    url = f"http://{_host(config)}:{config.reseau.port_caldav}/"
    user = config.caldav.utilisateur

    def prepare() -> None:
        (directory / "collections").mkdir(parents=True, exist_ok=True)
        publish_service_account(config.data_dir, user, secrets.dav_password)
        access = access_directory(config.data_dir)
        write_private(
            directory / "radicale.ini",
            "\n".join(
                [
                    "# Rendered by Maillage at every start; change maillage.toml instead.",
                    "[server]",
                    f"hosts = {config.reseau.adresse_ecoute}:{config.reseau.port_caldav}",
                    "[auth]",  # the stack's account and the agents' app passwords (the portal's)
                    "type = maillage.deploy.radicale_access",
                    f"acces = {access}",
                    "[rights]",  # the calendars the portal gives each agent, read or write
                    "type = maillage.deploy.radicale_access",
                    f"acces = {access}",
                    "permit_delete_collection = False",  # a calendar is removed from the portal
                    "permit_overwrite_collection = False",
                    "[storage]",
                    f"filesystem_folder = {directory / 'collections'}",
                    "[logging]",
                    "level = warning",
                    "mask_passwords = True",
                    "",
                ]
            ),
        )

    return Service(
        name="caldav",
        label="Agendas (Radicale)",
        argv=[sys.executable, "-m", "radicale", "--config", str(directory / "radicale.ini")],
        url=url,
        health=_dav_health(url, user, secrets.dav_password),
        port=config.reseau.port_caldav,
        port_key="reseau.port_caldav",
        prepare=prepare,
        startup_timeout=60.0,
    )


def webdav_service(config: Config, secrets: Secrets) -> Service:
    """WsgiDAV: the documents of the stack, with persistent dead properties."""
    directory = config.data_dir / "webdav"
    url = f"http://{_host(config)}:{config.reseau.port_webdav}/"
    user = config.webdav.utilisateur

    def prepare() -> None:
        (directory / "fichiers").mkdir(parents=True, exist_ok=True)
        publish_service_account(config.data_dir, user, secrets.dav_password)
        settings = {
            "host": config.reseau.adresse_ecoute,
            "port": config.reseau.port_webdav,
            "server": "cheroot",
            "provider_mapping": {"/": str(directory / "fichiers")},
            # The stack's account and the agents' app passwords, each folder read or written as
            # the portal says (maillage.deploy.wsgidav_access).
            "http_authenticator": {
                "domain_controller": "maillage.deploy.wsgidav_access.DomainController",
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
            },
            WSGIDAV_CONFIG_KEY: str(access_directory(config.data_dir)),
            # Who uploaded a document, and its hash, are WebDAV properties: keep them.
            "property_manager": {
                "class": "wsgidav.prop_man.property_manager.ShelvePropertyManager",
                "kwargs": {"storage_path": str(directory / "proprietes.shelve")},
            },
            "lock_storage": True,
            "dir_browser": {"enable": True},  # browsable with the same credentials
            "verbose": 1,
            "logging": {"enable": True, "enable_loggers": []},
        }
        write_private(directory / "wsgidav.yaml", yaml.safe_dump(settings, allow_unicode=True))

    return Service(
        name="webdav",
        label="Documents (WsgiDAV)",
        argv=[sys.executable, "-m", "wsgidav.server.server_cli", "--config", str(directory / "wsgidav.yaml")],
        url=url,
        health=_dav_health(url, user, secrets.dav_password),
        port=config.reseau.port_webdav,
        port_key="reseau.port_webdav",
        prepare=prepare,
        startup_timeout=60.0,
    )


def _own_process(config: Config, verb: str, label: str, port: int, port_key: str, health_path: str,
                 url: str = "", startup_timeout: float = 60.0) -> Service:
    """One of Maillage's own processes: ``maillage --config … <verb>``, healthy at ``health_path``."""
    local = f"http://{_host(config)}:{port}"
    profile = ["--profil", config.deploiement.profil] if config.deploiement.profil != "simple" else []
    return Service(
        name=verb, label=label,
        argv=[sys.executable, "-m", "maillage", "--config", str(config.source), *profile, verb],
        url=url or local, health=HealthCheck(url=local + health_path), port=port, port_key=port_key,
        startup_timeout=startup_timeout, env=pg_env(config),
    )


def bots_service(config: Config) -> Service:
    """The service bots (@documents…), one process, after the servers they use."""
    return _own_process(config, "bots", "Robots", config.bots.port_sante, "bots.port_sante", "/sante",
                        startup_timeout=120.0)


def email_service(config: Config) -> Service:
    """The email bridge (@courriel, its SMTP and LMTP endpoint), after Synapse."""
    return _own_process(config, "courriel", "Passerelle de courriel", config.courriel.port_sante,
                        "courriel.port_sante", "/sante", startup_timeout=120.0)


def dev_idp_service(config: Config) -> Service:
    """The bundled OIDC provider (ProConnect's protocol), when no real one is configured."""
    return _own_process(config, "idp-dev", "Identité (fournisseur de développement)", config.portail.port_oidc_dev,
                        "portail.port_oidc_dev", "/api/v2/.well-known/openid-configuration", config.oidc_issuer)


def portal_service(config: Config) -> Service:
    """The provisioning portal, once the homeserver and DAV servers it provisions answer."""
    return _own_process(config, "portail", "Portail d’administration", config.portail.port, "portail.port",
                        "/sante", config.portal_url)


def stack_services(config: Config, secrets: Secrets) -> list[Service]:
    """Every service the launcher starts, in order; an external DAV server is not started."""
    services = [] if config.portail.oidc_emetteur else [dev_idp_service(config)]
    if config.deploiement.profil == "reparti":
        services += scaled_synapse_services(config, secrets)
    else:
        services.append(synapse_service(config, secrets))
    if not config.caldav.url:
        services.append(caldav_service(config, secrets))
    if not config.webdav.url:
        services.append(webdav_service(config, secrets))
    services.append(bots_service(config))
    if config.courriel.active:
        services.append(email_service(config))
    services.append(portal_service(config))
    return services


def log_path(data_dir: Path, service: Service) -> Path:
    return data_dir / "logs" / f"{service.name}.log"
