"""@projets in a room shared with a partner administration: the partner's agent is given a
task, sees it and marks it done from their own homeserver; a task goes to the room's
members only, and the shared room reaches its own project and no other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import caldav.davclient
import httpx
import pytest
from icalendar import Calendar

from maillage.bots.agenda.events import spoken_day
from maillage.deploy.services import caldav_service
from maillage.secretstore import load_secrets
from tests.bots.partners import AgentsOn, mairie_bots, said, shared_room
from tests.harness.federation import Federation
from tests.harness.matrix import Agent, MatrixTimeout

pytestmark = pytest.mark.usefixtures("in_french")

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def mairie_projets(federation: Federation) -> Iterator[str]:
    with mairie_bots(federation):
        yield federation.mairie.user_id("projets")


def stored_tasks(federation: Federation, list_id: str) -> dict[str, Any]:
    """The list's VTODOs by title, as any CalDAV task app reads them from the mairie's server."""
    config = federation.mairie.config
    assert config is not None
    secrets = load_secrets(config.data_dir)
    url = caldav_service(config, secrets).url.rstrip("/")
    client: Any = caldav.davclient.DAVClient(url=url, username=config.caldav.utilisateur,
                                             password=secrets.dav_password)
    todos = client.calendar(url=f"{url}/{config.caldav.utilisateur}/{list_id}/").todos(include_completed=True)
    found = [next(iter(Calendar.from_ical(item.data).walk("VTODO"))) for item in todos]
    return {str(todo["summary"]): todo for todo in found}


class NoReminder(AssertionError):
    """@projets' daily reminder did not reach the agent."""


