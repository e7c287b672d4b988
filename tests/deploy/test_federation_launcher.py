"""Federation through the launcher: `up --with-neighbour` and `maillage partenaire`."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from maillage.config import Config, load_config
from maillage.deploy.neighbour import SHARED_ROOM
from maillage.portal.idp_dev import ensure_admin_accounts
from tests.deploy.test_launcher import init_stack, maillage
from tests.harness.browserless import Browser, csrf_of
from tests.harness.matrix import Agent, login_agent
from tests.harness.servers import SERVER_LOGS, free_port


def test_partner_commands_refuse_bad_input_and_leave_the_file_untouched(tmp_path: Path) -> None:
    data_dir = tmp_path / "pile"
    init_stack(data_dir, demo=False)
    path = data_dir / "maillage.toml"
    before = path.read_text()

    bad_name = maillage(data_dir, "partenaire", "ajouter", "Préfecture du Val")
    assert bad_name.returncode == 2
    assert 'federation.partenaires.0 = "Préfecture du Val"' in bad_name.stderr

    no_certificate = maillage(data_dir, "partenaire", "ajouter", "agglo.example.fr")
    assert no_certificate.returncode == 2
    assert "federation.certificat et federation.cle" in no_certificate.stderr

    absent = maillage(data_dir, "partenaire", "retirer", "agglo.example.fr")
    assert absent.returncode == 2 and "n’est pas partenaire" in absent.stderr
    assert path.read_text() == before

    listed = maillage(data_dir, "partenaire", "liste")
    assert listed.returncode == 0 and "Aucun serveur partenaire" in listed.stdout


def test_partner_commands_keep_the_comments_of_the_file(tmp_path: Path) -> None:
    from maillage.deploy.tls import issue_server_certificate

    data_dir = tmp_path / "pile"
    init_stack(data_dir, demo=False)
    tls = issue_server_certificate(tmp_path / "ca", data_dir / "tls", "localhost")
    path = data_dir / "maillage.toml"
    path.write_text(path.read_text().replace('certificat = ""', f'certificat = "{tls.certificate}"')
                    .replace('cle = ""', f'cle = "{tls.key}"'))
    added = maillage(data_dir, "partenaire", "ajouter", "agglo.example.fr")
    assert added.returncode == 0, added.stderr
    assert "agglo.example.fr est désormais partenaire" in added.stdout
    assert load_config(path).federation.partenaires == ["agglo.example.fr"]
    assert "# Serveurs Matrix partenaires (intercommunalité" in path.read_text()
    again = maillage(data_dir, "partenaire", "ajouter", "agglo.example.fr")
    assert again.returncode == 2 and "déjà partenaire" in again.stderr
    assert maillage(data_dir, "partenaire", "retirer", "agglo.example.fr").returncode == 0
    assert load_config(path).federation.partenaires == []


async def _agent(homeserver: str, accounts_file: Path, localpart: str, store: Path) -> Agent:
    accounts = {a["user_id"].split(":")[0][1:]: a for a in json.loads(accounts_file.read_text())}
    return await login_agent(homeserver, accounts[localpart]["user_id"], accounts[localpart]["password"], store)


async def partner_from_portal(config: Config, server: str) -> str:
    """The portal's admin adds ``server`` to the partners; what the page then says."""
    admin = config.portail.administrateurs[0]
    password = ensure_admin_accounts(config.data_dir, [admin])[admin]
    browser = Browser()
    try:
        form = await browser.follow(await browser.get(f"{config.portal_url}/connexion?suite=/partenaires"))
        page = await browser.follow(await browser.sign_in_at_provider(form, admin, password))
        assert page.status_code == 200, page.text[:300]
        added = await browser.post(f"{config.portal_url}/partenaires/serveurs", timeout=300,
                                   data={"csrf": csrf_of(page), "serveur": server, "action": "ajouter"})
        assert added.status_code == 200, added.text[:500]
        status = re.search(r'role="status">([^<]+)<', added.text)
        return status.group(1) if status else added.text[:500]
    finally:
        await browser.close()


def _room_named(agent: Agent, name: str) -> str:
    return str(next(room_id for room_id, room in agent.client.rooms.items() if room.display_name == name))


@pytest.mark.slow
async def test_a_neighbouring_collectivite_federates_and_partners_are_applied_live(tmp_path: Path) -> None:
    data_dir = tmp_path / "mairie"
    init_stack(data_dir)
    federation_port = free_port()
    path = data_dir / "maillage.toml"
    path.write_text(re.sub(r'^nom_serveur = "localhost"$', f'nom_serveur = "localhost:{federation_port}"',
                           path.read_text(), flags=re.M).replace("port = 8448", f"port = {federation_port}"))
    for name in ("synapse", "caldav", "webdav", "maillage"):
        SERVER_LOGS.append(data_dir / "voisin" / "logs" / f"{name}.log")
    try:
        started = maillage(data_dir, "up", "--with-neighbour", "--detach", timeout=400)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "Salon partagé avec la collectivité voisine" in (data_dir / "logs" / "maillage.log").read_text()
        main, neighbour = load_config(path), load_config(data_dir / "voisin" / "maillage.toml")
        assert main.federation.partenaires == [neighbour.collectivite.nom_serveur]
        assert neighbour.federation.partenaires == [main.collectivite.nom_serveur]
        assert json.loads(maillage(data_dir / "voisin", "status", "--json").stdout)["sain"]

        claire = await _agent(main.synapse_url, data_dir / "demo" / "comptes.json", "claire.martin", tmp_path / "c")
        helene = await _agent(neighbour.synapse_url, data_dir / "voisin" / "demo" / "comptes.json",
                              "helene.roux", tmp_path / "h")
        try:
            room = _room_named(claire, SHARED_ROOM)
            await claire.send_text(room, "Réunion voirie intercommunale mardi 10 h.")
            heard = await helene.wait_for_text(room, "Réunion voirie intercommunale mardi 10 h.")
            assert heard.encrypted

            # Removing the partner takes effect through the launcher: its messages stop arriving.
            removed = maillage(data_dir, "partenaire", "retirer", neighbour.collectivite.nom_serveur)
            assert removed.returncode == 0, removed.stdout
            assert "Synapse a redémarré" in removed.stdout
            await asyncio.sleep(2)
            await helene.send_text(room, "Message pendant la rupture")
            with pytest.raises(AssertionError):
                await claire.wait_for_text(room, "Message pendant la rupture", timeout=10)

            # Adding it back, from the portal this time (its admin, signed in at the development
            # provider): the held message and new ones arrive; nothing is lost.
            added_at = time.perf_counter()
            added = await partner_from_portal(main, neighbour.collectivite.nom_serveur)
            assert "Synapse a redémarré" in added, added
            await helene.send_text(room, "Message après le retour")
            await claire.wait_for_text(room, "Message après le retour", timeout=120)
            print(f"partner re-added, effective after {time.perf_counter() - added_at:.1f} s")
            await claire.wait_for_text(room, "Message pendant la rupture", timeout=120)
        finally:
            await claire.close()
            await helene.close()
    finally:
        stopped = maillage(data_dir, "down")
    assert stopped.returncode == 0
    assert not json.loads(maillage(data_dir / "voisin", "status", "--json").stdout)["demarre"]
