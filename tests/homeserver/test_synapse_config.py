"""The rendered Synapse configuration, as Synapse itself and its users meet it."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from maillage.deploy.tls import issue_server_certificate
from maillage.homeserver.render import render_synapse
from maillage.secretstore import ensure_secrets
from tests.conftest import ServerStack
from tests.harness.matrix import AgentFactory, access_state
from tests.harness.servers import write_config


def _synapse_reads(config_file: Path, key: str) -> str:
    """Ask Synapse's own config loader (the one `homeserver` runs) for a parsed value."""
    result = subprocess.run(
        [sys.executable, "-m", "synapse.config", "read", key, "-c", str(config_file)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split(f"{key}: ", 1)[1].strip()


@pytest.mark.parametrize(
    ("sections", "key", "expected"),
    [
        ({"smtp": {"hote": "smtp.mairie.example.fr", "port": 465, "securite": "tls",
                   "utilisateur": "matrix", "expediteur": "ne-pas-repondre@mairie.example.fr"}},
         "email.email_notif_from", "ne-pas-repondre@mairie.example.fr"),
        ({"smtp": {"hote": "smtp.mairie.example.fr", "expediteur": "noreply@mairie.example.fr"}},
         "email.require_transport_security", "True"),
        ({"federation": {"partenaires": ["agglo.example.fr", "prefecture.example.fr"]}},
         "federation.federation_domain_whitelist",
         "{'agglo.example.fr': True, 'prefecture.example.fr': True}"),
        ({"federation": {"ouverte": True}}, "federation.federation_domain_whitelist", "None"),
        ({"federation": {"partenaires": ["agglo.example.fr"], "adresses_privees": ["10.0.0.0/8"]}},
         "server.ip_range_allowlist", "10.0.0.0/8"),
        ({"federation": {"partenaires": ["agglo.example.fr"]}}, "tls.federation_verify_certificates", "True"),
        ({}, "federation.federation_domain_whitelist", "{}"),
        ({"synapse": {"taille_max_fichier_mo": 512}}, "media.max_upload_size", "536870912"),
    ],
)
def test_synapse_accepts_each_profile_variant(
    tmp_path: Path, sections: dict[str, dict[str, object]], key: str, expected: str
) -> None:
    if "federation" in sections:  # federation needs a certificate, from a CA partners trust
        tls = issue_server_certificate(tmp_path / "ca", tmp_path / "tls", "mairie.example.fr")
        sections["federation"] |= {"certificat": str(tls.certificate), "cle": str(tls.key),
                                   "autorites": [str(tmp_path / "ca" / "ca.pem")]}
    config = write_config(tmp_path, **sections)
    rendered = render_synapse(config, ensure_secrets(config.data_dir))
    assert expected in _synapse_reads(rendered.config_file, key)


def test_the_rendered_file_holds_secrets_so_it_is_private(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    secrets = ensure_secrets(config.data_dir)
    rendered = render_synapse(config, secrets)
    assert stat.S_IMODE(rendered.config_file.stat().st_mode) == 0o600
    assert secrets.registration_shared_secret in rendered.config_file.read_text()


def test_smtp_password_comes_from_the_secrets_not_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, smtp={"hote": "smtp.example.fr", "expediteur": "a@example.fr"})
    from maillage.secretstore import update_secrets

    ensure_secrets(config.data_dir)
    secrets = update_secrets(config.data_dir, smtp_password="mot-de-passe-du-relais")
    rendered = render_synapse(config, secrets)
    assert "mot-de-passe-du-relais" in rendered.config_file.read_text()
    assert "mot-de-passe-du-relais" not in config.source.read_text()


# --- against the running homeserver -------------------------------------------


def test_open_registration_is_off(synapse: ServerStack) -> None:
    response = httpx.post(f"{synapse.homeserver}/_matrix/client/v3/register",
                          json={"username": "intrus", "password": "Mot-de-passe-123"})
    assert response.status_code == 403


def test_clients_discover_the_homeserver(synapse: ServerStack) -> None:
    response = httpx.get(f"{synapse.homeserver}/.well-known/matrix/client")
    assert response.json()["m.homeserver"]["base_url"] == synapse.config.public_baseurl


async def test_upload_limit_is_the_configured_one(agents: AgentFactory) -> None:
    agent = await agents("media")
    response = httpx.get(
        f"{agent.client.homeserver}/_matrix/client/v1/media/config",
        headers={"Authorization": f"Bearer {agent.client.access_token}"},
    )
    assert response.json()["m.upload.size"] == 100 * 1024 * 1024


async def test_a_public_room_is_not_encrypted_but_a_private_one_is(
    agents: AgentFactory,
) -> None:
    from nio.api import RoomPreset

    agent = await agents("salons")
    public = await agent.client.room_create(name="Annonces", preset=RoomPreset.public_chat,
                                            initial_state=[access_state("public")])
    private = await agent.client.room_create(name="Équipe", preset=RoomPreset.private_chat)
    states = {}
    for response in (public, private):
        state = await agent.client.room_get_state_event(response.room_id, "m.room.encryption")
        states[response.room_id] = getattr(state, "content", {}).get("algorithm")
    assert states[private.room_id] == "m.megolm.v1.aes-sha2"
    assert states[public.room_id] is None


async def test_a_weak_password_is_refused_by_the_policy(agents: AgentFactory) -> None:
    agent = await agents("politique")
    response = httpx.post(
        f"{agent.client.homeserver}/_matrix/client/v3/account/password",
        headers={"Authorization": f"Bearer {agent.client.access_token}"},
        json={"new_password": "court", "auth": {"type": "m.login.password",
              "identifier": {"type": "m.id.user", "user": agent.user_id},
              "password": agent.password}},
    )
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_PASSWORD_TOO_SHORT"
