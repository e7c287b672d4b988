"""The scaled profile (``[deploiement] profil = "reparti"``): Synapse's own worker model on
PostgreSQL and Redis, rendered from the same collectivité config as the single process.

- the main process keeps the admin API, event creation, inbound federation (its TLS
  listener, as in the single profile) and background jobs; its client listener and its
  replication listener move to loopback ports of their own;
- workers (``synapse.app.generic_worker``): readers answering sync and the client's reads
  (``lecteurs`` of them), the event persister, the federation sender, the media
  repository, the appservice notifier and pusher;
- the front door (nginx, ``routing_table`` → ``nginx.conf``) listens where Synapse did
  (``reseau.port_synapse``) and sends each endpoint to its process: clients, the bridge
  and the portal see one Synapse as before;
- the bots come in through a door of their own on loopback (``deploiement.port_robots``),
  the same table except that their syncs and reads go to a reader of their own
  (``lecteur_robots``): a bot sits in every room of the collectivité, each of its syncs
  walks them all, and the agents' readers should not queue behind it.

Every internal port — replication included — listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from maillage.config import Config
from maillage.secretstore import write_private

LOOPBACK = "127.0.0.1"

SYNC_ROUTES = (
    r"^/_matrix/client/(r0|v3)/sync$",
    r"^/_matrix/client/(api/v1|r0|v3)/events$",
    r"^/_matrix/client/(api/v1|r0|v3)/initialSync$",
    r"^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$",
)
# Reads a generic worker answers (Synapse's worker documentation): what a client asks
# most after sync.
CLIENT_READ_ROUTES = (
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(messages|members|joined_members|state|context/.*)$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/event/",
    r"^/_matrix/client/(v1|unstable)/rooms/.*/(relations/|threads$|hierarchy$)",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/(joined_rooms|publicRooms)$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/account/whoami$",
    r"^/_matrix/client/(r0|v3|unstable)/(capabilities|notifications|password_policy)$",
    r"^/_matrix/client/versions$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/keys/(query|changes)$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/search$",
    r"^/_matrix/client/(r0|v3|unstable)/user/.*/filter(/|$)",
)
# An appservice's ping makes Synapse send at once the transactions it kept for it (after a
# restart of the bots): only the process that sends them can, so the ping goes there.
APPSERVICE_PING_ROUTES = (r"^/_matrix/client/v1/appservice/[^/]*/ping$",)
MEDIA_ROUTES = (
    r"^/_matrix/media/",
    r"^/_matrix/client/v1/media/",
    r"^/_synapse/admin/v1/(media|quarantine_media|purge_media_cache)",
    r"^/_synapse/admin/v1/(room|user)/.*/media",
)


@dataclass(frozen=True)
class Worker:
    name: str  # Synapse's worker_name; the service is « synapse-<name> »
    label: str  # shown to people (French, like the other services' labels)
    port: int
    resources: tuple[str, ...]
    routes: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


BOTS_READER = "lecteur_robots"


@dataclass(frozen=True)
class ScaledPorts:
    main_client: int
    replication: int
    bots_door: int


def scaled_ports(config: Config) -> ScaledPorts:
    base = config.deploiement.port_interne
    return ScaledPorts(main_client=base, replication=base + 1, bots_door=config.deploiement.port_robots)


def workers_of(config: Config) -> list[Worker]:
    base = config.deploiement.port_interne
    readers = [Worker(f"lecteur{i}", f"Synapse — lecture {i}", base + 9 + i, ("client", "metrics"),
                      SYNC_ROUTES + CLIENT_READ_ROUTES) for i in range(1, config.deploiement.lecteurs + 1)]
    return [
        Worker("evenements", "Synapse — écriture des événements", base + 2, ("replication", "metrics")),
        Worker("federation_envoi", "Synapse — envoi de fédération", base + 3, ("metrics",)),
        Worker("medias", "Synapse — médias", base + 4, ("media", "client", "metrics"), MEDIA_ROUTES),
        Worker("appservice_pousse", "Synapse — passerelles et notifications", base + 5, ("client", "metrics"),
               APPSERVICE_PING_ROUTES),
        Worker(BOTS_READER, "Synapse — lecture des robots", base + 8, ("client", "metrics"),
               SYNC_ROUTES + CLIENT_READ_ROUTES),
        *readers,
    ]


def main_process_settings(config: Config, password: str) -> dict[str, object]:
    """What the shared homeserver.yaml says in the scaled profile, beyond the single one."""
    workers = {worker.name: worker for worker in workers_of(config)}
    redis = urlsplit(config.deploiement.redis)
    return {
        "redis": {"enabled": True, "host": redis.hostname, "port": redis.port or 6379,
                  "dbid": config.deploiement.base_redis,
                  **({"password": password} if password else {})},
        "instance_map": {
            "main": {"host": LOOPBACK, "port": scaled_ports(config).replication},
            "evenements": {"host": LOOPBACK, "port": workers["evenements"].port},
        },
        "stream_writers": {"events": ["evenements"]},
        "federation_sender_instances": ["federation_envoi"],
        "enable_media_repo": False,
        "media_instance_running_background_jobs": "medias",
        "notify_appservices_from_worker": "appservice_pousse",
        "pusher_instances": ["appservice_pousse"],
    }


# Connections each Synapse process may open to PostgreSQL: the main process and the event
# persister write the most; a worker needs few. With the defaults (10 each) one stack with two
# readers would take 90 of PostgreSQL's 100 (its default max_connections) before the bots,
# the bridge and the portal; seen: a worker refused at start with « too many clients ».
POOL_SIZES = {"main": 10, "evenements": 8}
WORKER_POOL_SIZE = 4


def synapse_database(config: Config, passfile: Path | None, process: str = "main") -> dict[str, object]:
    """Synapse on PostgreSQL: its own database (C collation, made by ``ensure_databases``)."""
    server = urlsplit(config.deploiement.postgresql)
    args: dict[str, object] = {"user": server.username or "postgres", "host": server.hostname,
                               "port": server.port or 5432, "database": database_name(config, "synapse"),
                               "cp_min": 1, "cp_max": POOL_SIZES.get(process, WORKER_POOL_SIZE),
                               "application_name": f"synapse-{process}"}  # named in pg_stat_activity
    if passfile is not None:
        args["passfile"] = str(passfile)
    return {"name": "psycopg2", "allow_unsafe_locale": False, "args": args}


def database_name(config: Config, part: str) -> str:
    return f"{config.deploiement.prefixe_bases}_{part}"


def synapse_connections(config: Config) -> int:
    """The most connections the Synapse processes may hold at once (for max_connections)."""
    return POOL_SIZES["main"] + sum(POOL_SIZES.get(w.name, WORKER_POOL_SIZE) for w in workers_of(config))


def write_worker_configs(config: Config, directory: Path, log_config: Path,
                         passfile: Path | None) -> dict[str, Path]:
    """One small YAML per worker, read after the shared homeserver.yaml (its database
    section replaces the shared one: a smaller pool)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for worker in workers_of(config):
        document = {
            "worker_app": "synapse.app.generic_worker",
            "worker_name": worker.name,
            "worker_listeners": [{
                "type": "http", "port": worker.port, "bind_addresses": [LOOPBACK], "x_forwarded": True,
                "resources": [{"names": list(worker.resources), "compress": False}]}],
            "worker_log_config": str(log_config),
            "database": synapse_database(config, passfile, worker.name),
            **({"enable_media_repo": True} if worker.name == "medias" else {}),
        }
        path = directory / f"{worker.name}.yaml"
        write_private(path, yaml.safe_dump(document, sort_keys=False))
        written[worker.name] = path
    return written


