"""``maillage deploiement --vers DIR``: what a real server needs, written from the one config.

- ``systemd/``: a unit per process (Synapse and each worker in the scaled profile, Radicale,
  WsgiDAV, the bots, the bridge, the portal) under ``maillage.target``; each renders its files
  with ``maillage preparer <service>`` before it starts, runs as the stack's own user with a
  private umask and a read-only system; secrets stay in the data directory's files;
- ``nginx/maillage.conf``: TLS in front of Synapse (its workers' routing table in the scaled
  profile), the federation, the portal, the ``.well-known`` delegation of the server name;
- ``coturn/turnserver.conf``: the TURN server for calls, sharing its secret with Synapse;
- ``docker/``: a compose file (PostgreSQL, Redis, the stack under its launcher) and its image;
- ``LISEZMOI.md``: the steps on a real server.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from maillage.config import Config
from maillage.deploy.grafana import dashboard
from maillage.deploy.services import Service, stack_services
from maillage.homeserver.workers import bots_door_lines, route_locations, upstream_lines, upstreams
from maillage.i18n import t
from maillage.secretstore import Secrets, write_private

LEFT_TO_THE_SYSTEM = {"idp-dev", "routeur"}  # the development provider; the launcher's own nginx


class RecipeError(Exception):
    """The config lacks what a real server needs (French, naming the key)."""


def public_host(config: Config) -> str:
    if config.reseau.url_publique is None or urlsplit(str(config.reseau.url_publique)).scheme != "https":
        raise RecipeError(t("recipes.public_url_needed"))
    return urlsplit(str(config.reseau.url_publique)).hostname or ""


def write_recipes(config: Config, secrets: Secrets, directory: Path, *, certificate: str = "",
                  key: str = "") -> list[Path]:
    host = public_host(config)
    certificate = certificate or f"/etc/letsencrypt/live/{host}/fullchain.pem"
    key = key or f"/etc/letsencrypt/live/{host}/privkey.pem"
    services = [s for s in stack_services(config, secrets) if s.name not in LEFT_TO_THE_SYSTEM]
    units = directory / "systemd"
    written = [_write(units / f"maillage-{service.name}.service", systemd_unit(config, service))
               for service in services]
    written.append(_write(directory / "systemd" / "maillage.target", systemd_target(services)))
    written.append(_write(directory / "nginx" / "maillage.conf", nginx_site(config, host, certificate, key)))
    if config.synapse.turn:
        turn = directory / "coturn" / "turnserver.conf"
        write_private(turn, coturn_config(config, secrets, certificate, key))  # it holds the shared secret
        written.append(turn)
    written.append(_write(directory / "docker" / "compose.yaml", compose_file(config)))
    written.append(_write(directory / "docker" / ".env", "COMPOSE_PROJECT_NAME=maillage\n"))
    written.append(_write(directory / "docker" / "Dockerfile", DOCKERFILE))
    written.append(_write(directory / "grafana" / "maillage.json",
                          json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"))
    written.append(_write(directory / "LISEZMOI.md", guide(config, host)))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _exec(argv: list[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in argv)


def systemd_unit(config: Config, service: Service) -> str:
    maillage = [sys.executable, "-m", "maillage", "--config", str(config.source), "--profil",
                config.deploiement.profil]
    after = "maillage-synapse.service" if service.name.startswith("synapse-") or service.name in (
        "bots", "courriel", "portail") else ""
    environment = "".join(f"Environment={name}={value}\n" for name, value in sorted(service.env.items()))
    return f"""# Written by « maillage deploiement » from {config.source}; write it again after a change.
[Unit]
Description=Maillage — {service.label}
Wants=network-online.target
After=network-online.target postgresql.service redis-server.service {after}
PartOf=maillage.target

[Service]
Type=simple
User=maillage
Group=maillage
WorkingDirectory={config.data_dir}
ExecStartPre={_exec([*maillage, "preparer", service.name])}
ExecStart={_exec(service.argv)}
{environment}Environment=LANG=C.UTF-8
Restart=on-failure
RestartSec=2
TimeoutStartSec={int(service.startup_timeout)}
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=read-only
ProtectKernelTunables=yes
ProtectControlGroups=yes
ReadWritePaths={config.data_dir}
LimitNOFILE=65536

[Install]
WantedBy=maillage.target
"""


def systemd_target(services: list[Service]) -> str:
    units = " ".join(f"maillage-{service.name}.service" for service in services)
    return f"""# Written by « maillage deploiement »: « systemctl enable --now maillage.target » starts it all.
[Unit]
Description=Maillage (toute la pile)
Wants={units}

