"""``maillage deploiement``: a real server's recipes written from the one config, checked by
the programs that will read them — nginx's ``-t``, systemd's ``verify``, Synapse's own config
loading — not only parsed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from maillage.config import load_config, with_profile
from maillage.deploy.tls import issue_server_certificate
from maillage.homeserver.render import render_synapse
from maillage.secretstore import load_secrets
from tests.deploy.test_launcher import init_stack, maillage

PUBLIC = "matrix.mairie.example.fr"


def configured(data_dir: Path) -> Path:
    init_stack(data_dir, demo=False)
    path = data_dir / "maillage.toml"
    text = re.sub(r"^# url_publique = .*$", f'url_publique = "https://{PUBLIC}/"', path.read_text(), flags=re.M)
    text = text.replace('nom_serveur = "localhost"', 'nom_serveur = "mairie.example.fr"')
    text = re.sub(r"^\[synapse\]$", '[synapse]\nturn = ["turn:turn.mairie.example.fr:3478?transport=udp"]', text,
                  flags=re.M)
    text = text.replace('url_publique = ""', 'url_publique = "https://portail.mairie.example.fr/"', 1)
    path.write_text(text)
    return path


def test_the_recipes_are_what_nginx_systemd_and_synapse_accept(tmp_path: Path) -> None:
    data_dir = tmp_path / "pile"
    path = configured(data_dir)
    tls = issue_server_certificate(tmp_path / "ca", tmp_path / "tls", PUBLIC)
    out = tmp_path / "recettes"
    written = maillage(data_dir, "--profil", "scaled", "deploiement", "--vers", str(out), "--certificat",
                       str(tls.certificate), "--cle", str(tls.key))
    assert written.returncode == 0, written.stderr
    assert "voyez LISEZMOI.md" in written.stdout

    # nginx: the site, included as Debian's nginx.conf includes sites-enabled/.
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx' / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\n"
        f"http {{ include {out / 'nginx' / 'maillage.conf'}; }}\n")
    checked = subprocess.run(["/usr/sbin/nginx", "-t", "-p", str(tmp_path / "nginx"), "-c",
                              str(tmp_path / "nginx" / "nginx.conf")], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    site = (out / "nginx" / "maillage.conf").read_text()
    assert "location ^~ /_synapse/admin { return 404; }" in site  # before any regex: never exposed
    assert "location = /metrics { return 404; }" in site  # the portal's metrics stay on loopback
    bodies = dict(re.findall(r"location = (/\.well-known/matrix/\w+) \{[^}]*return 200 '([^']+)'", site))
    assert json.loads(bodies["/.well-known/matrix/server"]) == {"m.server": f"{PUBLIC}:443"}
    assert json.loads(bodies["/.well-known/matrix/client"]) == {"m.homeserver": {"base_url": f"https://{PUBLIC}"}}
    assert "server_name mairie.example.fr;" in site and "server_name portail.mairie.example.fr;" in site
    assert 'location ~ "^/_matrix/client/(r0|v3)/sync$" { proxy_pass http://lecteurs;' in site
    bots_door = site.split("listen 127.0.0.1:", 1)[1].split("\n}", 1)[0]  # the bots' own, on loopback only
    assert 'location ~ "^/_matrix/client/(r0|v3)/sync$" { proxy_pass http://lecteur_robots;' in bots_door
    assert "maillage-synapse-lecteur_robots.service" in {unit.name for unit in (out / "systemd").iterdir()}

    # systemd: every unit and the target, as systemd reads them (executables found, no warning).
    units = sorted((out / "systemd").iterdir())
    names = {unit.name for unit in units}
    assert {"maillage-synapse.service", "maillage-synapse-evenements.service", "maillage-synapse-lecteur1.service",
            "maillage-bots.service", "maillage-courriel.service", "maillage-portail.service",
            "maillage.target"} <= names
    assert "maillage-idp-dev.service" not in names and "maillage-routeur.service" not in names
    verified = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True,
                              timeout=60, cwd=out / "systemd")
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    unit = (out / "systemd" / "maillage-synapse.service").read_text()
    assert "preparer synapse" in unit and "UMask=0077" in unit and "User=maillage" in unit
    secrets_file = (data_dir / "secrets" / "secrets.toml").read_text()
    for line in secrets_file.splitlines():  # no secret on a command line
        if "=" in line and len(line.split("=", 1)[1].strip().strip('"')) > 8:
            assert line.split("=", 1)[1].strip().strip('"') not in unit

    # Synapse takes its TURN settings, with the secret coturn's config holds (0600).
    from synapse.config.homeserver import HomeServerConfig

    config = with_profile(load_config(path), "scaled")
    rendered = render_synapse(config, load_secrets(data_dir))
    synapse = HomeServerConfig.load_config("Synapse", ["--config-path", str(rendered.config_file)])
    assert synapse.voip.turn_uris == ["turn:turn.mairie.example.fr:3478?transport=udp"]
    turn = out / "coturn" / "turnserver.conf"
    assert f"static-auth-secret={synapse.voip.turn_shared_secret}" in turn.read_text()
    assert oct(turn.stat().st_mode & 0o777) == "0o600"
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in turn.read_text()

    # The compose file, as Docker Compose reads it (Debian's docker-compose checks it against its
    # schema without a Docker daemon), its services and what they need.
    checked = subprocess.run(["docker-compose", "-f", "compose.yaml", "config", "-q"], capture_output=True,
                             text=True, timeout=60, cwd=out / "docker")
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr
    assert (out / "docker" / ".env").read_text() == "COMPOSE_PROJECT_NAME=maillage\n"
    compose = yaml.safe_load((out / "docker" / "compose.yaml").read_text())
    assert set(compose["services"]) == {"postgres", "redis", "maillage"}
    assert set(compose["services"]["maillage"]["depends_on"]) == {"postgres", "redis"}
    assert compose["services"]["maillage"]["command"][-2:] == ["--profile", "scaled"]
    assert "POSTGRES_PASSWORD_FILE" in compose["services"]["postgres"]["environment"]  # a file, not a value


def test_recipes_without_a_public_https_address_say_what_to_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "pile"
    init_stack(data_dir, demo=False)
    refused = maillage(data_dir, "deploiement", "--vers", str(tmp_path / "recettes"))
    assert refused.returncode == 1 and "[reseau] url_publique" in refused.stderr
    assert not (tmp_path / "recettes").exists()
    unknown = maillage(data_dir, "preparer", "synapse-inconnu")
    assert unknown.returncode == 2 and "Service inconnu : synapse-inconnu" in unknown.stderr
    path = data_dir / "maillage.toml"
    path.write_text(re.sub(r"^\[synapse\]$", '[synapse]\nturn = ["http://turn.example.fr"]', path.read_text(),
                           flags=re.M))
    wrong = maillage(data_dir, "status")
    assert wrong.returncode == 2 and "synapse.turn" in wrong.stdout + wrong.stderr
