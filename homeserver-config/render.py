"""Render Synapse's configuration from the collectivité config.

The YAML is never edited by hand: it is written anew from ``maillage.toml`` and
the stack's secrets at every start, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import yaml

from maillage.config import Config
from maillage.homeserver.workers import (
    LOOPBACK,
    main_process_settings,
    scaled_ports,
    synapse_database,
    write_worker_configs,
)
from maillage.i18n import t
from maillage.secretstore import Secrets, secrets_dir, write_private

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("maillage.homeserver", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # YAML, not HTML: values go through |tojson
)


@dataclass(frozen=True)
class RenderedSynapse:
    config_file: Path
    directory: Path


def synapse_dir(config: Config) -> Path:
    return config.data_dir / "synapse"


def render_synapse(
    config: Config,
    secrets: Secrets,
    *,
    relaxed_rate_limits: bool = False,
) -> RenderedSynapse:
    """Write ``homeserver.yaml`` (0600: it holds secrets) and its log config.

    ``relaxed_rate_limits`` exists for the test harness only, which logs in many
    accounts from one address within seconds.
    """
    # The portal's parts Synapse's config names (its OpenID provider, the external accounts it
    # publishes), imported here: the portal's modules weigh on every `maillage` command.
    from maillage.portal.matrix_sso import provider_settings
    from maillage.portal.partners import published_externals

    directory = synapse_dir(config)
    (directory / "media").mkdir(parents=True, exist_ok=True)
    values = {
        "config_path": config.source,
        "profile": "single-process (SQLite)",
        "scaled": False,
        "server_name": config.collectivite.nom_serveur,
        "public_baseurl": config.public_baseurl,
        "bind_address": config.reseau.adresse_ecoute,
        "port": config.reseau.port_synapse,
        "synapse_dir": directory,
        "logs_dir": config.data_dir / "logs",
        "signing_key_path": secrets_dir(config.data_dir) / "signing.key",
        "secrets": secrets,
        "max_upload_size": f"{config.synapse.taille_max_fichier_mo}M",
        "turn": config.synapse.turn,
        "federation": config.federation,
        "federation_certificate": config.resolve(config.federation.certificat),
        "federation_key": config.resolve(config.federation.cle),
        "federation_authorities": [str(config.resolve(path)) for path in config.federation.autorites],
        "externals": {e.compte: e.expire_le.isoformat() for e in config.externes},
        "externals_file": published_externals(config.data_dir),
        "language": config.collectivite.langue,
        "smtp": config.smtp if config.smtp.hote else None,
        "app_name": f"Maillage — {config.collectivite.nom}",
        "relaxed_rate_limits": relaxed_rate_limits,
        # Agents sign in to Matrix through the portal, which signs them in at ProConnect.
        "oidc_provider": provider_settings(config, secrets.synapse_oidc_secret),
        "sso_templates": write_sso_templates(directory / "modeles", config.collectivite.langue),
        "appservices": appservice_registrations(config, secrets),
    }
    if config.deploiement.profil == "reparti":
        values |= scaled_values(config, secrets, directory)
    config_file = directory / "homeserver.yaml"
    write_private(config_file, _TEMPLATES.get_template("homeserver.yaml.j2").render(values))
    (directory / "log.yaml").write_text(_TEMPLATES.get_template("log.yaml.j2").render(values))
    return RenderedSynapse(config_file=config_file, directory=directory)


def scaled_values(config: Config, secrets: Secrets, directory: Path) -> dict[str, object]:
    """The template's values for the scaled profile; the workers' own files written beside."""
    ports = scaled_ports(config)
    passfile = write_pgpass(config, secrets)
    write_worker_configs(config, directory / "workers", directory / "log.yaml", passfile)
    return {
        "profile": "scaled (PostgreSQL, Redis, workers)",
        "scaled": True,
        "internal_port": ports.main_client,
        "replication_port": ports.replication,
        "loopback": LOOPBACK,
        "database": synapse_database(config, passfile),
        "scaled_settings": main_process_settings(config, secrets.redis_password),
    }


def write_pgpass(config: Config, secrets: Secrets) -> Path | None:
    """libpq's password file (0600) when the PostgreSQL server wants a password: Synapse and
    Maillage's own processes read it (PGPASSFILE), so it is never on a command line."""
    if not secrets.postgresql_password:
        return None
    server = urlsplit(config.deploiement.postgresql)
    escaped = secrets.postgresql_password.replace("\\", "\\\\").replace(":", "\\:")
    path = pgpass_path(config)
    write_private(path, f"{server.hostname}:{server.port or 5432}:*:{server.username or 'postgres'}:{escaped}\n")
    return path