[Install]
WantedBy=multi-user.target
"""


PROXY_SETTINGS = ("proxy_http_version 1.1;", "proxy_read_timeout 180s;", "proxy_buffering off;",
                  'proxy_set_header Connection "";')  # keepalive to the upstreams; a sync waits 30 s


def _proxy(upstream: str) -> str:
    return (f"proxy_pass http://{upstream}; proxy_set_header Host $host; "
            "proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;")


def nginx_site(config: Config, host: str, certificate: str, key: str) -> str:
    server_name = config.collectivite.nom_serveur.rsplit(":", 1)[0]
    portal_host = urlsplit(config.portail.url_publique).hostname if config.portail.url_publique else ""
    tls = (f"    ssl_certificate {certificate};\n    ssl_certificate_key {key};\n"
           "    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:maillage:10m;\n"
           '    add_header Strict-Transport-Security "max-age=31536000" always;\n')
    lines = [f"# Written by « maillage deploiement » from {config.source}; write it again after a change.",
             "# Put it in /etc/nginx/sites-enabled/ (Debian), then « nginx -t » and « systemctl reload nginx ».", ""]
    lines += _upstreams(config)
    names = " ".join(dict.fromkeys(n for n in (host, server_name, portal_host) if n))
    lines += ["server {", "    listen 80;", "    listen [::]:80;", f"    server_name {names};",
              "    location /.well-known/acme-challenge/ { root /var/www/letsencrypt; }",
              "    location / { return 301 https://$host$request_uri; }", "}", ""]
    lines += ["server {", "    listen 443 ssl http2;", "    listen [::]:443 ssl http2;", f"    server_name {host};",
              tls.rstrip("\n"), f"    client_max_body_size {config.synapse.taille_max_fichier_mo + 1}m;",
              *(f"    {setting}" for setting in PROXY_SETTINGS),
              "    # The admin API stays on loopback (the portal and the stack use it there).",
              "    location ^~ /_synapse/admin { return 404; }"]
    if config.federation.active:  # partners reach Synapse's federation listener through this host (delegation)
        lines += ["    location ~ ^/_matrix/(federation|key)/ {",
                  f"        proxy_pass https://127.0.0.1:{config.federation.port}; proxy_ssl_verify off;",
                  "        proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr;", "    }"]
    if config.deploiement.profil == "reparti":
        lines += route_locations(config, "    ", _proxy)
    main = "principal" if config.deploiement.profil == "reparti" else "synapse"
    lines += [f"    location ~ ^/(_matrix|_synapse/client) {{ {_proxy(main)} }}"]
    if server_name == host:
        lines += _well_known(host)
    lines += ["}", ""]
    if server_name != host:
        lines += ["server {", "    listen 443 ssl http2;", "    listen [::]:443 ssl http2;",
                  f"    server_name {server_name};", tls.rstrip("\n"), *_well_known(host), "}", ""]
    if config.deploiement.profil == "reparti":  # the bots' door, on loopback (see workers.py)
        lines += [*bots_door_lines(config, "", _proxy, PROXY_SETTINGS), ""]
    if portal_host:
        lines += ["server {", "    listen 443 ssl http2;", "    listen [::]:443 ssl http2;",
                  f"    server_name {portal_host};", tls.rstrip("\n"), "    client_max_body_size 20m;",
                  "    location = /metrics { return 404; }  # for Prometheus on loopback, not the world",
                  f"    location / {{ {_proxy('portail')} }}", "}", ""]
    return "\n".join(lines)


def _upstreams(config: Config) -> list[str]:
    blocks = {"portail": [config.portail.port]}
    if config.deploiement.profil == "reparti":
        blocks |= upstreams(config)
    else:
        blocks["synapse"] = [config.reseau.port_synapse]
    return [*upstream_lines(blocks, "", keepalive=16), ""]


def _well_known(host: str) -> list[str]:
    server = json.dumps({"m.server": f"{host}:443"})
    client = json.dumps({"m.homeserver": {"base_url": f"https://{host}"}})
    headers = "default_type application/json; add_header Access-Control-Allow-Origin * always;"
    return [f"    location = /.well-known/matrix/server {{ {headers} return 200 '{server}'; }}",
            f"    location = /.well-known/matrix/client {{ {headers} return 200 '{client}'; }}"]


def coturn_config(config: Config, secrets: Secrets, certificate: str, key: str) -> str:
    realm = config.collectivite.nom_serveur.rsplit(":", 1)[0]
    private = ["10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255",
               "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255", "0.0.0.0-0.255.255.255",
               "100.64.0.0-100.127.255.255", "::1", "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
               "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
    return "\n".join([
        f"# Written by « maillage deploiement » from {config.source} (0600: it holds the secret shared with",
        "# Synapse). /etc/turnserver.conf on Debian's coturn.",
        "use-auth-secret", f"static-auth-secret={secrets.turn_secret}", f"realm={realm}",
        "listening-port=3478", "tls-listening-port=5349", "min-port=49160", "max-port=49200",
        f"cert={certificate}", f"pkey={key}", "no-cli", "no-multicast-peers", "no-tlsv1", "no-tlsv1_1",
        "user-quota=12", "total-quota=1200", "# Calls never reach the internal network through the relay.",
        *(f"denied-peer-ip={block}" for block in private), ""])


def compose_file(config: Config) -> str:
    return f"""# Written by « maillage deploiement »: the stack in one container under its launcher
