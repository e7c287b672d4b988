"""@projets against a real Synapse and Radicale, checked with an independent CalDAV client
(the ``caldav`` library and ``icalendar``, not the bot's code): tasks made in the room are
standard VTODOs any task app reads, tasks changed in another app are announced, what
another app put in a task survives the bot's changes."""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import caldav.davclient
import httpx
import pytest
from icalendar import Calendar
from nio import RoomCreateResponse
from PIL import Image

from tests.bots.partners import said as answer_of
from tests.conftest import BotProcess, ServerStack, ServiceProcess
from tests.harness.matrix import Agent, AgentFactory, create_encrypted_room
from tests.messages import assert_french

pytestmark = pytest.mark.usefixtures("in_french")

PARIS = ZoneInfo("Europe/Paris")


def projets_id(stack: ServerStack) -> str:
    return f"@projets:{stack.server_name}"


def task_list(stack: ServerStack, caldav_url: str, list_id: str) -> Any:
    client: Any = caldav.davclient.DAVClient(url=caldav_url, username="maillage", password=stack.secrets.dav_password)
    return client.calendar(url=f"{caldav_url.rstrip('/')}/maillage/{list_id}/")


def all_todos(stack: ServerStack, caldav_url: str, list_id: str) -> list[Any]:
    """Every VTODO of the list, as any CalDAV task app reads it."""
    return [next(iter(Calendar.from_ical(item.data).walk("VTODO")))
            for item in task_list(stack, caldav_url, list_id).todos(include_completed=True)]


def todos_of(stack: ServerStack, caldav_url: str, list_id: str) -> dict[str, Any]:
    """The same, by title (titles are unique in these tests: ``all_todos`` counts)."""
    return {str(todo["summary"]): todo for todo in all_todos(stack, caldav_url, list_id)}


async def said(agent: Agent, room: str, stack: ServerStack, command: str) -> str:
    """The projets bot's answer to this very command (CI once took another member's for it)."""
    return await answer_of(agent, room, projets_id(stack), command)


async def project_room(agents: AgentFactory, stack: ServerStack, name: str, *members: Agent) -> tuple[Agent, str]:
    """An encrypted room with @projets at the moderator level its binding needs."""
    owner = await agents("cheffe")
    return owner, await owned_room(owner, stack, name, *members)


async def owned_room(owner: Agent, stack: ServerStack, name: str, *members: Agent) -> str:
    room = await create_encrypted_room(owner, *members, name=name)
    levels = await owner.client.room_get_state_event(room, "m.room.power_levels")
    users = {**levels.content["users"], projets_id(stack): 50}
    await owner.client.room_put_state(room, "m.room.power_levels", {**levels.content, "users": users})
    await owner.client.room_invite(room, projets_id(stack))
    await owner.wait_for_members_including(room, projets_id(stack))
    return room


def next_weekday(weekday: int) -> datetime:
    today = datetime.now(PARIS).date()
    day = today + timedelta(days=(weekday - today.weekday()) % 7 or 7)
    return datetime(day.year, day.month, day.day, tzinfo=PARIS)


