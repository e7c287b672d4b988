"""@agenda on another CalDAV server, as with Nextcloud or SOGo: its own calendar home and
credentials. An independent client sees the calendars; refused credentials are told, never
shown, and nothing is lost."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import caldav.davclient
import pytest

from maillage.deploy.services import HealthCheck, Service
from maillage.secretstore import update_secrets
from tests.bots.test_agenda import agenda_id, answer, room_with_agenda
from tests.conftest import ServerStack, ServiceProcess, standalone_stack
from tests.harness.matrix import AgentFactory
from tests.harness.servers import free_port, running

pytestmark = pytest.mark.usefixtures("in_french")

USER, PASSWORD = "robot-mairie", "Mot-de-passe-Agendas-4e1b"


def other_caldav(directory: Path, port: int) -> Service:
    """A Radicale of its own, with its own account (the bots' calendar home is /robot-mairie/)."""
    url = f"http://127.0.0.1:{port}/{USER}/"

    def prepare() -> None:
        (directory / "collections").mkdir(parents=True, exist_ok=True)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()).decode()
        (directory / "utilisateurs").write_text(f"{USER}:{hashed}\n")
        (directory / "radicale.ini").write_text(
            f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = htpasswd\n"
            f"htpasswd_filename = {directory / 'utilisateurs'}\nhtpasswd_encryption = bcrypt\n"
            f"[rights]\ntype = owner_only\n[storage]\nfilesystem_folder = {directory / 'collections'}\n"
            "[logging]\nlevel = warning\nmask_passwords = True\n")

    return Service(name="agendas-externes", label="CalDAV externe",
                   argv=[sys.executable, "-m", "radicale", "--config", str(directory / "radicale.ini")],
                   url=url, health=HealthCheck(url=url, method="PROPFIND", auth=(USER, PASSWORD), ok_status=(207,),
                                               headers={"Depth": "0"}),
                   port=port, port_key="-", prepare=prepare)


@pytest.fixture
def external(tmp_path: Path) -> Iterator[tuple[ServerStack, ServiceProcess, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/{USER}/"
    with standalone_stack(tmp_path / "pile", caldav={"url": url, "utilisateur": USER}) as (stack, _, bots), \
            running(tmp_path / "agendas", other_caldav(tmp_path / "agendas", port)):
        update_secrets(stack.config.data_dir, dav_password=PASSWORD)
        bots.start()
        yield stack, bots, url


def summaries(url: str, calendar_id: str) -> list[str]:
    client: Any = caldav.davclient.DAVClient(url=url, username=USER, password=PASSWORD)
    return [str(next(iter(e.icalendar_instance.walk("VEVENT")))["summary"])
            for e in client.calendar(url=f"{url}{calendar_id}/").events()]


async def test_calendars_live_on_the_other_server_and_refused_credentials_keep_the_event(
    external: tuple[ServerStack, ServiceProcess, str], own_agents: AgentFactory
) -> None:
    stack, bots, url = external
    owner, room = await room_with_agenda(own_agents, stack, "Greffe")
    assert "créé" in await answer(owner, room, stack, "!agenda créer greffe")
    assert "Ajouté : n°1 — Séance publique" in await answer(owner, room, stack,
                                                            "!agenda ajoute Séance publique le 4/3/2027 18h")
    assert await asyncio.to_thread(summaries, url, "greffe") == ["Séance publique"]
    assert f"{url}greffe/" in await answer(owner, room, stack, "!agenda calendrier")

    bots.stop()
    update_secrets(stack.config.data_dir, dav_password="Ancien-mot-de-passe-2")
    bots.start()
    told = await answer(owner, room, stack, "!agenda ajoute Commission le 5/3/2027 9h")
    assert told.startswith("Le serveur d’agendas refuse l’accès du robot")
    log = (stack.config.data_dir / "logs" / "bots.log").read_text()
    assert "Ancien-mot-de-passe-2" not in log and PASSWORD not in log
    assert await asyncio.to_thread(summaries, url, "greffe") == ["Séance publique"]
    since = len(owner.received)
    bots.stop()
    update_secrets(stack.config.data_dir, dav_password=PASSWORD)
    bots.start()
    assert "n°1 — Séance publique" in await answer(owner, room, stack, "!agenda détails 1")
    assert not [m for m in owner.received[since:] if m.sender == agenda_id(stack) and "Commission" in m.body]
