"""``!circuit``: validation circuits on the room's documents (visa, avis, signature, archive)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from mautrix.types import MessageEvent

from maillage.bots.agenda.dates import read_when
from maillage.bots.documents.bot import DocumentsBot, circuit_commands
from maillage.bots.documents.circuits.spec import Request, Step, fold, read_request, read_steps
from maillage.bots.documents.circuits.store import CANCELLED, OPEN, RUNNING, Circuit
from maillage.bots.documents.library import bound_folder, existing, resolve, versions_of
from maillage.bots.runtime.bot import now_ms
from maillage.bots.runtime.commands import Argument, CommandError, user_id_of
from maillage.i18n import t

MAX_LISTED = 30


def circuit_number(text: str) -> int:
    digits = text.removeprefix("n°").removeprefix("#")
    if not digits.isdigit() or len(digits) > 9:
        raise CommandError(t("circuit.number_invalid", value=text[:20]))
    return int(digits)


NUMBER = Argument("numéro", "le numéro du circuit", parse=circuit_number)


def read_deadline(text: str, now: datetime) -> date:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        try:
            day = date.fromisoformat(text.strip())
        except ValueError:
            raise CommandError(t("circuit.deadline_invalid", value=text[:40])) from None
    else:
        try:
            when = read_when(text, now)
        except CommandError:
            raise CommandError(t("circuit.deadline_invalid", value=text[:40])) from None
        if when.recurrence is not None:
            raise CommandError(t("circuit.deadline_invalid", value=text[:40]))
        day = when.start.date()
    if day < now.date():
        raise CommandError(t("circuit.deadline_past", date=day.strftime("%d/%m/%Y")))
    return day


def model_steps(bot: DocumentsBot, name: str, folder: str) -> tuple[Step, ...]:
    """The steps of the model ``name`` for the room's service (its folder's first part)."""
    service = folder.split("/")[0]
    config = bot.context.config
    models = [m for m in config.circuits.modeles if m.service in ("", service)]
    found = sorted((m for m in models if fold(m.nom) == fold(name)), key=lambda m: m.service == "")
    if not found:
        names = ", ".join(sorted({m.nom for m in models})) or t("circuit.no_models")
        raise CommandError(t("circuit.model_unknown", name=name[:60], names=names))
    return read_steps(found[0].etapes, config.collectivite.nom_serveur)


@circuit_commands.subcommand(
    "lance", "lancer", "start", help="lancer un circuit sur un document (étapes, ou modèle: <nom>)",
    example="!circuit lance arrete.pdf visa: @chef.urbanisme, avis: @juridique @finances (un), signature: @maire"
            " échéance: 2026-12-10",
    arguments=(Argument("demande", "le document puis les étapes", rest=True),))
async def start(bot: DocumentsBot, event: MessageEvent, demande: str) -> None:
    engine = bot.circuits
    known = await engine.store.started_by(event.event_id)
    if known is None:
        folder = await bound_folder(bot, event)
        request: Request = read_request(demande, bot.context.config.collectivite.nom_serveur)
        path = resolve(folder, request.document)
        await existing(bot, path, request.document)
        steps = model_steps(bot, request.model, folder) if request.model else request.steps
        deadline = read_deadline(request.deadline, datetime.now(engine.zone)) if request.deadline else None
        members = set(await bot.client.get_joined_members(event.room_id))
        outside = sorted({a for s in steps for a in s.actors} - members)
        if outside:
            raise CommandError(t("circuit.actors_not_members", users=", ".join(outside)))
        known = await engine.start(room_id=event.room_id, event_id=event.event_id, sender=event.sender,
                                   document=path, folder=folder, model=request.model, deadline=deadline, steps=steps)
    else:
        await engine.announce(known)
    await bot.reply(event, t("circuit.started", number=known.id, name=known.name, steps=len(known.steps),
                             deadline=engine.deadline_note(known)))


async def _act(bot: DocumentsBot, event: MessageEvent, number: int, action: str, comment: str) -> None:
    circuit = await _visible(bot, event.room_id, event.sender, number)
    await bot.circuits.act(circuit.id, event.sender, action, comment, event.event_id,
                           lambda said: bot.reply(event, said), event.event_id)


async def _visible(bot: DocumentsBot, room_id: str, user_id: str, number: int) -> Circuit:
    """The circuit, if the agent is a member of its room (else: as if it did not exist)."""
    circuit = await bot.circuits.store.get(number)
    if circuit is None or (circuit.room_id != room_id and not await bot.circuits.in_room(circuit.room_id, user_id)):
        raise CommandError(t("circuit.unknown", number=number))
    return circuit


@circuit_commands.subcommand("vise", "viser", "approve", help="viser l’étape en cours (ou donner un avis favorable)",
                             example="!circuit vise 3 ok pour moi",
                             arguments=(NUMBER, Argument("commentaire", "", required=False, rest=True)))
async def approve(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    await _act(bot, event, arguments["numéro"], "vise", arguments.get("commentaire", ""))


@circuit_commands.subcommand("signe", "signer", "sign", help="signer (dernière étape d’un circuit)",
                             example="!circuit signe 3",
                             arguments=(NUMBER, Argument("commentaire", "", required=False, rest=True)))
async def sign(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    await _act(bot, event, arguments["numéro"], "signe", arguments.get("commentaire", ""))


@circuit_commands.subcommand("refuse", "refuser", "reject",
                             help="refuser, avec un motif : le circuit revient à son auteur",
                             example="!circuit refuse 3 il manque l’annexe financière",
                             arguments=(NUMBER, Argument("motif", "", required=False, rest=True)))
async def refuse(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    await _act(bot, event, arguments["numéro"], "refuse", arguments.get("motif", ""))


@circuit_commands.subcommand("état", "etat", "status", help="l’historique et l’étape en cours d’un circuit",
                             example="!circuit état 3", arguments=(NUMBER,))
async def status(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    circuit = await _visible(bot, event.room_id, event.sender, arguments["numéro"])
    engine = bot.circuits
    lines = [t("circuit.status_title", number=circuit.id, name=circuit.name, state=t(f"circuit.state_{circuit.state}"))
             + engine.deadline_note(circuit)]
    for index, step in enumerate(circuit.steps):
        marker = "▶" if circuit.state == RUNNING and index == circuit.step else "·"
        lines.append(f"{marker} {index + 1}. {step.spoken()}")
    lines.append(t("circuit.timeline"))
    for transition in await engine.store.transitions(circuit.id):
        line = engine.receipt_line(circuit, transition)
        text = " — ".join(part for part in (f"  {line.when.astimezone(engine.zone):%d/%m/%Y %H:%M}", line.step,
                                            line.decision, line.who) if part)
        lines.append(text + (f" : « {line.comment} »" if line.comment else ""))
    if circuit.state == RUNNING:
        lines.append(t("circuit.waiting", step=engine.step_line(circuit)))
    await bot.reply(event, "\n".join(lines))


@circuit_commands.subcommand("liste", "list", help="les circuits en cours dans ce salon", example="!circuit liste")
async def listing(bot: DocumentsBot, event: MessageEvent) -> None:
    circuits = await bot.circuits.store.of_room(event.room_id, OPEN)
    if not circuits:
        await bot.reply(event, t("circuit.none_open"))
        return
    await bot.reply(event, "\n".join([t("circuit.open_title", count=len(circuits)),
                                      *(_short(bot, c) for c in circuits[:MAX_LISTED])]))


def _short(bot: DocumentsBot, circuit: Circuit) -> str:
    state = bot.circuits.step_line(circuit) if circuit.state == RUNNING else t(f"circuit.state_{circuit.state}")
    return f"– n°{circuit.id} « {circuit.name} » : {state}{bot.circuits.deadline_note(circuit)}"


@circuit_commands.subcommand("àfaire", "afaire", "à-faire", "a-faire", "todo",
                             help="ce qui attend votre visa ou votre signature, dans tous les salons",
                             example="!circuit àfaire")
async def to_do(bot: DocumentsBot, event: MessageEvent) -> None:
    circuits = await bot.circuits.store.waiting_for(event.sender)
    if not circuits:
        await bot.reply(event, t("circuit.nothing_to_do"))
        return
    lines = [t("circuit.to_do_title", count=len(circuits))]
    for circuit in circuits[:MAX_LISTED]:
        room = await bot.room_name(circuit.room_id) or circuit.room_id
        lines.append(f"{_short(bot, circuit)} — {room}")
    await bot.reply(event, "\n".join(lines))


@circuit_commands.subcommand("en-retard", "enretard", "retard", "overdue",
                             help="les circuits de ce salon dont l’échéance est passée", example="!circuit en-retard")
async def overdue(bot: DocumentsBot, event: MessageEvent) -> None:
    today = bot.circuits.today().isoformat()
    late = [c for c in await bot.circuits.store.of_room(event.room_id, OPEN) if c.deadline and c.deadline < today]
    if not late:
        await bot.reply(event, t("circuit.none_late"))
        return
    await bot.reply(event, "\n".join([t("circuit.late_title", count=len(late)),
                                      *(_short(bot, c) for c in late[:MAX_LISTED])]))


@circuit_commands.subcommand("reprend", "reprendre", "resume",
                             help="relancer un circuit refusé ou arrêté, sur la dernière version du document",
                             example="!circuit reprend 3",
                             arguments=(NUMBER, Argument("document", "", required=False, rest=True)))
async def resume(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    circuit = await _visible(bot, event.room_id, event.sender, arguments["numéro"])
    if "document" in arguments:
        document = resolve(circuit.folder, arguments["document"])
        await existing(bot, document, arguments["document"])
    else:
        versions = await versions_of(bot, circuit.document) if await bot.dav.entry(circuit.document) else []
        document = versions[-1].path if versions else circuit.document
    circuit = await bot.circuits.resume(circuit, event.sender, event.event_id, document)
    await bot.reply(event, t("circuit.resumed", number=circuit.id, name=circuit.name))


@circuit_commands.subcommand("annule", "annuler", "cancel", help="annuler un circuit (son auteur)",
                             example="!circuit annule 3 dossier retiré",
                             arguments=(NUMBER, Argument("motif", "", required=False, rest=True)))
async def cancel(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    circuit = await _visible(bot, event.room_id, event.sender, arguments["numéro"])
    engine = bot.circuits
    if await engine.store.transition_of(event.event_id) is None:
        if circuit.state not in OPEN:
            raise CommandError(t(f"circuit.not_running_{circuit.state}", number=circuit.id))
        if event.sender != circuit.initiator and not await bot.is_room_admin(circuit.room_id, event.sender):
            raise CommandError(t("circuit.initiator_only", number=circuit.id, initiator=circuit.initiator))
        await engine.store.end(circuit, CANCELLED, who=event.sender, action="annule",
                               comment=arguments.get("motif", "").strip(), event_id=event.event_id, now=now_ms())
    await bot.reply(event, t("circuit.cancelled", number=circuit.id, name=circuit.name))


@circuit_commands.subcommand("délègue", "delegue", "déléguer", "deleguer", "delegate",
                             help="confier vos étapes à un adjoint jusqu’à une date (« fin » pour arrêter)",
                             example="!circuit délègue @adjoint jusqu’au 2026-12-24",
                             arguments=(Argument("délégation", "@adjoint jusqu’au <date>, ou fin", rest=True),))
async def delegate(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    engine = bot.circuits
    text = arguments["délégation"].strip()
    if fold(text) in ("fin", "stop", "end", "aucun", "none"):
        ended = await engine.store.end_delegation(event.sender)
        await bot.reply(event, t("circuit.delegation_ended" if ended else "circuit.delegation_none"))
        return
    deputy_word, _, rest = text.partition(" ")
    deputy = user_id_of(deputy_word, bot.context.config.collectivite.nom_serveur, "circuit.actor_invalid")
    rest = re.sub(r"^(jusqu[’']?\s*(au|à|a)?|until|to)\s+", "", rest.strip(), flags=re.IGNORECASE)
    if not rest:
        raise CommandError(t("circuit.delegation_until"))
    until = read_deadline(rest, datetime.now(engine.zone))
    if deputy == event.sender:
        raise CommandError(t("circuit.delegation_self"))
    chain, current = [str(event.sender)], deputy
    delegations = await engine.store.delegations(engine.today().isoformat())
    while current in delegations:
        chain.append(current)
        current = delegations[current][0]
        if current == event.sender:
            raise CommandError(t("circuit.delegation_circular", chain=" → ".join([*chain, current])))
    await engine.store.delegate(event.sender, deputy, until.isoformat(), event.event_id)
    await bot.reply(event, t("circuit.delegated", deputy=deputy, until=until.strftime("%d/%m/%Y")))


@circuit_commands.subcommand("modèles", "modeles", "models", help="les modèles de circuit de ce service",
                             example="!circuit modèles")
async def models(bot: DocumentsBot, event: MessageEvent) -> None:
    folder = await bound_folder(bot, event)
    service = folder.split("/")[0]
    found = [m for m in bot.context.config.circuits.modeles if m.service in ("", service)]
    if not found:
        await bot.reply(event, t("circuit.no_models_here"))
        return
    await bot.reply(event, "\n".join([t("circuit.models_title"), *(f"– {m.nom} : {m.etapes}" for m in found)]))