def pgpass_path(config: Config) -> Path:
    return secrets_dir(config.data_dir) / "pgpass"


SSO_PAGES = {  # Synapse's own pages on an agent's way in (its own are English)
    "_base.html": "synapse_base.html.j2",
    "sso_redirect_confirm.html": "sso_redirect_confirm.html.j2",
    "sso_error.html": "sso_error.html.j2",
    "sso_account_deactivated.html": "sso_account_deactivated.html.j2",
}


def write_sso_templates(directory: Path, language: str) -> Path:
    """Synapse's custom template directory, in the collectivité's language."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, template in SSO_PAGES.items():
        page = _TEMPLATES.get_template(template).render(t=t, language=language)
        (directory / name).write_text(page, encoding="utf-8")
    return directory


def appservice_registrations(config: Config, secrets: Secrets) -> list[str]:
    """The registrations Synapse loads: the email bridge's, the bots' when Synapse pushes them events."""
    files = [write_email_registration(config, secrets)] if config.courriel.active else []
    if config.bots_pushed:
        files.append(write_bots_registration(config, secrets))
    return [str(path) for path in files]


# The bots' accounts (each bot class's ``localpart``), named here so that rendering
# Synapse's configuration does not load the bots.
BOT_LOCALPARTS = ("documents", "agenda", "projets")
BOTS_SENDER = "_maillage_robots"


def write_bots_registration(config: Config, secrets: Secrets) -> Path:
    """The bots' appservice registration: Synapse pushes every event of the rooms the bots
    are in to their process (``/_matrix/app/v1/transactions`` on ``[bots] port_sante``), so
    no bot has to sync a timeline whose cost grows with its rooms. Not exclusive: the bots
    keep their accounts, devices and access tokens; the namespace only says what to push."""
    server = re.escape(config.collectivite.nom_serveur)
    return _write_registration(config, "robots-registration.yaml", {
        "id": "maillage-robots", "url": f"http://127.0.0.1:{config.bots.port_sante}",
        "as_token": secrets.bots_as_token, "hs_token": secrets.bots_hs_token, "sender_localpart": BOTS_SENDER,
    }, {"exclusive": False, "regex": f"@({'|'.join(BOT_LOCALPARTS)}):{server}"})


def _write_registration(config: Config, name: str, service: dict[str, object], users: dict[str, object]) -> Path:
    """An appservice registration (0600: it holds its two tokens) in Synapse's folder."""
    registration = {**service, "rate_limited": False,
                    "namespaces": {"users": [users], "aliases": [], "rooms": []}}
    path = synapse_dir(config) / name
    write_private(path, yaml.safe_dump(registration, allow_unicode=True, sort_keys=False))
    return path


GHOST_PREFIX = "_mail_"
BRIDGE_SENDER = "_mail_passerelle"


def write_email_registration(config: Config, secrets: Secrets) -> Path:
    """The email bridge's appservice registration. Its ghosts (``@_mail_…``, one per
    correspondent) are its own; Synapse pushes it nothing (``url`` null): the bridge reads
    rooms as its bot, and acts as its ghosts with its token."""
    server = re.escape(config.collectivite.nom_serveur)
    return _write_registration(config, "courriel-registration.yaml", {
        "id": "maillage-courriel", "url": None, "as_token": secrets.courriel_as_token,
        "hs_token": secrets.courriel_hs_token, "sender_localpart": BRIDGE_SENDER,
    }, {"exclusive": True, "regex": f"@{GHOST_PREFIX}.*:{server}"})