def routing_table(config: Config, *, for_bots: bool = False) -> list[tuple[str, str]]:
    """(pattern, upstream) in the order the front door tries them; the rest goes to « principal ».
    The bots' door sends what the agents' readers answer to the bots' own reader."""
    table: list[tuple[str, str]] = []
    for worker in workers_of(config):
        if worker.name == BOTS_READER:
            continue
        upstream = worker.name
        if is_agents_reader(worker):
            upstream = BOTS_READER if for_bots else "lecteurs"
        table += [(route, upstream) for route in worker.routes if (route, upstream) not in table]
    return table


def is_agents_reader(worker: Worker) -> bool:
    return worker.name.startswith("lecteur") and worker.name != BOTS_READER


def upstreams(config: Config) -> dict[str, list[int]]:
    """The front door's upstream blocks: name → loopback ports."""
    workers = workers_of(config)
    return {"principal": [scaled_ports(config).main_client],
            "lecteurs": [w.port for w in workers if is_agents_reader(w)],
            **{w.name: [w.port] for w in workers if w.routes and not is_agents_reader(w)}}


def upstream_lines(blocks: dict[str, list[int]], indent: str, keepalive: int) -> list[str]:
    """nginx ``upstream`` blocks; the agents' readers hashed by token, so that one agent's
    syncs go to one reader and its caches stay warm."""
    lines: list[str] = []
    for name, ports in blocks.items():
        lines.append(f"{indent}upstream {name} {{")
        if name == "lecteurs":
            lines.append(f"{indent}    hash $http_authorization$arg_access_token consistent;")
        lines += [f"{indent}    server {LOOPBACK}:{port};" for port in ports]
        lines += [f"{indent}    keepalive {keepalive};", f"{indent}}}"]
    return lines