async def test_tasks_made_in_the_room_are_standard_vtodos_and_their_changes_keep_other_apps_fields(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    alice = await agents("alice")
    owner, room = await project_room(agents, synapse, "Rénovation de l’école", alice)
    list_id = f"ecole-{uuid.uuid4().hex[:6]}"
    created = await said(owner, room, synapse, f"!projet créer {list_id}")
    assert created == f"Projet « {list_id} » créé (liste de tâches : {list_id}) et lié à ce salon."

    friday = next_weekday(4)
    added = await said(owner, room, synapse,
                       f"!tâche ajoute Relancer l’architecte {alice.user_id} pour vendredi priorité haute")
    assert added.startswith(f"Tâche ajoutée : n°1 — Relancer l’architecte · {alice.user_id} · pour vendredi "
                            f"{friday.day} ")
    assert added.endswith(" · priorité haute · à faire")
    sub = await said(owner, room, synapse, "!tâche ajoute Choisir les peintures sous 1")
    assert sub == "Tâche ajoutée : n°2 — Choisir les peintures · à faire"

    todos = await asyncio.to_thread(todos_of, synapse, caldav, list_id)
    main = todos["Relancer l’architecte"]
    assert str(main["status"]) == "NEEDS-ACTION" and int(main["priority"]) == 1
    assert main.decoded("due") == friday.date()
    assert [str(a) for a in ([main["attendee"]] if not isinstance(main["attendee"], list) else main["attendee"])] == [
        "matrix:u/" + alice.user_id.removeprefix("@")]
    assert str(todos["Choisir les peintures"]["related-to"]) == str(main["uid"])

    # Another app (Thunderbird-like) adds its own fields: the bot's changes keep them.
    item = next(i for i in task_list(synapse, caldav, list_id).todos() if "Relancer" in i.data)
    item.data = item.data.replace("END:VTODO", "CATEGORIES:Bâtiments\r\nX-MOZ-GENERATION:3\r\n"
                                  "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Rappel\r\nTRIGGER:-PT15M\r\n"
                                  "END:VALARM\r\nEND:VTODO")
    since = len(owner.received)
    await asyncio.to_thread(item.save)
    told = await owner.wait_for_text(room, lambda m: m.sender == projets_id(synapse) and "autre application" in m.body,
                                     since=since, timeout=30)
    assert told.body.startswith("Tâche modifiée depuis une autre application : n°1 — Relancer l’architecte")

    assert (await said(owner, room, synapse, "!tâche commence 1")).endswith("· en cours")
    done = await said(alice, room, synapse, "!tâche fait 1")
    assert done.startswith("Faite : n°1 — Relancer l’architecte") and done.endswith("· faite")
    main = (await asyncio.to_thread(todos_of, synapse, caldav, list_id))["Relancer l’architecte"]
    assert str(main["status"]) == "COMPLETED" and int(main["percent-complete"]) == 100 and main.get("completed")
    assert str(main["x-moz-generation"]) == "3" and "Bâtiments" in main["categories"].to_ical().decode()
    assert [c.name for c in main.subcomponents] == ["VALARM"]
    assert int(main["sequence"]) >= 2

    listing = await said(owner, room, synapse, "!tâche liste")
    assert listing.splitlines() == ["Tâches ouvertes (1) :", "– n°2 — Choisir les peintures · à faire"]
    everything = await said(owner, room, synapse, "!tâche liste toutes")
    assert everything.splitlines()[0] == "Tâches du projet (2) :"
    assert (await said(owner, room, synapse, "!tâche rouvre 1")).endswith("· à faire")
    mine = await said(alice, room, synapse, "!tâche liste moi")
    assert mine.splitlines()[0] == "Tâches qui vous sont confiées (1) :" and "n°1 — Relancer" in mine

    # Comments: in the thread of the bot's answer about the task, or by command; kept in the VTODO.
    # The answer to this very command: alice's « liste moi » answer may reach the owner's client after it.
    since = len(owner.received)
    asked = await owner.send_text(room, "!tâche détails 1")
    answer = await owner.wait_for_text(room, lambda m: m.sender == projets_id(synapse) and m.reply_to == asked,
                                       since=since, timeout=60)
    assert answer.body.endswith("Pour commenter : répondez dans le fil de ce message,"
                                " ou « !tâche commente 1 <texte> ».")
    await alice.send_text(room, "Architecte relancé, réponse attendue lundi", in_thread=answer.event_id)
    commented = await said(owner, room, synapse, "!tâche commente 1 Devis reçu ; à signer")
    assert commented.startswith("Commentaire ajouté à la tâche n°1")
    too_long = await said(owner, room, synapse, "!tâche commente 1 " + "x" * 2001)
    assert too_long.startswith("Ce commentaire dépasse 2000 caractères")
    shown = (await said(owner, room, synapse, "!tâche détails 1")).splitlines()
    assert shown[1] == "Commentaires (2) :"
    assert shown[2].endswith(f"{alice.user_id} : Architecte relancé, réponse attendue lundi")
    assert shown[3].endswith(f"{owner.user_id} : Devis reçu ; à signer")
    main = (await asyncio.to_thread(todos_of, synapse, caldav, list_id))["Relancer l’architecte"]
    kept = [str(c) for c in main["comment"]]
    assert kept == ["Architecte relancé, réponse attendue lundi", "Devis reçu ; à signer"]
    assert str(main["x-moz-generation"]) == "3"  # other apps' fields still there


async def test_a_task_made_in_another_app_is_announced_numbered_and_can_be_done_from_the_room(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await project_room(agents, synapse, "Piste cyclable")
    list_id = f"piste-{uuid.uuid4().hex[:6]}"
    await said(owner, room, synapse, f"!projet créer {list_id}")
    yesterday = (datetime.now(PARIS) - timedelta(days=1)).strftime("%Y%m%d")
    since = len(owner.received)
    await asyncio.to_thread(task_list(synapse, caldav, list_id).save_todo, (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//Tasks.org-like//FR\r\nBEGIN:VTODO\r\n"
        f"UID:{uuid.uuid4()}@tasks\r\nDTSTAMP:20261125T080000Z\r\nSUMMARY:Consulter l’intercommunalité\r\n"
        f"DUE;VALUE=DATE:{yesterday}\r\nSTATUS:NEEDS-ACTION\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"))
    told = await owner.wait_for_text(room, lambda m: m.sender == projets_id(synapse), since=since, timeout=30)
    assert told.body.startswith("Nouvelle tâche, ajoutée depuis une autre application : n°1 — "
                                "Consulter l’intercommunalité · pour ")
    late = await said(owner, room, synapse, "!tâche liste en retard")
    assert late.splitlines()[0] == "Tâches en retard (1) :" and late.splitlines()[1].startswith("⚠ n°1 — Consulter")
    assert (await said(owner, room, synapse, "!tâche fait 1")).startswith("Faite : n°1 — Consulter")
    assert await said(owner, room, synapse, "!tâche liste en retard") == "Aucune tâche en retard."


async def test_a_space_s_project_is_every_child_room_s_with_the_same_numbers_and_no_other_room_s(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, bob = await agents("cheffe"), await agents("bob")
    bot = projets_id(synapse)
    urbanisme = await owned_room(owner, synapse, "Urbanisme — école", bob)
    travaux = await owned_room(owner, synapse, "Travaux — école", bob)
    elsewhere = await owned_room(owner, synapse, "Salon hors espace", bob)
    list_id = f"ecole-{uuid.uuid4().hex[:6]}"
    await said(owner, urbanisme, synapse, f"!projet créer {list_id}")
    await said(owner, urbanisme, synapse, "!tâche ajoute Déposer le permis")
    assert (await said(owner, urbanisme, synapse, "!projet espace")).startswith("Ce salon n’est dans aucun espace")

    made = await owner.client.room_create(name="Rénovation de l’école", space=True, invite=[bot],
                                          power_level_override={"users": {bot: 50}})
    assert isinstance(made, RoomCreateResponse)
    space = str(made.room_id)
    for child in (urbanisme, travaux):  # as Element's « ajouter un salon existant » does
        await owner.client.room_put_state(space, "m.space.child", {"via": ["localhost"]}, state_key=child)
    # A room naming the space as its parent, not listed by the space: not one of its rooms.
    await owner.client.room_put_state(elsewhere, "m.space.parent", {"via": ["localhost"]}, state_key=space)
    await owner.wait_for_members_including(space, bot)

    assert await said(bob, travaux, synapse, "!projet espace") == (
        "Ce salon n’est lié à aucun projet. Un administrateur du salon peut le lier : !projet lier <liste>,"
        " ou en créer un : !projet créer <nom>.")
    assert await said(bob, urbanisme, synapse, "!projet espace") == (
        "Seul un administrateur de l’espace peut y étendre le projet.")
    assert await said(owner, urbanisme, synapse, "!projet espace") == (
        f"Le projet « {list_id} » est maintenant celui de tous les salons de l’espace « Rénovation de l’école » :"
        " mêmes tâches, mêmes numéros.")

    assert (await said(bob, travaux, synapse, "!tâche liste")).splitlines() == [
        "Tâches ouvertes (1) :", "– n°1 — Déposer le permis · à faire"]  # the same number everywhere
    added = await said(bob, travaux, synapse, f"!tâche ajoute Choisir l’entreprise {bob.user_id}")
    assert added == f"Tâche ajoutée : n°2 — Choisir l’entreprise · {bob.user_id} · à faire"
    assert (await said(owner, urbanisme, synapse, "!tâche fait 2")).startswith("Faite : n°2 — Choisir l’entreprise")
    assert (await said(bob, elsewhere, synapse, "!tâche liste")).startswith("Ce salon n’est lié à aucun projet")
    assert await said(bob, elsewhere, synapse, "!tâche détails 1") == (
        "Ce salon n’est lié à aucun projet. Un administrateur du salon peut le lier : !projet lier <liste>,"
        " ou en créer un : !projet créer <nom>.")

    # A task added in another app is told in every room of the space (a space has no timeline).
    since = {room: len(agent.received) for agent, room in ((owner, urbanisme), (bob, travaux))}
    await asyncio.to_thread(task_list(synapse, caldav, list_id).save_todo, (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//Tasks.org-like//FR\r\nBEGIN:VTODO\r\n"
        f"UID:{uuid.uuid4()}@tasks\r\nDTSTAMP:20261125T080000Z\r\nSUMMARY:Prévenir les riverains\r\n"
        "STATUS:NEEDS-ACTION\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"))
    for agent, room in ((owner, urbanisme), (bob, travaux)):
        told = await agent.wait_for_text(room, lambda m: m.sender == bot, since=since[room], timeout=30)
        assert told.body == ("Nouvelle tâche, ajoutée depuis une autre application :"
                             " n°3 — Prévenir les riverains · à faire")
    assert not [m for m in bob.received if m.room_id == elsewhere and "riverains" in m.body]


async def test_wrong_input_is_answered_in_french_and_writes_nothing(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    outsider = await agents("exterieur")
    owner, room = await project_room(agents, synapse, "Budget")
    assert "Ce salon n’est lié à aucun projet" in await said(owner, room, synapse, "!tâche ajoute Voter le budget")
    list_id = f"budget-{uuid.uuid4().hex[:6]}"
    await said(owner, room, synapse, f"!projet créer {list_id}")
    wrong = {
        f"!tâche ajoute Relire {outsider.user_id}": f"{outsider.user_id} n’est pas membre de ce salon",
        "!tâche ajoute Relire pour le 31 février": "31",
        "!tâche ajoute Relire priorité maximale": "Priorité non comprise : « maximale »",
        "!tâche ajoute pour demain": "Il manque l’intitulé",
        "!tâche ajoute Relire sous 9": "Aucune tâche n°9",
        "!tâche fait 42": "Aucune tâche n°42",
        "!tâche fait trois": "« trois » n’est pas un numéro de tâche",
        "!tâche liste demain matin": "Filtre non compris",
        "!tâche ajoute Relire pour tous les lundis": "pas une répétition",
    }
    for command, says in wrong.items():
        answer = await said(owner, room, synapse, command)
        assert says in answer, (command, answer)
        assert_french(answer, "projet.", "agenda.", "bot.", typed=command)
    assert await asyncio.to_thread(todos_of, synapse, caldav, list_id) == {}

    past = await said(owner, room, synapse, "!tâche ajoute Relire le compte rendu pour le 2/1/2026")
    assert past.startswith("Tâche ajoutée : n°1 — Relire le compte rendu · pour vendredi 2 janvier 2026")
    assert past.splitlines()[1] == "⚠ Cette échéance est déjà passée : la tâche est en retard dès maintenant."
    refused = await said(owner, room, synapse, f"!tâche assigne 1 {outsider.user_id}")
    assert refused.startswith(f"{outsider.user_id} n’est pas membre de ce salon")
    assert not (await asyncio.to_thread(todos_of, synapse, caldav, list_id))["Relire le compte rendu"].get("attendee")


async def test_only_admins_bind_and_a_room_reaches_only_its_own_list(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    member = await agents("membre")
    owner, room = await project_room(agents, synapse, "Voirie", member)
    list_id = f"voirie-{uuid.uuid4().hex[:6]}"
    assert "Seul un administrateur" in await said(member, room, synapse, f"!projet créer {list_id}")
    await said(owner, room, synapse, f"!projet créer {list_id}")
    await said(owner, room, synapse, "!tâche ajoute Réparer le nid-de-poule")
    other_owner, other_room = await project_room(agents, synapse, "Culture")
    taken = await said(other_owner, other_room, synapse, f"!projet lier {list_id}")
    assert taken.startswith(f"La liste de tâches « {list_id} » est déjà liée à un autre salon")
    await said(other_owner, other_room, synapse, f"!projet créer culture-{uuid.uuid4().hex[:6]}")
    assert await said(other_owner, other_room, synapse, "!tâche détails 1") == (
        "Aucune tâche n°1 dans ce projet. « !tâche liste toutes » montre les numéros.")
    assert await said(other_owner, other_room, synapse, "!tâche liste") == "Aucune tâche ouverte."


async def test_tasks_added_while_the_bots_are_killed_are_each_made_and_answered_once(
    synapse: ServerStack, caldav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room = await project_room(agents, synapse, "Sous tension")
    list_id = f"tension-{uuid.uuid4().hex[:6]}"
    await said(owner, room, synapse, f"!projet créer {list_id}")
    count = 20
    chance = random.Random()
    for index in range(count):
        await owner.send_text(room, f"!tâche ajoute Dossier {index} pour le 3/3/2027")
        if index in (5, 13):  # kill -9 while commands are in flight, then start again
            await bot_process.kill_and_restart(after=chance.uniform(0.0, 1.5))
    await owner.wait_for_text(room, lambda m: m.sender == projets_id(synapse) and "Dossier 19 " in m.body,
                              timeout=180)
    await asyncio.sleep(8)  # anything answered twice would have come by now
    answers = [m.body for m in owner.received if m.room_id == room and m.body.startswith("Tâche ajoutée")]
    assert sorted(body.split(" — ", 1)[1].split(" · ", 1)[0] for body in answers) == sorted(
        f"Dossier {index}" for index in range(count))
    assert len({body.split("n°", 1)[1].split(" ", 1)[0] for body in answers}) == count
    stored = [str(todo["summary"]) for todo in await asyncio.to_thread(all_todos, synapse, caldav, list_id)]
    assert sorted(stored) == sorted(f"Dossier {index}" for index in range(count))  # each once


async def test_my_tasks_in_a_direct_chat_gather_every_project_i_am_in_and_no_other(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    alice = await agents("alice")
    projects = {}
    for name in ("École", "Gymnase", "Cantine"):
        owner, room = await project_room(agents, synapse, f"Projet {name}", alice)
        await said(owner, room, synapse, f"!projet créer {name.lower()}-{uuid.uuid4().hex[:6]}")
        await said(owner, room, synapse, f"!tâche ajoute Tâche {name} {alice.user_id} pour le 3/3/2027")
        projects[name] = (owner, room)
    gym_owner, gym_room = projects["Gymnase"]
    await said(gym_owner, gym_room, synapse, "!tâche ajoute Tâche sans alice")
    await alice.client.room_leave(projects["Cantine"][1])  # she left: that project tells her nothing now

    direct = await create_encrypted_room(alice, name="Robot Projets")
    await alice.client.room_invite(direct, projets_id(synapse))
    await alice.wait_for_members_including(direct, projets_id(synapse))
    mine = await said(alice, direct, synapse, "!tâche liste moi")
    assert mine.splitlines() == [
        "Vos tâches ouvertes, tous projets confondus (2) :",
        "– [Projet Gymnase] n°1 — Tâche Gymnase · " + alice.user_id + " · pour mercredi 3 mars 2027 · à faire",
        "– [Projet École] n°1 — Tâche École · " + alice.user_id + " · pour mercredi 3 mars 2027 · à faire",
    ]  # the same deadline: by project name
    assert "Cantine" not in mine and "sans alice" not in mine
    assert await said(alice, projects["École"][1], synapse, "!mes-tâches") == mine  # the same from any room
    wrong = await said(alice, direct, synapse, "!mes-tâches en retard")
    assert wrong.startswith("Trop d’arguments") and "!mes-tâches" in wrong
    elsewhere = await said(alice, direct, synapse, "!tâche liste")
    assert elsewhere.startswith("Ce salon n’est lié à aucun projet")


async def test_a_task_added_while_the_task_server_is_down_is_kept_and_made_once_when_it_is_back(
    synapse: ServerStack, caldav: str, caldav_process: ServiceProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room = await project_room(agents, synapse, "Panne")
    list_id = f"panne-{uuid.uuid4().hex[:6]}"
    await said(owner, room, synapse, f"!projet créer {list_id}")
    await said(owner, room, synapse, "!tâche ajoute Prévenir les parents")
    caldav_process.stop()
    try:
        kept = await said(owner, room, synapse, "!tâche ajoute Commander les bennes pour le 4/4/2027")
        assert kept == ("Le serveur de tâches ne répond pas : votre commande est gardée et sera faite dès son "
                        "retour. Inutile de la retaper.")
        refused = await said(owner, room, synapse, "!tâche détails 1")
        assert refused == "Le serveur de tâches ne répond pas : rien n’a été modifié. Réessayez dans quelques minutes."
        await asyncio.sleep(7)  # the watcher's look (every 5 s in tests) found the server away
        listing = await said(owner, room, synapse, "!tâche liste")
        assert listing.startswith("⚠ Le serveur de tâches ne répond pas : voici les tâches telles qu’elles étaient à ")
        assert listing.splitlines()[1:] == ["Tâches ouvertes (1) :", "– n°1 — Prévenir les parents · à faire"]
    finally:
        caldav_process.start()
    since = len(owner.received)
    added = await owner.wait_for_text(room, lambda m: m.sender == projets_id(synapse) and m.body.startswith(
        "Tâche ajoutée"), since=since, timeout=90)
    assert added.body == "Tâche ajoutée : n°2 — Commander les bennes · pour dimanche 4 avril 2027 · à faire"
    stored = [str(todo["summary"]) for todo in await asyncio.to_thread(all_todos, synapse, caldav, list_id)]
    assert sorted(stored) == ["Commander les bennes", "Prévenir les parents"]
    await asyncio.sleep(3)
    assert sum(m.body.startswith("Tâche ajoutée : n°2") for m in owner.received if m.room_id == room) == 1


async def test_objectives_gather_their_tasks_and_the_state_is_told_and_drawn(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await project_room(agents, synapse, "Projet médiathèque")
    list_id = f"mediatheque-{uuid.uuid4().hex[:6]}"
    await said(owner, room, synapse, f"!projet créer {list_id}")
    objective = await said(owner, room, synapse, "!projet objectif Programme validé pour le 15/1/2027")
    assert objective == ("Objectif ajouté : n°1 — Programme validé · pour vendredi 15 janvier 2027 · à faire. "
                         "Rattachez-y des tâches : !tâche ajoute … objectif 1")
    for command in ("!tâche ajoute Visiter le bâtiment objectif 1 pour le 2/1/2026",
                    "!tâche ajoute Chiffrer les travaux objectif 1 pour le 4/1/2027",
                    "!tâche ajoute Demander trois devis sous 3", "!tâche ajoute Choisir le nom"):
        assert (await said(owner, room, synapse, command)).startswith("Tâche ajoutée")
    assert (await said(owner, room, synapse, "!tâche fait 3")).startswith("Faite : n°3")
    wrong = {"!tâche ajoute Relire objectif 9": "Aucun objectif n°9",
             "!tâche ajoute Relire objectif 3": "Aucun objectif n°3",
             "!tâche ajoute Relire sous 3 objectif 1": "pas les deux",
             "!projet objectif Budget @bob:localhost": "Un objectif a un intitulé et une échéance"}
    for command, says in wrong.items():
        assert says in await said(owner, room, synapse, command), command

    state = await said(owner, room, synapse, "!projet état")
    assert state.splitlines() == [
        "État du projet « Projet médiathèque » :",
        "⚠ n°1 — Programme validé : 1/3 faite(s) · pour vendredi 15 janvier 2027 · 1 en retard"
        " · prochaine échéance : vendredi 2 janvier 2026",
        "– Sans objectif : 0/1 faite(s)"]
    sent = await owner.wait_for_file(room, projets_id(synapse))
    content = sent.source["content"]
    assert content["msgtype"] == "m.image" and content["info"]["mimetype"] == "image/png"
    picture = Image.open(io.BytesIO(await owner.download_file(sent)))
    assert picture.format == "PNG" and picture.size == (content["info"]["w"], content["info"]["h"])
    # The objective's bar: a third done (green), a third late (red), a third to do (grey).
    bar_y = 56 + 23
    span = 900 - 300 - 70
    assert _near(picture.getpixel((300 + span // 6, bar_y)), (46, 125, 50))
    assert _near(picture.getpixel((300 + span // 2, bar_y)), (198, 40, 40))
    assert _near(picture.getpixel((300 + 5 * span // 6, bar_y)), (207, 216, 220))
    assert _near(picture.getpixel((300 + span // 6, bar_y + 46)), (207, 216, 220))  # « sans objectif »: nothing done
    # Below, tasks done week by week: one this week (the last bar, full height), none the week before.
    week, base = span // 8, 56 + 2 * 46 + 40 + 30 + 130
    assert _near(picture.getpixel((300 + 7 * week + week // 2, base - 60)), (46, 125, 50))
    assert _near(picture.getpixel((300 + 6 * week + week // 2, base - 60)), (255, 255, 255))

    listed = await said(owner, room, synapse, "!tâche liste objectif 1")
    assert [line.split(" · ")[0] for line in listed.splitlines()[1:]] == [
        "⚠ n°2 — Visiter le bâtiment", "– n°4 — Demander trois devis"]
    assert "Programme validé" not in await said(owner, room, synapse, "!tâche liste toutes")  # not a task


def _near(pixel: Any, colour: tuple[int, int, int]) -> bool:
    return all(abs(int(a) - b) <= 8 for a, b in zip(pixel[:3], colour, strict=True))


async def joined_reminder_room(agent: Agent, stack: ServerStack, timeout: float = 90) -> str:
    """The direct room @projets invited the agent to, joined (as an agent accepts it)."""
    return await agent.join_invitation(timeout)


async def test_each_assignee_gets_one_grouped_reminder_a_day_even_when_the_bots_are_killed(
    synapse: ServerStack, caldav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    alice, bob, carol = await agents("alice"), await agents("bob"), await agents("carol")
    tomorrow = datetime.now(PARIS).date() + timedelta(days=1)
    day = f"{tomorrow.day}/{tomorrow.month}/{tomorrow.year}"
    rooms = []
    for name in ("Voirie", "Écoles"):
        owner, room = await project_room(agents, synapse, f"Projet {name}", alice, bob, carol)
        await said(owner, room, synapse, f"!projet créer {name[:2].lower()}-{uuid.uuid4().hex[:6]}")
        rooms.append((owner, room))
    voirie, ecoles = rooms
    await said(*voirie, synapse, f"!tâche ajoute Signer le marché {alice.user_id} pour le {day}")
    await said(*voirie, synapse, f"!tâche ajoute Relancer la régie {alice.user_id} pour le 2/1/2026")
    await said(*ecoles, synapse, f"!tâche ajoute Commander les tables {alice.user_id} pour le {day}")
    await said(*ecoles, synapse, f"!tâche ajoute Vérifier les extincteurs {bob.user_id} pour le 5/1/2026")
    await said(*ecoles, synapse, f"!tâche ajoute Plus tard {carol.user_id} pour le 3/3/2030")
    for pause in (0.5, 2.0):  # kill -9 while the reminders go out, then start again
        await bot_process.kill_and_restart(after=pause)

    alice_room, bob_room = await joined_reminder_room(alice, synapse), await joined_reminder_room(bob, synapse)
    reminder = await alice.wait_for_text(alice_room, lambda m: m.sender == projets_id(synapse), timeout=90)
    lines = reminder.body.splitlines()
    assert lines[0] == "Vos tâches, tous projets confondus :" and lines[1] == "À rendre demain (2) :"
    assert sorted(line.split(" · ")[0] for line in lines[2:4]) == [
        "– [Projet Voirie] n°1 — Signer le marché", "– [Projet Écoles] n°1 — Commander les tables"]
    assert lines[4:] == [
        "En retard (1) :", f"– [Projet Voirie] n°2 — Relancer la régie · {alice.user_id} · pour vendredi 2 janvier"
        " 2026 · à faire"]
    told_bob = await bob.wait_for_text(bob_room, lambda m: m.sender == projets_id(synapse), timeout=90)
    assert told_bob.body.splitlines()[1:] == [
        "En retard (1) :", f"– [Projet Écoles] n°2 — Vérifier les extincteurs · {bob.user_id} · pour lundi 5 janvier"
        " 2026 · à faire"]
    assert told_bob.encrypted and reminder.encrypted
    await asyncio.sleep(12)  # two more rounds: nothing is sent again, carol (nothing due) gets nothing
    for agent, room in ((alice, alice_room), (bob, bob_room)):
        assert sum(m.sender == projets_id(synapse) for m in agent.received if m.room_id == room) == 1
    assert not carol.client.invited_rooms


async def test_the_weekly_summary_comes_on_the_chosen_day_once_even_when_the_bots_are_killed(
    synapse: ServerStack, caldav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    alice = await agents("alice")
    owner, room = await project_room(agents, synapse, "Projet piscine", alice)
    await said(owner, room, synapse, f"!projet créer piscine-{uuid.uuid4().hex[:6]}")
    assert (await said(owner, room, synapse, "!projet résumé")).startswith("Aucun résumé de la semaine n’est prévu")
    wrong = {"!projet résumé jeudredi": "« jeudredi » n’est pas un jour de la semaine",
             "!projet résumé lundi 25h": "« 25h » n’est pas une heure",
             "!projet résumé lundi midi et demi": "n’est pas une heure"}
    for command, says in wrong.items():
        answer = await said(owner, room, synapse, command)
        assert says in answer and "Exemple" in answer, command
    assert "Seul un administrateur" in await said(alice, room, synapse, "!projet résumé lundi 9h")
    assert (await said(owner, room, synapse, "!projet résumé")).startswith("Aucun résumé")  # nothing half-set
    await said(owner, room, synapse, "!tâche ajoute Vider le bassin pour le 2/1/2026")
    await said(owner, room, synapse, "!tâche ajoute Changer les filtres")
    await said(owner, room, synapse, "!tâche fait 2")

    today = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")[datetime.now(PARIS).weekday()]
    since = len(owner.received)
    assert await said(owner, room, synapse, f"!projet résumé {today} 0h") == (
        f"Le résumé de la semaine sera posté dans ce salon le {today} à 0h (heure de Paris)."
        " « !projet résumé aucun » l’arrête.")
    await bot_process.kill_and_restart(after=random.uniform(0.5, 5.5))  # kill -9 around the first round
    await bot_process.kill_and_restart(after=random.uniform(3.5, 6.5))
    bot = projets_id(synapse)
    summary = await owner.wait_for_text(room, lambda m: m.sender == bot and m.body.startswith("Résumé"),
                                        since=since, timeout=90)
    assert summary.body.splitlines() == [
        "Résumé de la semaine — « Projet piscine » :",
        "⚠ Sans objectif : 1/2 faite(s) · 1 en retard · prochaine échéance : vendredi 2 janvier 2026",
        "Cette semaine : 1 tâche(s) faite(s) ; 1 en retard aujourd’hui."]
    chart = await owner.wait_for_file(room, bot)
    assert chart.source["content"]["msgtype"] == "m.image"
    await asyncio.sleep(12)  # two more rounds: it is not sent again this week
    summaries = [m for m in owner.received if m.room_id == room and m.sender == bot and m.body.startswith("Résumé")]
    assert len(summaries) == 1 and sum(1 for r, e in owner.files if r == room and e.sender == bot) == 1
    assert (await said(owner, room, synapse, "!projet résumé")).startswith(
        f"Le résumé de la semaine est posté dans ce salon le {today} à 0h")
    assert await said(owner, room, synapse, "!projet résumé aucun") == (
        "Le résumé de la semaine ne sera plus posté dans ce salon.")


async def test_the_read_api_gives_my_projects_progress_and_nothing_of_the_others(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    alice = await agents("alice")
    owner, room = await project_room(agents, synapse, "Projet stade", alice)
    await said(owner, room, synapse, f"!projet créer stade-{uuid.uuid4().hex[:6]}")
    await said(owner, room, synapse, "!projet objectif Pelouse refaite pour le 1/6/2027")
    await said(owner, room, synapse, "!tâche ajoute Semer objectif 1 pour le 2/1/2026")
    await said(owner, room, synapse, "!tâche ajoute Arroser objectif 1")
    await said(owner, room, synapse, "!tâche fait 3")
    other_owner, other_room = await project_room(agents, synapse, "Projet secret")
    await said(other_owner, other_room, synapse, f"!projet créer secret-{uuid.uuid4().hex[:6]}")
    await said(other_owner, other_room, synapse, "!tâche ajoute Dossier confidentiel")

    async with httpx.AsyncClient(timeout=30) as http:
        missing = await http.get(f"{bots}/api/projets")
        assert missing.status_code == 401 and missing.json()["erreur"].startswith("Identifiez-vous")
        forged = await http.get(f"{bots}/api/projets", headers={"Authorization": "Bearer syt_faux_jeton"})
        assert forged.status_code == 401 and forged.json()["erreur"].startswith("Jeton refusé")
        assert "syt_faux_jeton" not in (synapse.config.data_dir / "logs" / "bots.log").read_text()
        mine = await http.get(f"{bots}/api/projets", headers={"Authorization": f"Bearer {alice.client.access_token}"})
    assert mine.status_code == 200
    report = mine.json()
    assert report["agent"] == alice.user_id
    assert [project["nom"] for project in report["projets"]] == ["Projet stade"]  # not « Projet secret »
    project = report["projets"][0]
    assert (project["taches"], project["faites"], project["en_retard"]) == (2, 1, 1)
    assert project["objectifs"] == [{"titre": "Pelouse refaite", "echeance": "2027-06-01T00:00:00+02:00",
                                     "faites": 1, "total": 2, "en_retard": 1,
                                     "prochaine_echeance": "2026-01-02T00:00:00+01:00"}]
    assert "Dossier confidentiel" not in mine.text
