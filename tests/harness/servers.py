"""Real servers for the tests: the stack's own services, on free loopback ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from maillage.config import Config, parse_config
from maillage.deploy import processes
from maillage.deploy.processes import RunningService
from maillage.deploy.services import Service, log_path

# Every server log started by the harness, shown when a test fails.
SERVER_LOGS: list[Path] = []


_HANDED_OUT: set[int] = set()


def _ephemeral_ports() -> range:
    """The ports the kernel hands to outgoing connections: a server port taken from them may be
    taken back by any client connection (PostgreSQL, Redis, HTTP) before its server binds it."""
    try:
        low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


# Server ports come from below the ephemeral range, from an offset of this run's own so that
# two runs side by side (CI and a benchmark) do not walk the same ports.
_SERVER_PORTS = range(15_000, _ephemeral_ports().start)
_next_candidate = _SERVER_PORTS.start + (os.getpid() * 7919) % len(_SERVER_PORTS)


def _bindable(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def free_port() -> int:
    """A loopback port free now, never handed out before in this run, and outside the ephemeral
    range (a config with one port twice is refused, and a client may take an ephemeral one)."""
    global _next_candidate
    for _ in range(len(_SERVER_PORTS)):
        port = _next_candidate
        _next_candidate = port + 1 if port + 1 < _SERVER_PORTS.stop else _SERVER_PORTS.start
        if port not in _HANDED_OUT and _bindable(port):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive loopback ports, all free now and never handed out
    (the scaled profile's internal ports follow one another)."""
    for start in range(20_000, _SERVER_PORTS.stop - count, count):
        ports = range(start, start + count)
        if not any(port in _HANDED_OUT for port in ports) and all(_bindable(port) for port in ports):
            _HANDED_OUT.update(ports)
            return start
    raise RuntimeError("no range of free ports")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(value)


def toml_dump(document: dict[str, Any]) -> str:
    """Sections (tables) and arrays of tables, as an admin would write them."""
    lines: list[str] = []
    for section, keys in document.items():
        tables = keys if isinstance(keys, list) else [keys]
        header = f"[[{section}]]" if isinstance(keys, list) else f"[{section}]"
        for table in tables:
            lines.append(header)
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
            lines.append("")
    return "\n".join(lines)


PORTAL_ADMIN = "dsi@test-sur-loire.example"


def config_document(**sections: Any) -> dict[str, Any]:
    """A collectivité config on free loopback ports, as the TOML document an admin would write;
    ``sections`` override or add keys, e.g. ``federation={"ouverte": True}``."""
    document: dict[str, Any] = {
        "collectivite": {"nom": "Commune de Test-sur-Loire", "nom_serveur": "localhost"},
        "reseau": {
            "adresse_ecoute": "127.0.0.1",
            "port_synapse": free_port(),
            "port_caldav": free_port(),
            "port_webdav": free_port(),
        },
        "bots": {"port_sante": free_port()},
        "portail": {"port": free_port(), "port_oidc_dev": free_port(), "administrateurs": [PORTAL_ADMIN]},
        "courriel": {"domaine": "mairie.example", "port_smtp": free_port(), "port_lmtp": free_port(),
                     "port_sante": free_port(), "relais_hote": "127.0.0.1", "relais_port": free_port(),
                     "relais_securite": "aucune", "serveur_dns": f"127.0.0.1:{free_port()}"},
        "agenda": {"intervalle_secondes": 5},  # changes made elsewhere announced within seconds
        "projets": {"rappels_heure": "00:00"},  # the day's task reminders go out whenever a test runs
        "circuits": {"rappels_heure": "00:00", "intervalle_secondes": 5, "modeles": [
            {"nom": "arrêté", "etapes": "visa: @chef-modele, signature: @maire-modele", "service": "juridique"}]},
    }
    for name, keys in sections.items():
        if isinstance(keys, list):
            document[name] = keys
        else:
            document.setdefault(name, {}).update(keys)
    return document


def write_config(directory: Path, **sections: Any) -> Config:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "maillage.toml"
    document = config_document(**sections)
    path.write_text(toml_dump(document), encoding="utf-8")
    return parse_config(document, source=path)


@contextmanager
def running(data_dir: Path, service: Service) -> Iterator[RunningService]:
    """One service, started and ready, stopped at exit; its log kept for failure reports."""
    log = log_path(data_dir, service)
    SERVER_LOGS.append(log)
    started = processes.start(service, log)
    try:
        processes.wait_ready(started)
        yield started
    finally:
        processes.stop(started)