def route_locations(config: Config, indent: str, proxy: Callable[[str], str], *, for_bots: bool = False) -> list[str]:
    """One nginx ``location`` per route of the routing table, ``proxy(upstream)`` its body."""
    return [f'{indent}location ~ "{pattern}" {{ {proxy(upstream)} }}'
            for pattern, upstream in routing_table(config, for_bots=for_bots)]


def bots_door_lines(config: Config, indent: str, proxy: Callable[[str], str],
                    settings: tuple[str, ...] = ()) -> list[str]:
    """The bots' door: a server on loopback with their own routing table (see the module's
    docstring); ``settings`` are the proxy settings the server needs of its own."""
    return [f"{indent}server {{", f"{indent}    listen {LOOPBACK}:{scaled_ports(config).bots_door};",
            *(f"{indent}    {setting}" for setting in settings),
            *route_locations(config, indent + "    ", proxy, for_bots=True),
            f"{indent}    location / {{ {proxy('principal')} }}", f"{indent}}}"]


def render_nginx(config: Config, directory: Path, logs_dir: Path) -> Path:
    """The front door's nginx.conf (run by the launcher as the stack's own user, no daemon)."""
    directory.mkdir(parents=True, exist_ok=True)
    for temp in ("corps", "mandataire", "fastcgi", "uwsgi", "scgi"):
        (directory / "temp" / temp).mkdir(parents=True, exist_ok=True)
    listen = config.reseau.adresse_ecoute
    listen = f"[{listen}]" if ":" in listen else listen
    lines = [
        "# Rendered by Maillage from maillage.toml at every start (scaled profile); do not edit.",
        "daemon off;",
        "worker_processes auto;",
        *(["user root;"] if os.geteuid() == 0 else []),  # the stack's own user, whoever runs it
        f"pid {directory / 'nginx.pid'};",
        "error_log stderr warn;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {directory / 'temp' / 'corps'};",
        f"    proxy_temp_path {directory / 'temp' / 'mandataire'};",
        f"    fastcgi_temp_path {directory / 'temp' / 'fastcgi'};",
        f"    uwsgi_temp_path {directory / 'temp' / 'uwsgi'};",
        f"    scgi_temp_path {directory / 'temp' / 'scgi'};",
        f"    client_max_body_size {config.synapse.taille_max_fichier_mo + 1}m;",
        "    proxy_http_version 1.1;",
        "    proxy_read_timeout 180s;",  # a sync waits up to 30 s; a large upload longer
        "    proxy_request_buffering off;",
        "    proxy_buffering off;",
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Forwarded-For $remote_addr;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        '    proxy_set_header Connection "";',
    ]
    lines += upstream_lines(upstreams(config), "    ", keepalive=32)
    lines += ["    server {", f"        listen {listen}:{config.reseau.port_synapse};",
              *route_locations(config, "        ", _pass),
              f"        location / {{ {_pass('principal')} }}", "    }"]
    lines += bots_door_lines(config, "    ", _pass)
    lines += ["}", ""]
    path = directory / "nginx.conf"
    path.write_text("\n".join(lines))
    return path


def _pass(upstream: str) -> str:
    return f"proxy_pass http://{upstream};"  # the headers are set once for the whole http block
