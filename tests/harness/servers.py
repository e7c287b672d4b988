"""Real servers for the tests: the stack's own services, on free loopback ports."""

from __future__ import annotations

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


def free_port() -> int:
    """A loopback port free now and never handed out before in this run: the kernel may offer
    the same just-closed port twice in a row, and a config with one port twice is refused."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive loopback ports, all free now and never handed out
    (the scaled profile's internal ports follow one another)."""
    for start in range(20_000, 60_000, count):
        ports = range(start, start + count)
        if any(port in _HANDED_OUT for port in ports):
            continue
        try:
            for port in ports:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
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