# (« maillage up --profile scaled »), beside PostgreSQL and Redis. The data directory
# (config, secrets, files) is the volume « donnees »: put maillage.toml there, with
# [deploiement] postgresql = "postgresql://maillage@postgres:5432" and
# redis = "redis://redis:6379", and postgresql_password in secrets/secrets.toml.
# The project's name (« maillage ») is in .env beside this file: Compose files without a
# top-level « name » are read by every Compose, the old docker-compose 1.x included.
services:
  postgres:
    image: postgres:15
    environment:
      POSTGRES_USER: maillage
      POSTGRES_PASSWORD_FILE: /run/secrets/postgresql_password
      POSTGRES_INITDB_ARGS: "--encoding=UTF8 --locale=C"
    secrets: [postgresql_password]
    volumes: ["postgres:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "maillage"]
      interval: 10s
    restart: unless-stopped
  redis:
    image: redis:7
    restart: unless-stopped
  maillage:
    build: .
    command: ["maillage", "--config", "/donnees/maillage.toml", "up", "--profile", "scaled"]
    depends_on:
      postgres: {{condition: service_healthy}}
      redis: {{condition: service_started}}
    volumes: ["donnees:/donnees"]
    ports:
      - "127.0.0.1:{config.reseau.port_synapse}:{config.reseau.port_synapse}"
      - "127.0.0.1:{config.portail.port}:{config.portail.port}"
      - "{config.federation.port}:{config.federation.port}"
      - "127.0.0.1:{config.courriel.port_smtp}:{config.courriel.port_smtp}"
    restart: unless-stopped
volumes:
  postgres: {{}}
  donnees: {{}}
secrets:
  postgresql_password:
    file: ./postgresql_password
"""


DOCKERFILE = """# Written by « maillage deploiement »: the stack's image (build it from a clone of Maillage,
# this file copied to its root).
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light postgresql-client \\
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home /donnees maillage
COPY . /opt/maillage
RUN pip install --no-cache-dir /opt/maillage
USER maillage
VOLUME /donnees
"""


def guide(config: Config, host: str) -> str:
    server_name = config.collectivite.nom_serveur
    return f"""# Maillage sur un vrai serveur — {config.collectivite.nom}

Fichiers écrits par « maillage deploiement » depuis {config.source} ; réécrivez-les après
chaque changement de configuration.

1. **Machine** : Debian 12, Python 3.11, un utilisateur « maillage » propriétaire de
   {config.data_dir}. Profil « {config.deploiement.profil} »{
    " : PostgreSQL et Redis démarrés, nginx installé" if config.deploiement.profil == "reparti" else ""}.
2. **Noms** : {host} (clients, fédération) pointe vers ce serveur ; {server_name} sert la
   délégation `.well-known` (fichier nginx fourni).
3. **Certificats** : `certbot certonly --webroot -w /var/www/letsencrypt -d {host}` (et les autres noms).
4. **nginx** : `cp nginx/maillage.conf /etc/nginx/sites-enabled/ && nginx -t && systemctl reload nginx`.
5. **Services** : `cp systemd/* /etc/systemd/system/ && systemctl daemon-reload &&
   systemctl enable --now maillage.target` (chaque processus tourne sous « maillage »).
6. **Appels (TURN)** : `apt-get install coturn`, `cp coturn/turnserver.conf /etc/turnserver.conf`,
   ports 3478 et 5349 (TCP/UDP) et 49160–49200 (UDP) ouverts.
7. **Identité** : renseignez [portail] oidc_emetteur (ProConnect ou Keycloak) ; le fournisseur
   de développement ne démarre pas ici.
8. **Sauvegardes** : `maillage sauvegarde` chaque nuit (minuteur systemd ou cron), archive
   copiée hors du serveur ; restauration : `maillage --data-dir /nouveau restaure <archive>`.
9. **Supervision** : `maillage status`, les `/sante` et `/metrics` de chaque processus
   (docs/exploitation.md du dépôt), le tableau de bord Grafana fourni.
"""
