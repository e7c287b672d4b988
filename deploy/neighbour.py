"""`maillage up --with-neighbour`: a second demo collectivité federated with the first.

The neighbour is a whole second stack (an intercommunalité) in ``<data>/voisin/``,
on the next free ports. Both trust a local CA made for them (certificates stay
verified), list each other as partners, and share a ``partenaires`` room where
their directors general meet.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from urllib.parse import quote

import httpx
import tomlkit

from maillage.config import Config, ConfigError, load_config, parse_config, render_config_template
from maillage.deploy.processes import port_in_use
from maillage.deploy.provisioning import DEMO_MODELS, demo_dir, ensure_admin_token, user_id
from maillage.deploy.tls import ensure_local_ca, issue_server_certificate
from maillage.i18n import t
from maillage.secretstore import ensure_secrets, write_private
from maillage.synapse_admin import SynapseAdmin

NEIGHBOUR_DIRNAME = "voisin"
NEIGHBOUR_NAME = "Communauté d’agglomération du Val (démonstration)"
SHARED_ROOM = "Projet intercommunal — voirie"
LOOPBACK = ["127.0.0.1/8", "::1/128"]


def neighbour_dir(config: Config) -> Path:
    return config.data_dir / NEIGHBOUR_DIRNAME


def neighbour_config(config: Config) -> Config | None:
    path = neighbour_dir(config) / "maillage.toml"
    return load_config(path) if path.exists() else None


def _next_free(address: str, start: int, taken: set[int]) -> int:
    port = start
    while port in taken or port_in_use(address, port):
        port += 1
    taken.add(port)
    return port


def _federate(document: tomlkit.TOMLDocument, partner: str, port: int, tls_dir: Path, ca: Path) -> None:
    federation = document.setdefault("federation", tomlkit.table())
    partners = [str(p) for p in federation.get("partenaires", [])]
    if partner not in partners:
        partners.append(partner)
    values = {"partenaires": partners, "port": port, "certificat": str(tls_dir / "federation.crt"),
              "cle": str(tls_dir / "federation.key"), "autorites": [str(ca)], "adresses_privees": LOOPBACK}
    for key, value in values.items():
        federation[key] = value


def _write_checked(path: Path, document: tomlkit.TOMLDocument) -> Config:
    text = tomlkit.dumps(document)
    config = parse_config(tomllib.loads(text), source=path)  # refused: nothing written
    path.write_text(text, encoding="utf-8")
    return config


def prepare_neighbour(config: Config) -> tuple[Config, Config]:
    """The main config, federated with the neighbour's (created on first use)."""
    if not config.demo.activee:
        raise ConfigError(config.source, [t("neighbour.demo_only")])
    main_port = config.federation.port
    if ":" not in config.collectivite.nom_serveur and main_port != 8448:
        raise ConfigError(config.source, [t("neighbour.port_in_name", port=main_port)])
    ca_dir = config.data_dir / "federation-ca"
    ca = ensure_local_ca(ca_dir)
    existing = neighbour_config(config)
    if existing is None:
        existing = _create_neighbour(config, ca_dir, ca)
    main_tls = config.data_dir / "tls"
    if not (main_tls / "federation.crt").exists():
        issue_server_certificate(ca_dir, main_tls, "localhost")
    document = tomlkit.parse(config.source.read_text("utf-8"))
    _federate(document, existing.collectivite.nom_serveur, main_port, main_tls, ca)
    return _write_checked(config.source, document), existing


def _create_neighbour(config: Config, ca_dir: Path, ca: Path) -> Config:
    address = config.reseau.adresse_ecoute
    taken = {config.reseau.port_synapse, config.reseau.port_caldav, config.reseau.port_webdav,
             config.federation.port, config.bots.port_sante, config.portail.port, config.portail.port_oidc_dev,
             config.courriel.port_smtp, config.courriel.port_lmtp, config.courriel.port_sante}
    federation_port = _next_free(address, config.federation.port + 1, taken)
    directory = neighbour_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    server_name = f"localhost:{federation_port}"
    document = tomlkit.parse(render_config_template(NEIGHBOUR_NAME, server_name, demo=True))
    document["reseau"]["port_synapse"] = _next_free(address, config.reseau.port_synapse + 1, taken)  # type: ignore[index]
    document["reseau"]["port_caldav"] = _next_free(address, config.reseau.port_caldav + 1, taken)  # type: ignore[index]
    document["reseau"]["port_webdav"] = _next_free(address, config.reseau.port_webdav + 1, taken)  # type: ignore[index]
    document["bots"]["port_sante"] = _next_free(address, config.bots.port_sante + 1, taken)  # type: ignore[index]
    document["portail"]["port"] = _next_free(address, config.portail.port + 2, taken)  # type: ignore[index]
    document["portail"]["port_oidc_dev"] = _next_free(address, config.portail.port_oidc_dev + 2, taken)  # type: ignore[index]
    for key in ("port_smtp", "port_lmtp", "port_sante"):
        document["courriel"][key] = _next_free(address, getattr(config.courriel, key) + 10, taken)  # type: ignore[index]
    document["demo"]["modele"] = "intercommunalite"  # type: ignore[index]
    tls_dir = directory / "tls"
    issue_server_certificate(ca_dir, tls_dir, "localhost")
    _federate(document, config.collectivite.nom_serveur, federation_port, tls_dir, ca)
    neighbour = _write_checked(directory / "maillage.toml", document)
    ensure_secrets(neighbour.data_dir)
    return neighbour


async def seed_shared_room(main: Config, neighbour: Config) -> None:
    """The directors general of both collectivités in one `partenaires` room (once)."""
    marker = demo_dir(main) / "salon-voisin.json"
    if marker.exists():
        return
    main_token = await ensure_admin_token(main, ensure_secrets(main.data_dir))
    neighbour_token = await ensure_admin_token(neighbour, ensure_secrets(neighbour.data_dir))
    guests = [user_id(neighbour, a.localpart) for a in DEMO_MODELS["intercommunalite"].agents if a.head_of_service]
    hosts = [user_id(main, a.localpart) for a in DEMO_MODELS["commune"].agents if a.head_of_service]
    async with SynapseAdmin(main.synapse_url, main_token) as admin:
        room_id = await admin.create_room({
            "name": SHARED_ROOM, "preset": "private_chat", "invite": guests,
            "initial_state": [{"type": "fr.maillage.acces", "state_key": "", "content": {"acces": "partenaires"}}],
        })
        for host in hosts:
            await admin.force_join(room_id, host)
    for guest in guests:
        await _join_as(neighbour, neighbour_token, guest, room_id, main.collectivite.nom_serveur)
    write_private(marker, json.dumps({"room_id": room_id}))


async def _join_as(config: Config, admin_token: str, user: str, room_id: str, via: str) -> None:
    """Accept an invitation for a local agent, with a short-lived token of its own."""
    async with httpx.AsyncClient(base_url=config.synapse_url, timeout=60) as http:
        login = await http.post(f"/_synapse/admin/v1/users/{quote(user)}/login",
                                headers={"Authorization": f"Bearer {admin_token}"}, json={})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for _ in range(30):  # the invitation crosses federation first
            joined = await http.post(f"/_matrix/client/v3/join/{quote(room_id)}?server_name={quote(via)}",
                                     headers=headers, json={})
            if joined.is_success:
                break
            await asyncio.sleep(1)
        await http.post("/_matrix/client/v3/logout", headers=headers)
        joined.raise_for_status()
