"""@agenda on another CalDAV server, as with Nextcloud or SOGo: its own calendar home and
credentials. An independent client sees the calendars; refused credentials are told, never
shown, and nothing is lost."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
PARIS = ZoneInfo("Europe/Paris")


# The account's own calendars are its to write, except « archives », which the server's
# administrator made read-only for it (Radicale's rights file, read at start).
RIGHTS = """[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {user}
permissions: RW

[archives]
user: .+
collection: {user}/archives
permissions: r

[calendars]
user: .+
collection: {user}/[^/]+
permissions: rw
"""
TOMORROW = datetime.now(PARIS).date() + timedelta(days=1)
ARCHIVED_EVENT = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\nBEGIN:VEVENT\r\nUID:seance@archives\r\n"
                  f"DTSTAMP:20261125T080000Z\r\nDTSTART;TZID=Europe/Paris:{TOMORROW:%Y%m%d}T100000\r\n"
                  f"DTEND;TZID=Europe/Paris:{TOMORROW:%Y%m%d}T110000\r\nSUMMARY:Séance archivée\r\n"
                  "END:VEVENT\r\nEND:VCALENDAR\r\n")


def other_caldav(directory: Path, port: int) -> Service:
    """A Radicale of its own, with its own account (the bots' calendar home is /robot-mairie/)
    and a calendar « archives » that the account may read, not write."""
    url = f"http://127.0.0.1:{port}/{USER}/"

    def prepare() -> None:
        archives = directory / "collections" / "collection-root" / USER / "archives"
        if not archives.exists():
            archives.mkdir(parents=True)
            (archives / ".Radicale.props").write_text(json.dumps({"tag": "VCALENDAR", "D:displayname": "Archives"}))
            (archives / "seance.ics").write_text(ARCHIVED_EVENT, newline="")
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()).decode()
        (directory / "utilisateurs").write_text(f"{USER}:{hashed}\n")
        (directory / "droits").write_text(RIGHTS)
        (directory / "radicale.ini").write_text(
            f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = htpasswd\n"
            f"htpasswd_filename = {directory / 'utilisateurs'}\nhtpasswd_encryption = bcrypt\n"
            f"[rights]\ntype = from_file\nfile = {directory / 'droits'}\n"
            f"[storage]\nfilesystem_folder = {directory / 'collections'}\n"
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


async def test_a_calendar_the_server_keeps_read_only_is_listed_and_a_refused_write_is_told_and_changes_nothing(
    external: tuple[ServerStack, ServiceProcess, str], own_agents: AgentFactory
) -> None:
    stack, _, url = external
    owner, room = await room_with_agenda(own_agents, stack, "Archives")
    assert "lié" in await answer(owner, room, stack, "!agenda lier archives")
    listing = await answer(owner, room, stack, "!agenda demain")
    assert "n°1 — Séance archivée" in listing and "10:00–11:00" in listing

    for command in ("!agenda ajoute Commission demain 15h", "!agenda déplace 1 à demain 16h",
                    "!agenda annule 1", "!agenda visio 1"):
        refused = await answer(owner, room, stack, command)
        assert refused == ("Le serveur d’agendas refuse l’accès du robot (identifiants ou droits). "
                           "Prévenez l’administrateur : rien n’a été modifié."), command
    assert await asyncio.to_thread(summaries, url, "archives") == ["Séance archivée"]
    client: Any = caldav.davclient.DAVClient(url=url, username=USER, password=PASSWORD)
    vevent = next(iter(client.calendar(url=f"{url}archives/").events()[0].icalendar_instance.walk("VEVENT")))
    assert vevent.decoded("dtstart").hour == 10 and not vevent.get("conference")
    # Refused is final: the command is not kept to be done later, nothing arrives afterwards.
    since = len(owner.received)
    await asyncio.sleep(8)
    assert not [m for m in owner.received[since:] if m.room_id == room and m.sender == agenda_id(stack)]
    assert "n°1 — Séance archivée" in await answer(owner, room, stack, "!agenda demain")