async def reminder_for(agent: Agent, bot: str, timeout: float = 60) -> str:
    """The reminder @projets sends the agent in its direct room with them, joined as an agent accepts it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    room_id = ""
    while not room_id:
        invites = [room for room, invited in agent.client.invited_rooms.items() if invited.inviter == bot]
        if invites:
            room_id = invites[0]
            await agent.client.join(room_id)
        elif loop.time() > deadline:
            raise NoReminder(f"{agent.user_id} was never invited by {bot} within {timeout} s")
        else:
            await asyncio.sleep(0.5)
    try:
        return (await agent.wait_for_text(room_id, lambda m: m.sender == bot, timeout=timeout)).body
    except MatrixTimeout as error:
        raise NoReminder(str(error)) from None


def tomorrow() -> date:
    return datetime.now(PARIS).date() + timedelta(days=1)


async def test_a_partner_agent_is_given_a_task_in_a_shared_room_sees_it_and_marks_it_done_and_nothing_more(
    federation: Federation, agents_on: AgentsOn, mairie_projets: str
) -> None:
    bot = mairie_projets
    claire = await agents_on(federation.mairie)("claire")
    paul = await agents_on(federation.agglo)("paul")
    marc = await agents_on(federation.agglo)("marc")  # a partner agent who is in none of these rooms

    # A mairie-only project with three tasks (numbers 1 to 3 in its room).
    internal = await shared_room(claire, bot, access="interne", name="Budget interne")
    internal_list = f"budget-{uuid.uuid4().hex[:6]}"
    assert (await said(claire, internal, bot, f"!projet créer {internal_list}")).startswith("Projet « ")
    for title in ("Arbitrage confidentiel", "Note au maire", "Audit des comptes"):
        added = await said(claire, internal, bot, f"!tâche ajoute {title} pour le 9/3/2027")
        assert added.startswith("Tâche ajoutée : n°") and title in added
    # paul cannot be given a task there: he is not (and, the room being internal, cannot be) a member.
    assert await said(claire, internal, bot, f"!tâche ajoute Relire le budget {paul.user_id}") == (
        f"{paul.user_id} n’est pas membre de ce salon et ne verrait pas la tâche : invitez-le d’abord "
        f"(/invite {paul.user_id}), puis recommencez.")
    async with httpx.AsyncClient(timeout=30) as http:
        intruding = await http.put(
            f"{federation.agglo.client_url}/_matrix/client/v3/rooms/{internal}/send/m.room.message/intrusion",
            headers={"Authorization": f"Bearer {paul.client.access_token}"},
            json={"msgtype": "m.text", "body": "!tâche fait 3"})
    assert intruding.status_code == 403  # the bot never sees a command from him there

    # The shared project: the mairie's admin makes it and gives paul (on the agglo) a task.
    shared = await shared_room(claire, bot, paul, access="partenaires", name="Piste cyclable")
    await paul.wait_for_members_including(shared, bot)
    shared_list = f"piste-{uuid.uuid4().hex[:6]}"
    created = await said(claire, shared, bot, f"!projet créer {shared_list}")
    assert created == f"Projet « {shared_list} » créé (liste de tâches : {shared_list}) et lié à ce salon."
    refused = await said(claire, shared, bot, f"!tâche ajoute Prévenir l’agglo {marc.user_id} pour demain")
    assert refused == (f"{marc.user_id} n’est pas membre de ce salon et ne verrait pas la tâche : invitez-le "
                       f"d’abord (/invite {marc.user_id}), puis recommencez.")
    days = {tomorrow()}
    added = await said(claire, shared, bot, f"!tâche ajoute Relever les compteurs {paul.user_id} pour demain")
    days.add(tomorrow())  # the test may straddle midnight
    due = next((day for day in days if f"pour {spoken_day(day)} ·" in added), None)
    assert due is not None, added
    line = f"n°1 — Relever les compteurs · {paul.user_id} · pour {spoken_day(due)}"
    assert added == f"Tâche ajoutée : {line} · à faire"
    await paul.wait_for_text(shared, lambda m: m.sender == bot and m.body == added, timeout=60)  # caught up

    # paul, on his own homeserver, sees the task given to him and marks it done.
    mine = await said(paul, shared, bot, "!tâche liste moi")
    assert mine.splitlines() == ["Tâches qui vous sont confiées (1) :", f"– {line} · à faire"]
    done = await said(paul, shared, bot, "!tâche fait 1")
    assert done == f"Faite : {line} · faite"
    assert await said(paul, shared, bot, "!tâche liste moi") == "Aucune tâche ne vous est confiée."
    stored = (await asyncio.to_thread(stored_tasks, federation, shared_list))["Relever les compteurs"]
    assert str(stored["status"]) == "COMPLETED" and stored.decoded("due") == due
    assert str(stored["attendee"]) == "matrix:u/" + paul.user_id.removeprefix("@")

    # From the shared room, the mairie-only project is out of reach: not listed, its numbers unknown.
    everything = await said(paul, shared, bot, "!tâche liste toutes")
    assert everything.splitlines() == ["Tâches du projet (1) :", f"– {line} · faite"]
    no_such = "Aucune tâche n°3 dans ce projet. « !tâche liste toutes » montre les numéros."
    assert await said(paul, shared, bot, "!tâche détails 3") == no_such
    assert await said(paul, shared, bot, "!tâche fait 3") == no_such
    assert await said(claire, shared, bot, "!tâche détails 2") == no_such.replace("n°3", "n°2")
    untouched = await said(claire, internal, bot, "!tâche détails 3")
    assert untouched.splitlines()[0] == "n°3 — Audit des comptes · pour mardi 9 mars 2027 · à faire"
    internal_open = await said(claire, internal, bot, "!tâche liste")
    assert internal_open.splitlines()[0] == "Tâches ouvertes (3) :" and "Relever" not in internal_open
    assert sorted(await asyncio.to_thread(stored_tasks, federation, internal_list)) == [
        "Arbitrage confidentiel", "Audit des comptes", "Note au maire"]  # nothing assigned to paul was made


async def test_a_partner_agent_given_a_late_task_gets_the_daily_reminder_and_so_does_everyone_else(
    federation: Federation, agents_on: AgentsOn, mairie_projets: str
) -> None:
    bot = mairie_projets
    claire = await agents_on(federation.mairie)("claire")
    paul = await agents_on(federation.agglo)("paul")
    room = await shared_room(claire, bot, paul, access="partenaires", name="Convention de mobilité")
    await paul.wait_for_members_including(room, bot)
    await said(claire, room, bot, f"!projet créer mobilite-{uuid.uuid4().hex[:6]}")
    given = [(paul, "Signer la convention"), (claire, "Relire la convention")]
    for number, (agent, title) in enumerate(given, start=1):
        added = await said(claire, room, bot, f"!tâche ajoute {title} {agent.user_id} pour le 2/1/2026")
        assert added.startswith(f"Tâche ajoutée : n°{number} — {title}"), added
    expected = [["Vos tâches, tous projets confondus :", "En retard (1) :",
                 f"– [Convention de mobilité] n°{number} — {title} · {agent.user_id} · pour vendredi 2 janvier 2026"
                 " · à faire"] for number, (agent, title) in enumerate(given, start=1)]
    assert (await reminder_for(claire, bot)).splitlines() == expected[1]
    assert (await reminder_for(paul, bot)).splitlines() == expected[0]
