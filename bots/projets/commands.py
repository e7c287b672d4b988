"""@projets' commands: ``!projet`` (the room's task list) and ``!tâche`` (its tasks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from icalendar import Todo
from mautrix.types import MessageEvent, RoomID

from maillage.bots.agenda.dates import DateError, fold, read_when
from maillage.bots.agenda.events import one_line
from maillage.bots.caldav.client import CalDavError, Item
from maillage.bots.projets.bot import (
    MAX_LISTED,
    ProjetsBot,
    my_tasks_command,
    project_commands,
    task_commands,
    uid_for,
)
from maillage.bots.projets.comments import add_comment, remember_thread, spoken_comments
from maillage.bots.projets.report import post_report, state_report
from maillage.bots.projets.state import objective_of
from maillage.bots.projets.summary import read_schedule, spoken_schedule
from maillage.bots.projets.tasks import (
    OBJECTIVE,
    PRIORITIES,
    Task,
    as_calendar,
    set_assignee,
    set_due,
    set_status,
    task_of,
    touch,
)
from maillage.bots.runtime.commands import Argument, CommandError, user_id_of
from maillage.bots.runtime.store import transaction
from maillage.i18n import t

KEYWORDS = ("pour", "priorité", "priorite", "priority", "sous", "under", "objectif", "objective")


def _number(text: str) -> int:
    cleaned = text.removeprefix("n°").removeprefix("#")
    if not cleaned.isdigit() or not 0 < int(cleaned) < 10**9:
        raise CommandError(t("projet.number_invalid", value=text[:20]))
    return int(cleaned)


NUMBER = Argument("numéro", "le numéro de la tâche (n°3)", parse=_number)


# --- !projet -------------------------------------------------------------------------------

@project_commands.subcommand("créer", "creer", "create", help="créer la liste de tâches du projet et y lier ce salon",
                             example="!projet créer Rénovation de l’école",
                             arguments=(Argument("nom", "nom du projet", rest=True),))
async def create(bot: ProjetsBot, event: MessageEvent, nom: str) -> None:
    list_id = await bot.create_and_bind(event, nom)
    await bot.reply(event, t("projet.created", list=list_id, name=nom.strip()[:100]))


@project_commands.subcommand("lier", "bind", help="lier ce salon à une liste de tâches existante",
                             example="!projet lier renovation-ecole",
                             arguments=(Argument("liste", "identifiant de la liste de tâches", rest=True),))
async def bind(bot: ProjetsBot, event: MessageEvent, liste: str) -> None:
    list_id = await bot.bind_existing(event, liste)
    await bot.reply(event, t("projet.bound", list=list_id))


@project_commands.subcommand("délier", "delier", "unbind", help="ne plus lier ce salon à sa liste de tâches",
                             example="!projet délier")
async def unbind(bot: ProjetsBot, event: MessageEvent) -> None:
    await bot.bindings.unbind(event)
    await bot.reply(event, t("projet.unbound"))


@project_commands.subcommand("espace", "space", help="étendre le projet de ce salon à tous les salons de son"
                             " espace (mêmes tâches, mêmes numéros)", example="!projet espace")
async def to_space(bot: ProjetsBot, event: MessageEvent) -> None:
    holder = await bot.bindings.holder(event.room_id)
    if holder is None:
        raise CommandError(t("projet.not_bound"))
    if holder[0] != event.room_id:
        raise CommandError(t("projet.space_already", name=await bot.room_name(holder[0]) or holder[0]))
    spaces = await bot.bindings.spaces_of(event.room_id)
    if len(spaces) != 1:
        raise CommandError(t("projet.space_none" if not spaces else "projet.space_many"))
    space, list_id = spaces[0], holder[1]
    await bot.bindings.move_to_space(event, space, list_id)
    async with transaction(bot.context.db) as conn:  # the room's numbers become the space's
        if await conn.fetchval("SELECT 1 FROM projet_number WHERE room_id=$1", event.room_id):
            await conn.execute("DELETE FROM projet_number WHERE room_id=$1", space)
            await conn.execute("UPDATE projet_number SET room_id=$1 WHERE room_id=$2", space, event.room_id)
    await bot.reply(event, t("projet.space_bound", list=list_id, name=await bot.room_name(space) or space))


@project_commands.subcommand("liste", "list", help="la liste de tâches liée à ce salon et son adresse CalDAV",
                             example="!projet liste")
async def show_list(bot: ProjetsBot, event: MessageEvent) -> None:
    list_id = await bot.bindings.required(event.room_id)
    await bot.reply(event, t("projet.current", list=list_id, url=bot.caldav.calendar_url(list_id)))


@project_commands.subcommand("objectif", "objective", help="ajouter un objectif au projet (les tâches s’y rattachent"
                             " avec « objectif <n> »)", example="!projet objectif Programme validé pour le 15/1/2027",
                             arguments=(Argument("objectif", "l’objectif et son échéance", rest=True),))
async def add_objective(bot: ProjetsBot, event: MessageEvent, objectif: str) -> None:
    list_id = await bot.bindings.required(event.room_id)
    now = bot.now()
    new = read_task(objectif, now, bot.context.config.collectivite.nom_serveur)
    if new.assignee or new.parent is not None or new.objective is not None or new.priority:
        raise CommandError(t("projet.objective_plain"))
    uid = uid_for(event.event_id)
    todo = Todo()
    todo.add("uid", uid)
    todo.add("summary", new.title)
    todo["status"] = "NEEDS-ACTION"
    todo.add("categories", [t("projet.objective_category")])
    todo.add(OBJECTIVE, "TRUE")
    todo.add("x-maillage-auteur", event.sender)
    set_due(todo, new.due, now)
    href = bot.caldav.href_of(list_id, uid)
    await _create(bot, list_id, href, todo)
    number = await bot.numbers.of(event.room_id, uid, href)
    await bot.reply(event, t("projet.objective_added", task=bot.describe(number, Task.of(todo, href, bot.zone)),
                             number=number) + _past_warning(new.due, now))


@project_commands.subcommand("état", "etat", "status", help="l’avancement par objectif, en tableau et en graphique",
                             example="!projet état")
async def status(bot: ProjetsBot, event: MessageEvent) -> None:
    list_id = await bot.bindings.required(event.room_id)
    report = await state_report(bot, event.room_id, list_id)
    if report is None:
        await bot.reply(event, t("projet.state_empty"))
        return
    await post_report(bot, event.room_id, event.event_id, report, bot.reply(event, report.text),
                      relation=bot.relation_to(event))


@project_commands.subcommand("résumé", "resume", "summary", help="le résumé de la semaine, posté ici le jour choisi"
                             " (« aucun » pour l’arrêter)", example="!projet résumé lundi 9h",
                             arguments=(Argument("jour", "un jour de la semaine et une heure, ou « aucun »",
                                                 required=False, rest=True),))
async def weekly_summary(bot: ProjetsBot, event: MessageEvent, jour: str = "") -> None:
    await bot.bindings.required(event.room_id)
    if not jour.strip():
        chosen = await bot.summaries.chosen(event.room_id)
        await bot.reply(event, t("projet.summary_current", when=spoken_schedule(*chosen)) if chosen
                        else t("projet.summary_none"))
        return
    if not await bot.is_room_admin(event.room_id, event.sender):
        raise CommandError(t("bot.admin_only", command="!projet résumé"))
    if fold(jour.strip()) in ("aucun", "aucune", "none", "stop", "arret"):
        stopped = await bot.summaries.stop(event.room_id)
        await bot.reply(event, t("projet.summary_stopped" if stopped else "projet.summary_none"))
        return
    weekday, at = read_schedule(jour)
    await bot.summaries.choose(event.room_id, weekday, at)
    await bot.reply(event, t("projet.summary_set", when=spoken_schedule(weekday, at)))


async def _create(bot: ProjetsBot, list_id: str, href: str, todo: Todo) -> None:
    """A new item, once: a 412 is the write of an earlier attempt at the same command."""
    try:
        await bot.write(list_id, href, as_calendar(todo), None)
    except CalDavError as error:
        if error.status != 412:
            raise bot.deferred(error) from None
        await bot.noted(list_id, Item(href, "", ""))


# --- !tâche ajoute -----------------------------------------------------------------------------

@dataclass(frozen=True)
class NewTask:
    title: str
    assignee: str
    due: date | datetime | None
    priority: int
    parent: int | None
    objective: int | None = None


def read_task(text: str, now: datetime, server_name: str) -> NewTask:
    """« Relancer l’architecte @alice pour vendredi priorité haute sous 3 »: the title is what
    is left once the assignee, « pour <date> », « priorité <niveau> » and « sous <n> » are read."""
    words, title, assignee, priority, parent, objective = text.split(), [], "", 0, None, None
    due: date | datetime | None = None
    position = 0
    while position < len(words):
        word, folded = words[position], fold(words[position])
        if word.startswith("@") and len(word) > 1:
            if assignee:
                raise CommandError(t("projet.one_assignee"))
            assignee = user_id_of(word, server_name, "projet.user_invalid")
        elif folded in ("priorite", "priority") and position + 1 < len(words):
            level = PRIORITIES.get(fold(words[position + 1]))
            if level is None:
                raise CommandError(t("projet.priority_unreadable", text=words[position + 1][:30]))
            priority, position = level, position + 1
        elif folded in ("sous", "under") and position + 1 < len(words):
            parent, position = _number(words[position + 1]), position + 1
        elif folded in ("objectif", "objective") and position + 1 < len(words) and _is_number(words[position + 1]):
            objective, position = _number(words[position + 1]), position + 1
        elif folded in ("pour", "for") and position + 1 < len(words):
            end = next((i for i in range(position + 1, len(words))
                        if fold(words[i]) in KEYWORDS or words[i].startswith("@")), len(words))
            due = read_due(" ".join(words[position + 1:end]), now)
            position = end - 1
        else:
            title.append(word)
        position += 1
    if not title:
        raise CommandError(t("projet.title_missing"))
    if parent is not None and objective is not None:
        raise CommandError(t("projet.parent_or_objective"))
    return NewTask(" ".join(title)[:200], assignee, due, priority, parent, objective)


def _is_number(word: str) -> bool:
    return word.removeprefix("n°").removeprefix("#").isdigit()


def read_due(text: str, now: datetime) -> date | datetime:
    """A deadline: « vendredi », « le 3/12 », « demain 17h » (a day alone is a due date)."""
    when = read_when(text, now)
    if when.recurrence is not None:
        raise DateError(t("projet.due_recurring"))
    return when.start.date() if when.all_day else when.start


async def check_member(bot: ProjetsBot, room_id: str, user_id: str) -> None:
    """Tasks go to the members of the room (or of its project's space) only: someone else
    would not see them."""
    if user_id in await bot.client.get_joined_members(RoomID(room_id)):
        return
    holder = await bot.bindings.holder(room_id)
    if holder is None or holder[0] == room_id or user_id not in await bot.client.get_joined_members(
            RoomID(holder[0])):
        raise CommandError(t("projet.not_member", user=user_id))


def _past_warning(due: date | datetime | None, now: datetime) -> str:
    if due is None:
        return ""
    past = due < now if isinstance(due, datetime) else due < now.date()
    return "\n" + t("projet.due_past") if past else ""


@task_commands.subcommand("ajoute", "ajouter", "add", help="ajouter une tâche (@qui, pour <date>, priorité, sous <n>)",
                          example="!tâche ajoute Relancer l’architecte @alice pour vendredi priorité haute",
                          arguments=(Argument("tâche", "la tâche", rest=True),))
async def add(bot: ProjetsBot, event: MessageEvent, **arguments: str) -> None:
    list_id = await bot.bindings.required(event.room_id)
    now = bot.now()
    new = read_task(arguments["tâche"], now, bot.context.config.collectivite.nom_serveur)
    if new.assignee:
        await check_member(bot, event.room_id, new.assignee)
    uid = uid_for(event.event_id)
    todo = Todo()
    todo.add("uid", uid)
    todo.add("summary", new.title)
    todo.add("created", now.astimezone(UTC))
    todo["status"] = "NEEDS-ACTION"
    todo.add("x-maillage-auteur", event.sender)
    if new.priority:
        todo.add("priority", new.priority)
    if new.parent is not None or new.objective is not None:
        todo.add("related-to", await _parent_uid(bot, event, new), parameters={"RELTYPE": "PARENT"})
    set_assignee(todo, new.assignee)
    set_due(todo, new.due, now)
    href = bot.caldav.href_of(list_id, uid)
    await _create(bot, list_id, href, todo)
    number = await bot.numbers.of(event.room_id, uid, href)
    answer = await bot.reply(event, t("projet.added", task=bot.describe(number, Task.of(todo, href, bot.zone)))
                             + _past_warning(new.due, now))
    await remember_thread(bot, event.room_id, number, event.event_id, answer)


async def _parent_uid(bot: ProjetsBot, event: MessageEvent, new: NewTask) -> str:
    """The UID of the task (``sous <n>``) or of the objective (``objectif <n>``) a new task goes under."""
    number = new.parent if new.parent is not None else new.objective
    assert number is not None
    unknown = "projet.no_such_number" if new.parent is not None else "projet.no_such_objective"
    _, item = await bot.item_numbered(event.room_id, number, unknown)
    found = task_of(item.data)
    if found is None or Task.of(found, item.href, bot.zone).objective != (new.objective is not None):
        raise CommandError(t(unknown, number=number))
    return str(found.get("uid"))


# --- !tâche liste ------------------------------------------------------------------------------

@task_commands.subcommand("liste", "list", help="les tâches ouvertes (moi, @qui, en retard, cette semaine, toutes) ;"
                          " « moi » en message privé au robot : vos tâches de tous vos projets",
                          example="!tâche liste en retard",
                          arguments=(Argument("filtre", "moi, @qui, en retard, cette semaine ou toutes",
                                              required=False, rest=True),))
async def list_tasks(bot: ProjetsBot, event: MessageEvent, filtre: str = "") -> None:
    if await bot.bindings.target(event.room_id) is None and fold(filtre.strip()) in ("moi", "me", "mine"):
        await _mine_everywhere(bot, event)  # a direct chat with the bot: every project
        return
    list_id = await bot.bindings.required(event.room_id)
    tasks = await bot.index.tasks(list_id)
    if tasks is None:  # not read whole yet: read it now
        await bot.follow(list_id)
        tasks = await bot.index.tasks(list_id) or []
    now = bot.now()
    keep: Callable[[Task], bool]
    if fold(filtre.strip()).startswith(("objectif ", "objective ")):
        objective = await _objective_uid(bot, event, filtre.split(maxsplit=1)[1])
        by_uid = {task.uid: task for task in tasks}
        keep, which = (lambda task: task.is_open and objective_of(task, by_uid) == objective), "objective"
    else:
        keep, which = _filter(filtre, event.sender, now, bot.context.config.collectivite.nom_serveur)
    # By deadline; tasks met for the first time get their numbers in that order.
    chosen = sorted((task for task in tasks if not task.objective and keep(task)),
                    key=lambda task: (task.due is None, task.due or now, task.summary))
    numbered = list(zip(await bot.numbers.of_many(event.room_id, [(task.uid, task.href) for task in chosen]),
                        chosen, strict=True))
    stale = bot.stale_note(list_id)
    if not numbered:
        await bot.reply(event, stale + t("projet.nothing", which=_label(which, none=True)))
        return
    lines = [("⚠ " if task.late(now) else "– ") + bot.describe(number, task) for number, task in numbered[:MAX_LISTED]]
    if len(numbered) > MAX_LISTED:
        lines.append(t("projet.more", count=len(numbered) - MAX_LISTED))
    await bot.reply(event, stale + t("projet.listing", which=_label(which), count=len(numbered)) + "\n"
                    + "\n".join(lines))


@my_tasks_command.command(help="vos tâches ouvertes dans tous les projets dont vous êtes membre, par échéance",
                          example="!mes-tâches")
async def my_tasks(bot: ProjetsBot, event: MessageEvent) -> None:
    await _mine_everywhere(bot, event)


async def _mine_everywhere(bot: ProjetsBot, event: MessageEvent) -> None:
    """The agent's open tasks in every project whose room they are in (no other: a project
    they are not in tells them nothing), each with its project and its number there."""
    now, found = bot.now(), []
    for room_id, list_id in await bot.bound_rooms():
        if event.sender not in await bot.client.get_joined_members(RoomID(room_id)):
            continue
        tasks = await bot.index.tasks(list_id)
        if tasks is None:
            await bot.follow(list_id)
            tasks = await bot.index.tasks(list_id) or []
        name = await bot.room_name(room_id) or list_id
        for task in tasks:
            if task.is_open and not task.objective and task.assignee == event.sender:
                found.append((task, name, await bot.numbers.of(room_id, task.uid, task.href)))
    if not found:
        await bot.reply(event, t("projet.nothing", which=t("projet.which_mine_one")))
        return
    found.sort(key=lambda entry: (entry[0].due is None, entry[0].due or now, entry[1], entry[2]))
    lines = [("⚠ " if task.late(now) else "– ") + f"[{one_line(name)[:80]}] " + bot.describe(number, task)
             for task, name, number in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        lines.append(t("projet.more", count=len(found) - MAX_LISTED))
    await bot.reply(event, t("projet.listing_everywhere", count=len(found)) + "\n" + "\n".join(lines))


async def _objective_uid(bot: ProjetsBot, event: MessageEvent, text: str) -> str:
    number = _number(text.strip())
    _, item = await bot.item_numbered(event.room_id, number, "projet.no_such_objective")
    found = task_of(item.data)
    if found is None or not Task.of(found, item.href, bot.zone).objective:
        raise CommandError(t("projet.no_such_objective", number=number))
    return str(found.get("uid"))


def _filter(text: str, sender: str, now: datetime, server_name: str) -> tuple[Callable[[Task], bool], str]:
    """Which tasks to list, and the label key (``projet.which_<name>``, ``…_one`` when none)."""
    words = fold(" ".join(text.split()))
    if words in ("", "ouvertes", "open"):
        return (lambda task: task.is_open), "open"
    if words in ("toutes", "tout", "all"):
        return (lambda task: True), "all"
    if words in ("moi", "me", "mes taches", "mine"):
        return (lambda task: task.is_open and task.assignee == sender), "mine"
    if words in ("en retard", "retard", "late", "overdue"):
        return (lambda task: task.late(now)), "late"
    if words in ("cette semaine", "semaine", "this week", "week"):
        sunday = now.date().toordinal() + 6 - now.weekday()
        return (lambda task: task.is_open and task.due is not None and task.due.date().toordinal() <= sunday), "week"
    if text.strip().startswith("@"):
        user_id = user_id_of(text.strip(), server_name, "projet.user_invalid")
        return (lambda task: task.is_open and task.assignee == user_id), "of:" + user_id
    raise CommandError(t("projet.filter_unknown", text=text[:40]))


def _label(which: str, *, none: bool = False) -> str:
    name, _, user = which.partition(":")
    return t(f"projet.which_{name}" + ("_one" if none else ""), user=user)


# --- changing one task ---------------------------------------------------------------------------

async def _change(bot: ProjetsBot, event: MessageEvent, number: int, change: Any) -> Task:
    """Read the task, change it with ``change(todo)``, write it back with ``If-Match``: another
    agent's change meanwhile is not overwritten (the agent is told), and what other apps put in
    the task is kept."""
    list_id, item = await bot.item_numbered(event.room_id, number, "projet.no_such_number")
    todo = task_of(item.data)
    if todo is None:
        raise CommandError(t("projet.no_such_number", number=number))
    change(todo)
    try:
        await bot.write(list_id, item.href, as_calendar(todo), item.etag or None)
    except CalDavError as error:
        if error.status == 412:
            raise CommandError(t("projet.changed_meanwhile", number=number)) from None
        raise bot.deferred(error) from None
    return Task.of(todo, item.href, bot.zone)


def _status_command(status: str, *names: str, help: str, example: str, answer: str) -> None:
    @task_commands.subcommand(*names, help=help, example=example, arguments=(NUMBER,))
    async def handler(bot: ProjetsBot, event: MessageEvent, **arguments: Any) -> None:
        number = arguments["numéro"]
        task = await _change(bot, event, number, lambda todo: set_status(todo, status, bot.now()))
        await bot.reply(event, t(answer, task=bot.describe(number, task)))


_status_command("IN-PROCESS", "commence", "commencer", "start", help="marquer une tâche en cours",
                example="!tâche commence 3", answer="projet.started")
_status_command("COMPLETED", "fait", "faite", "terminé", "termine", "done", help="marquer une tâche faite",
                example="!tâche fait 3", answer="projet.done")
_status_command("NEEDS-ACTION", "rouvre", "rouvrir", "reopen", help="rouvrir une tâche faite ou abandonnée",
                example="!tâche rouvre 3", answer="projet.reopened")
_status_command("CANCELLED", "abandonne", "abandonner", "cancel", help="abandonner une tâche",
                example="!tâche abandonne 3", answer="projet.cancelled")


@task_commands.subcommand("assigne", "assigner", "assign", help="confier une tâche à un membre du salon",
                          example="!tâche assigne 3 @alice:mairie.fr",
                          arguments=(NUMBER, Argument("qui", "l’agent (@alice:…)")))
async def assign(bot: ProjetsBot, event: MessageEvent, qui: str, **arguments: Any) -> None:
    number = arguments["numéro"]
    user_id = user_id_of(qui, bot.context.config.collectivite.nom_serveur, "projet.user_invalid")
    await check_member(bot, event.room_id, user_id)

    def reassign(todo: Todo) -> None:
        set_assignee(todo, user_id)
        touch(todo, bot.now())

    task = await _change(bot, event, number, reassign)
    await bot.reply(event, t("projet.assigned", task=bot.describe(number, task)))


@task_commands.subcommand("échéance", "echeance", "due", help="changer l’échéance d’une tâche (« aucune » pour l’ôter)",
                          example="!tâche échéance 3 vendredi",
                          arguments=(NUMBER, Argument("date", "la nouvelle échéance", rest=True)))
async def due(bot: ProjetsBot, event: MessageEvent, date: str, **arguments: Any) -> None:
    number, now = arguments["numéro"], bot.now()
    deadline = None if fold(date.strip()) in ("aucune", "aucun", "none") else read_due(date, now)
    task = await _change(bot, event, number, lambda todo: set_due(todo, deadline, now))
    await bot.reply(event, t("projet.due_set", task=bot.describe(number, task)) + _past_warning(deadline, now))


@task_commands.subcommand("détails", "details", help="tout sur une tâche", example="!tâche détails 3",
                          arguments=(NUMBER,))
async def details(bot: ProjetsBot, event: MessageEvent, **arguments: Any) -> None:
    number = arguments["numéro"]
    _, item = await bot.item_numbered(event.room_id, number, "projet.no_such_number")
    todo = task_of(item.data)
    if todo is None:
        raise CommandError(t("projet.no_such_number", number=number))
    lines = [bot.describe(number, Task.of(todo, item.href, bot.zone), long=True),
             *spoken_comments(todo, bot.zone), t("projet.comment_hint", number=number)]
    answer = await bot.reply(event, "\n".join(lines))
    await remember_thread(bot, event.room_id, number, event.event_id, answer)


@task_commands.subcommand("commente", "commenter", "comment", help="commenter une tâche (ou répondre dans son fil)",
                          example="!tâche commente 3 Devis reçu, en attente de signature",
                          arguments=(NUMBER, Argument("commentaire", "le commentaire", rest=True)))
async def comment(bot: ProjetsBot, event: MessageEvent, commentaire: str, **arguments: Any) -> None:
    number = arguments["numéro"]
    await add_comment(bot, event, number, commentaire.strip())
    answer = await bot.reply(event, t("projet.commented", number=number))
    await remember_thread(bot, event.room_id, number, event.event_id, answer)
