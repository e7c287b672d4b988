"""The one collectivité config file (TOML), validated on load into frozen objects.

Every part of Maillage reads this file: the Synapse renderer, the launcher, and
later the bots, the bridge and the portal. A wrong value stops everything before
anything starts, with one message per problem naming the key, the value found
and what is expected.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from maillage.i18n import t

CONFIG_FILENAME = "maillage.toml"


class ConfigError(Exception):
    """The config cannot be used; ``str()`` is the message for the admin, in French."""

    def __init__(self, path: Path | None, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        where = f" ({path})" if path else ""
        lines = [t("config.invalid", where=where), *(f"  - {p}" for p in problems)]
        super().__init__("\n".join(lines))


# --- value checks shared by several keys --------------------------------------

# Matrix spec, "Server name": hostname (IPv4, [IPv6] or DNS name) and optional port.
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


def _check_server_name(value: str) -> str:
    host, port = value, None
    if value.startswith("["):
        host, closed, rest = value[1:].partition("]")
        if not closed:
            raise ValueError(t("config.expected.server_name"))
        if rest:
            if not rest.startswith(":"):
                raise ValueError(t("config.expected.server_name"))
            port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(t("config.expected.server_name")) from None
    else:
        if value.count(":") == 1:
            host, port = value.split(":")
        if not host or len(host) > 255 or not _DNS_NAME.fullmatch(host):
            raise ValueError(t("config.expected.server_name"))
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(t("config.expected.server_name"))
    return value


def _check_http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:  # "http://[": urlsplit's own message is in English
        raise ValueError(t("config.expected.url")) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not value.isprintable() or " " in value:
        raise ValueError(t("config.expected.url"))
    return value if value.endswith("/") else value + "/"


_EMAIL = re.compile(r"[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")


def _check_email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError(t("config.expected.email"))
    return value.lower()


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a folder
        raise ValueError(t("config.expected.timezone")) from None
    return value


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        if not value.isprintable():  # an IPv6 scope takes any character: "::1%\x00"
            raise ValueError(value)
    except ValueError:
        raise ValueError(t("config.expected.ip")) from None
    return value


ServerName = Annotated[str, AfterValidator(_check_server_name)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Collectivite(_Section):
    nom: str = Field(min_length=1, max_length=120)
    nom_serveur: ServerName
    langue: Literal["fr", "en"] = "fr"
    fuseau_horaire: Annotated[str, AfterValidator(_check_timezone)] = "Europe/Paris"


class Reseau(_Section):
    adresse_ecoute: Annotated[str, AfterValidator(_check_ip)] = "127.0.0.1"
    url_publique: HttpUrl | None = None
    port_synapse: Port = 8008
    port_caldav: Port = 5232
    port_webdav: Port = 8090


class Donnees(_Section):
    repertoire: str = "."


class ServeurDav(_Section):
    """An external DAV server; an empty ``url`` means the embedded one."""

    url: Annotated[str, AfterValidator(lambda v: _check_http_url(v) if v else v)] = ""
    utilisateur: str = "maillage"


def _check_optional_file(value: str) -> str:
    if value and not Path(value).is_file():
        raise ValueError(t("config.expected.file"))
    return value


class Smtp(_Section):
    hote: str = ""
    port: Port = 587
    securite: Literal["starttls", "tls", "aucune"] = "starttls"
    utilisateur: str = ""
    expediteur: str = ""
    # The certificate authority (PEM) the relay's certificate chains to, when it is the
    # collectivité's own; empty: the system's authorities.
    ca: Annotated[str, AfterValidator(_check_optional_file)] = ""

    @model_validator(mode="after")
    def _sender_needed(self) -> Smtp:
        if self.hote and "@" not in self.expediteur:
            raise ValueError(t("config.expected.sender"))
        return self


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(t("config.expected.cidr")) from None
    return value


class Federation(_Section):
    partenaires: list[ServerName] = []
    ouverte: bool = False
    # TLS listener for other homeservers, started when federation is on.
    port: Port = 8448
    certificat: str = ""
    cle: str = ""
    # Extra certificate authorities trusted for partner servers (PEM files).
    autorites: list[str] = []
    # Private address ranges partner servers may be reached on (blocked by default).
    adresses_privees: list[Annotated[str, AfterValidator(_check_cidr)]] = []

    @property
    def active(self) -> bool:
        return bool(self.partenaires) or self.ouverte


class Externe(_Section):
    """An account given to someone outside the collectivité (consultant, citizen…)."""

    compte: str
    expire_le: date


def _check_turn_uri(value: str) -> str:
    if not re.fullmatch(r"turns?:[A-Za-z0-9.-]+(:\d{1,5})?(\?transport=(udp|tcp))?", value):
        raise ValueError(t("config.expected.turn_uri"))
    return value


class Synapse(_Section):
    taille_max_fichier_mo: int = Field(default=100, ge=1, le=4096)
    # The TURN server that relays calls through NAT (coturn, whose recipe « maillage
    # deploiement » writes), e.g. "turn:turn.mairie.example.fr:3478?transport=udp".
    turn: list[Annotated[str, AfterValidator(_check_turn_uri)]] = []


def _check_name_pattern(value: str) -> str:
    if "{nom}" not in value or "/" in value:
        raise ValueError(t("config.expected.name_pattern"))
    try:
        value.format(date="2026-11-22", service="urbanisme", nom="x")
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):  # "{date.x}", "{nom[x]}"
        raise ValueError(t("config.expected.name_pattern")) from None
    return value


class Documents(_Section):
    # How filed documents are named: {date} (Paris time), {service} (first part of the
    # room's folder), {nom} (the original name, normalised).
    modele_nom: Annotated[str, AfterValidator(_check_name_pattern)] = "{date}_{service}_{nom}"


def _check_video_pattern(value: str) -> str:
    if "{salle}" not in value:
        raise ValueError(t("config.expected.video_pattern"))
    try:
        address = value.format(salle="reunion")
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        raise ValueError(t("config.expected.video_pattern")) from None
    try:
        _check_http_url(address)
    except ValueError:
        raise ValueError(t("config.expected.video_pattern")) from None
    return value


class Agenda(_Section):
    # Seconds between two looks at each bound calendar for changes made in other apps.
    intervalle_secondes: int = Field(default=30, ge=5, le=3600)
    # The video meeting of an event: {salle} becomes a name nobody can guess.
    visio_modele: Annotated[str, AfterValidator(_check_video_pattern)] = "https://meet.jit.si/{salle}"


def _check_clock(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(t("config.expected.clock"))
    return value


class Projets(_Section):
    # Each morning at this time, one direct message per assignee: tasks due tomorrow and late.
    rappels_heure: Annotated[str, AfterValidator(_check_clock)] = "08:30"
    rappels: bool = True


def _check_circuit_steps(value: str) -> str:
    # The same reader as « !circuit lance »: a model reads as an agent would type it.
    from maillage.bots.documents.circuits.spec import read_steps
    from maillage.bots.runtime.commands import CommandError

    try:
        read_steps(value, "exemple.fr")
    except CommandError as error:
        raise ValueError(str(error)) from None
    return value


class ModeleCircuit(_Section):
    """A circuit the agents start by its name (« !circuit lance <document> modèle: arrêté »)."""

    nom: str = Field(min_length=1, max_length=60)
    # « visa: @chef.urbanisme, avis: @juridique @finances (un), signature: @maire »
    etapes: Annotated[str, AfterValidator(_check_circuit_steps)]
    # The service (first part of the room's folder) it belongs to; empty: every service.
    service: str = ""


class Circuits(_Section):
    # The collectivité's seal for signed PDFs (PEM files); empty: a self-signed one is made.
    cachet_certificat: Annotated[str, AfterValidator(_check_optional_file)] = ""
    cachet_cle: Annotated[str, AfterValidator(_check_optional_file)] = ""
    # Reminders to the actors of a step: this many days before the deadline, and on the day,
    # at this time (Paris).
    rappel_jours_avant: int = Field(default=2, ge=0, le=30)
    rappels_heure: Annotated[str, AfterValidator(_check_clock)] = "08:30"
    # Seconds between two looks for messages to send again (an actor who joined since) and reminders.
    intervalle_secondes: int = Field(default=30, ge=5, le=3600)
    modeles: list[ModeleCircuit] = []

    @model_validator(mode="after")
    def _seal_pair(self) -> Circuits:
        if bool(self.cachet_certificat) != bool(self.cachet_cle):
            raise ValueError(t("config.seal_pair"))
        names = [(m.service, m.nom.lower()) for m in self.modeles]
        if len(set(names)) != len(names):
            raise ValueError(t("config.model_twice"))
        return self


class Bots(_Section):
    # Empty: SQLite in the data directory; else a PostgreSQL URL.
    base_de_donnees: str = ""
    port_sante: Port = 8095
    # The homeserver as the bots reach it, when not the stack's own address (a reverse proxy…).
    url_serveur_matrix: Annotated[str, AfterValidator(lambda v: _check_http_url(v) if v else v)] = ""
    # Messages read back per room after an interruption; past that, the room is told what was skipped.
    rattrapage_max: int = Field(default=10_000, ge=100, le=1_000_000)
    # How long a message that cannot be decrypted yet waits for its key before its sender is told.
    attente_cles_secondes: int = Field(default=600, ge=5, le=86_400)
    # How the bots receive their rooms' messages: « synchronisation » (each bot syncs, like any
    # client), or « appservice » (Synapse pushes them, on port_sante): a sync costs the
    # homeserver in proportion to the rooms an account is in, a push does not. « automatique »:
    # appservice in the scaled profile, synchronisation in the single one (measured:
    # docs/benchmarks.md, « The bots at the scale of a département »).
    reception: Literal["automatique", "synchronisation", "appservice"] = "automatique"


class Portail(_Section):
    """The provisioning portal and who logs in to it."""

    port: Port = 8100
    # The portal's address for browsers, when behind a reverse proxy (else http://localhost:<port>/).
    url_publique: Annotated[str, AfterValidator(lambda v: _check_http_url(v) if v else v)] = ""
    # Empty: SQLite in the data directory; else a PostgreSQL URL.
    base_de_donnees: str = ""
    # The OpenID Connect provider: empty for the bundled development one (started by
    # « maillage up » on port_oidc_dev); else ProConnect's or Keycloak's issuer URL.
    oidc_emetteur: Annotated[str, AfterValidator(lambda v: _check_http_url(v) if v else v)] = ""
    oidc_client: str = Field(default="maillage-portail", min_length=1, max_length=200)
    port_oidc_dev: Port = 8101
    # Administrators: e-mail addresses, and/or a claim of the provider naming them.
    administrateurs: list[Annotated[str, AfterValidator(_check_email)]] = []
    claim_admin: str = ""


class Courriel(_Section):
    """The email bridge: service mailboxes in rooms (the collectivité's mail server relays to it)."""

    active: bool = True
    # The domain of the rooms' addresses (« urbanisme@<domaine> »); empty: the server name's host.
    domaine: str = ""
    # Where the collectivité's mail server relays (SMTP and LMTP, on the listening address).
    port_smtp: Port = 8025
    port_lmtp: Port = 8024
    port_sante: Port = 8096
    # A larger message is refused during the SMTP conversation (552), before it is received whole.
    taille_max_mo: int = Field(default=25, ge=1, le=200)
    # Messages accepted per hour from one sender address; past that, 451 (try later).
    limite_par_heure: int = Field(default=60, ge=1, le=100_000)
    # The relay replies go out through; empty: the [smtp] section's (its password: smtp_password
    # in secrets/secrets.toml).
    relais_hote: str = ""
    relais_port: Port = 587
    relais_securite: Literal["starttls", "tls", "aucune"] = "starttls"
    relais_utilisateur: str = ""
    relais_ca: Annotated[str, AfterValidator(_check_optional_file)] = ""
    # Sender checks (SPF, DKIM) shown on each message; « signaler »: a warning on an unverified
    # one; « refuser »: one its domain disowns (SPF fail) with no valid signature refused (550).
    politique_expediteur: Literal["accepter", "signaler", "refuser"] = "signaler"
    # The DNS server those checks ask (« hôte » or « hôte:port »); empty: the system's.
    serveur_dns: str = ""
    # Relays of the collectivité: for their connections, the sender's server is the one their
    # Received header names.
    relais_entrants: list[str] = ["127.0.0.1", "::1"]
    # Empty: SQLite in the data directory; else a PostgreSQL URL.
    base_de_donnees: str = ""


def _check_service_url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    """A server's URL (« postgresql://utilisateur@hôte:port »): no database, no password (it
    belongs in secrets/secrets.toml)."""
    def check(value: str) -> str:
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme not in schemes or not parts.hostname or parts.path.strip("/") \
                or parts.query or (port is not None and not 1 <= port <= 65535):
            raise ValueError(t("config.expected.service_url", example=f"{schemes[0]}://127.0.0.1"))
        if parts.password:
            raise ValueError(t("config.expected.no_password_in_url"))
        return value.rstrip("/")
    return check


class Deploiement(_Section):
    """How the stack runs: « simple » (SQLite, one Synapse process: a commune on one small
    server) or « reparti » (PostgreSQL, Redis and Synapse workers: a département). The same
    config takes both; ``maillage up --profile scaled`` picks the second for one run."""

    profil: Literal["simple", "reparti"] = "simple"
    # The PostgreSQL server, without a database and without a password (the password, if
    # any: postgresql_password in secrets/secrets.toml). Each part has its own database,
    # « <prefixe_bases>_synapse », « _bots », « _courriel », « _portail », made at first start.
    postgresql: Annotated[str, AfterValidator(_check_service_url(("postgresql", "postgres")))] = (
        "postgresql://postgres@127.0.0.1:5432")
    prefixe_bases: str = Field(default="maillage", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    redis: Annotated[str, AfterValidator(_check_service_url(("redis",)))] = "redis://127.0.0.1:6379"
    # This stack's Redis database: Synapse's shared cache keys carry no server name (a state
    # group's joined servers, by number), so two stacks on one Redis, each in the same database,
    # would read each other's and send events to the wrong servers.
    base_redis: int = Field(default=0, ge=0, le=15)
    # Synapse workers answering sync and the client's reads (one process each).
    lecteurs: int = Field(default=1, ge=1, le=32)
    # The first of the ports the Synapse processes use among themselves, on loopback (the
    # main process's own client port, replication, the bots' door, then one per worker).
    port_interne: Port = 18400

    @property
    def port_robots(self) -> int:
        """The front door's loopback port for the bots: their syncs go to a reader of their own."""
        return self.port_interne + 7


class Sauvegarde(_Section):
    """``maillage sauvegarde``: where archives go and how many are kept."""

    # Relative to the data directory's folder… or absolute (another disk, a mounted share).
    repertoire: str = "sauvegardes"
    quotidiennes: int = Field(default=7, ge=1, le=366)
    hebdomadaires: int = Field(default=4, ge=0, le=520)


class Journaux(_Section):
    """The logs of Maillage's own processes: lines for people, or JSON for a log collector."""

    format: Literal["texte", "json"] = "texte"
    niveau: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Demo(_Section):
    activee: bool = False
    # Which fictitious collectivité: a town hall, or an intercommunalité (the neighbour).
    modele: Literal["commune", "intercommunalite"] = "commune"


class Config(_Section):
    collectivite: Collectivite
    reseau: Reseau = Reseau()
    donnees: Donnees = Donnees()
    webdav: ServeurDav = ServeurDav()
    caldav: ServeurDav = ServeurDav()
    smtp: Smtp = Smtp()
    federation: Federation = Federation()
    synapse: Synapse = Synapse()
    bots: Bots = Bots()
    documents: Documents = Documents()
    agenda: Agenda = Agenda()
    projets: Projets = Projets()
    circuits: Circuits = Circuits()
    portail: Portail = Portail()
    courriel: Courriel = Courriel()
    demo: Demo = Demo()
    deploiement: Deploiement = Deploiement()
    sauvegarde: Sauvegarde = Sauvegarde()
    journaux: Journaux = Journaux()
    externes: list[Externe] = []

    # Where the file was read from; relative paths in it are relative to its folder.
    source: Path = Field(default=Path(CONFIG_FILENAME), exclude=True)

    @field_validator("source", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Path:
        return Path(value)

    @model_validator(mode="after")
    def _distinct_ports(self) -> Config:
        ports = {
            "reseau.port_synapse": self.reseau.port_synapse,
            "reseau.port_caldav": self.reseau.port_caldav,
            "reseau.port_webdav": self.reseau.port_webdav,
        }
        ports["bots.port_sante"] = self.bots.port_sante
        ports["portail.port"] = self.portail.port
        if self.courriel.active:
            ports |= {"courriel.port_smtp": self.courriel.port_smtp, "courriel.port_lmtp": self.courriel.port_lmtp,
                      "courriel.port_sante": self.courriel.port_sante}
        if not self.portail.oidc_emetteur:
            ports["portail.port_oidc_dev"] = self.portail.port_oidc_dev
        if self.federation.active:
            ports["federation.port"] = self.federation.port
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                raise ValueError(t("config.duplicate_port", port=port, first=seen[port], second=key))
            seen[port] = key
        return self

    @model_validator(mode="after")
    def _federation_needs_tls(self) -> Config:
        if self.federation.active and not (self.federation.certificat and self.federation.cle):
            raise ValueError(t("config.federation_certificate"))
        files = [("federation.certificat", self.federation.certificat), ("federation.cle", self.federation.cle)]
        files += [(f"federation.autorites.{i}", path) for i, path in enumerate(self.federation.autorites)]
        for key, path in files:
            if path and not self._names_a_file(path):
                raise ValueError(t("config.federation_file_missing", key=key, value=path))
        return self

    @model_validator(mode="after")
    def _externals_are_local(self) -> Config:
        suffix = ":" + self.collectivite.nom_serveur
        for index, external in enumerate(self.externes):
            localpart = external.compte[1:-len(suffix)] if external.compte.endswith(suffix) else ""
            if not external.compte.startswith("@") or not re.fullmatch(r"[a-z0-9._=/+-]+", localpart):
                raise ValueError(t("config.bad_value", key=f"externes.{index}.compte",
                                   value=f'"{external.compte}"',
                                   expected=t("config.expected.local_user",
                                              server=self.collectivite.nom_serveur)))
        return self

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the file's folder."""
        return (self.source.parent / path).resolve()

    def _names_a_file(self, path: str) -> bool:
        """A name no file can have (a NUL, too long for the system) names none."""
        try:
            return self.resolve(path).is_file()
        except (OSError, ValueError):
            return False

    @property
    def data_dir(self) -> Path:
        return (self.source.parent / self.donnees.repertoire).resolve()

    @property
    def public_baseurl(self) -> str:
        return self.reseau.url_publique or f"http://localhost:{self.reseau.port_synapse}/"

    @property
    def synapse_url(self) -> str:
        """Where the stack itself reaches Synapse (loopback, not the public URL)."""
        return f"http://{url_host(self.reseau.adresse_ecoute)}:{self.reseau.port_synapse}"

    @property
    def portal_url(self) -> str:
        """The portal's address for browsers (its OIDC redirect addresses hang off it)."""
        return (self.portail.url_publique or f"http://localhost:{self.portail.port}/").rstrip("/")

    @property
    def oidc_issuer(self) -> str:
        """The OIDC provider's issuer: the configured one, else the bundled development provider."""
        return self.portail.oidc_emetteur.rstrip("/") or f"http://localhost:{self.portail.port_oidc_dev}/api/v2"

    @property
    def bots_pushed(self) -> bool:
        """Whether Synapse pushes the bots their rooms' events (an application service): asked
        for, or by default in the scaled profile, where bots sit in thousands of rooms."""
        if self.bots.reception == "automatique":
            return self.deploiement.profil == "reparti"
        return self.bots.reception == "appservice"

    @property
    def bots_homeserver_url(self) -> str:
        """Where the bots reach Synapse: ``[bots] url_serveur_matrix``, else the stack's own
        address — in the scaled profile the front door's port for them, whose syncs go to a
        reader of their own: an account in thousands of rooms makes every sync it asks for
        long, and the agents' reader should not wait behind it."""
        if self.bots.url_serveur_matrix:
            return self.bots.url_serveur_matrix.rstrip("/")
        if self.deploiement.profil == "reparti":
            return f"http://127.0.0.1:{self.deploiement.port_robots}"
        return self.synapse_url


def url_host(address: str) -> str:
    """How the stack reaches one of its own listeners: loopback for a wildcard, IPv6 in brackets."""
    if address in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{address}]" if ":" in address else address


# --- loading ------------------------------------------------------------------


PROFILES = {"simple": "simple", "single": "simple", "reparti": "reparti", "réparti": "reparti",
            "scaled": "reparti"}
SCALED_DATABASES = ("bots", "courriel", "portail")  # Maillage's own, beside « synapse »


def with_profile(config: Config, profile: str | None) -> Config:
    """The config as ``profile`` runs it (``maillage up --profile scaled`` for one run; None:
    the file's own). Scaled, the bots, the bridge and the portal use PostgreSQL too: their own
    database on ``[deploiement] postgresql`` unless their ``base_de_donnees`` names one."""
    chosen = PROFILES[profile] if profile else config.deploiement.profil
    update: dict[str, Any] = {"deploiement": config.deploiement.model_copy(update={"profil": chosen})}
    if chosen == "reparti":
        for part in SCALED_DATABASES:
            section = getattr(config, part)
            if not section.base_de_donnees:
                url = f"{config.deploiement.postgresql}/{config.deploiement.prefixe_bases}_{part}"
                update[part] = section.model_copy(update={"base_de_donnees": url})
    return config.model_copy(update=update)


def config_path(config: str | os.PathLike[str] | None, data_dir: str | os.PathLike[str] | None) -> Path:
    """The config file named by ``--config`` or found in ``--data-dir``."""
    if config:
        return Path(config)
    if data_dir:
        return Path(data_dir) / CONFIG_FILENAME
    env = os.environ.get("MAILLAGE_CONFIG")
    return Path(env) if env else Path("donnees") / CONFIG_FILENAME


def load_config(path: Path) -> Config:
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, [t("config.missing_file")]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [t("config.not_toml", detail=exc)]) from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise ConfigError(path, [t("config.not_toml", detail=t("config.too_deep"))]) from None
    return parse_config(raw, source=path)


def parse_config(raw: dict[str, Any], *, source: Path) -> Config:
    try:
        return Config.model_validate({**raw, "source": source.resolve()})
    except ValidationError as exc:
        raise ConfigError(source, [_describe(error) for error in exc.errors()]) from None


def _describe(error: Any) -> str:
    kind = error["type"]
    if not error["loc"] and kind == "value_error":  # a rule across keys: its message names them
        return _expected(error)
    key = ".".join(_key_part(part) for part in error["loc"]) if error["loc"] else t("config.whole_file")
    if kind == "missing":
        return t("config.key_missing", key=key)
    if kind == "extra_forbidden":
        return t("config.key_unknown", key=key)
    value = _show(error.get("input"))
    return t("config.bad_value", key=key, value=value, expected=_expected(error))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key_part(part: object) -> str:
    """A key as it is written in TOML: quoted when it is not a bare key (``""``, ``"a.b"``)."""
    text = str(part)
    return text if _BARE_KEY.fullmatch(text) else json.dumps(text, ensure_ascii=False)


_URL_PASSWORD = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")


def _show(value: Any) -> str:
    # quoted and escaped as in TOML: a line break or a control character in a value stays visible;
    # a password written into a URL is not repeated
    if isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\1:***@", value)
    text = repr(value) if not isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "…"


def _expected(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind.startswith("int_"):
        return t("config.expected.int")
    if kind == "string_too_short":
        return t("config.expected.min_length", minimum=ctx.get("min_length", 1))
    if kind == "string_too_long":
        return t("config.expected.max_length", maximum=ctx.get("max_length", 0))
    if kind.startswith("string_"):
        return t("config.expected.text")
    if kind.startswith("date_"):
        return t("config.expected.date")
    if kind.startswith("bool_"):
        return t("config.expected.bool")
    if kind.startswith("list_"):
        return t("config.expected.list")
    if kind == "literal_error":
        return t("config.expected.one_of", choices=ctx.get("expected", ""))
    if kind == "greater_than_equal":
        return t("config.expected.range", detail=f"≥ {ctx.get('ge')}")
    if kind == "less_than_equal":
        return t("config.expected.range", detail=f"≤ {ctx.get('le')}")
    if kind.startswith("model_") or kind == "dict_type":
        return t("config.expected.table")
    return str(error["msg"])


def check_data_dir(config: Config) -> Path:
    """The data directory, created if needed; refuses one the stack cannot write to."""
    directory = config.data_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".maillage-ecriture"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            config.source,
            [t("config.data_dir_unwritable", value=str(directory), reason=exc.strerror or exc)],
        ) from None
    return directory


def render_config_template(name: str, server_name: str, demo: bool) -> str:
    """The commented config file `maillage init` writes."""
    template = resources.files("maillage").joinpath("maillage.toml.template").read_text("utf-8")
    return template.format(nom=json.dumps(name, ensure_ascii=False),
                           nom_serveur=json.dumps(server_name), demo="true" if demo else "false",
                           modeles_circuits=DEMO_CIRCUIT_MODELS if demo else EXAMPLE_CIRCUIT_MODELS,
                           administrateur=json.dumps(DEMO_PORTAL_ADMIN) if demo else "")


# Who administers the demo's portal (an account at the development provider, made at first start).
DEMO_PORTAL_ADMIN = "dsi@bourg-vallon.example"


# The demo commune's usual circuits: its head of urbanism and its DGS exist in the demo.
DEMO_CIRCUIT_MODELS = """[[circuits.modeles]]
nom = "arrêté"
service = "urbanisme"
etapes = "visa: @karim.benali, signature: @claire.martin"

[[circuits.modeles]]
nom = "bon de commande"
service = "st"
etapes = "visa: @julien.moreau, avis: @thomas.bernard, signature: @claire.martin"
"""
EXAMPLE_CIRCUIT_MODELS = """# [[circuits.modeles]]
# nom = "arrêté"
# service = "urbanisme"
# etapes = "visa: @chef.urbanisme, avis: @juridique @finances (un), signature: @maire"
"""
