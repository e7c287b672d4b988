"""Validation circuits (issue 11) end to end: agents act from their own clients; what is
checked is what they and an independent WebDAV client, PDF reader and PAdES validator see."""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
import random
import stat
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from pypdf import PdfReader

from tests.bots.test_documents import dav_client, filed, post_file
from tests.bots.test_runtime import documents_id, let_the_bot_bind
from tests.conftest import BotProcess, ServerStack
from tests.harness.matrix import Agent, AgentFactory, Received, create_encrypted_room
from tests.harness.office import pdf_with_text

PARIS = ZoneInfo("Europe/Paris")


def paris_today() -> date:
    """The day in the collectivité's time zone, as the bot counts it (a CI run crossing midnight
    in Paris, 23:00 UTC, would otherwise expect yesterday's archive names)."""
    return datetime.now(PARIS).date()

pytestmark = pytest.mark.usefixtures("in_french")


async def answer(agent: Agent, room: str, stack: ServerStack, command: str, *, pills: dict[str, str] | None = None
                 ) -> str:
    """The bot's answer to ``command`` (its reply to it, not what it says meanwhile). With
    ``pills`` (user id → display name), mentions are sent as Element does: the display name in
    the plain body, a matrix.to link in the HTML body."""
    since = len(agent.received)
    if pills:
        body, formatted = command, html.escape(command)
        for user_id, name in pills.items():
            body = body.replace(user_id, name)
            formatted = formatted.replace(user_id, f'<a href="https://matrix.to/#/{user_id}">{html.escape(name)}</a>')
        response = await agent.client.room_send(room, "m.room.message", {
            "msgtype": "m.text", "body": body, "format": "org.matrix.custom.html", "formatted_body": formatted},
            ignore_unverified_devices=True)
        sent = str(response.event_id)
    else:
        sent = await agent.send_text(room, command)
    message = await agent.wait_for_text(room, lambda m: m.sender == documents_id(stack) and m.reply_to == sent,
                                        since=since, timeout=60)
    return message.body


async def notice_for(agent: Agent, room: str, stack: ServerStack, number: int, step: int, since: int) -> Received:
    """The message asking for step ``step`` (1-based) of circuit ``number``."""
    return await agent.wait_for_text(
        room, lambda m: m.sender == documents_id(stack) and m.body.startswith(f"📝 Circuit n°{number} ")
        and f"étape {step}/" in m.body, since=since, timeout=60)


async def react(agent: Agent, room: str, event_id: str, key: str) -> str:
    sent = await agent.client.room_send(room, "m.reaction", {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": event_id, "key": key}}, ignore_unverified_devices=True)
    return str(sent.event_id)


async def circuit_room(agents: AgentFactory, stack: ServerStack, folder: str, *names: str) -> tuple[
        Agent, str, dict[str, Agent]]:
    """An encrypted room bound to ``folder``, with its author and the agents ``names``."""
    owner = await agents("auteur")
    members = {name: await agents(name) for name in names}
    room = await create_encrypted_room(owner, *members.values(), name=f"Circuits {folder}")
    await owner.client.room_invite(room, documents_id(stack))
    await owner.wait_for_members_including(room, documents_id(stack))
    await let_the_bot_bind(owner, room, stack)
    assert "Ce salon est lié" in await answer(owner, room, stack, f"!doc lier {folder}")
    return owner, room, members


async def filed_pdf(owner: Agent, room: str, stack: ServerStack, *lines: str, name: str = "arrete.pdf",
                    reply_to: str | None = None) -> tuple[str, bytes, str]:
    """The path where the PDF of ``lines`` was filed, its bytes, and the event that posted it."""
    data = pdf_with_text(*lines)
    since = len(owner.received)
    event_id = await post_file(owner, room, data, name, reply_to=reply_to)
    return await filed(owner, room, stack, since), data, event_id


def download(stack: ServerStack, webdav: str, path: str) -> bytes:
    buffer = io.BytesIO()
    dav_client(stack, webdav).download_from(buffer, path)
    return buffer.getvalue()


async def seal_status(document: bytes, certificate: bytes) -> Any:
    """What an independent PAdES validator (pyHanko's) says of the document's only signature,
    trusting the collectivité's certificate."""
    _, _, der = pem.unarmor(certificate)
    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(der)])
    signatures = PdfFileReader(io.BytesIO(document), strict=False).embedded_signatures
    assert len(signatures) == 1
    return await async_validate_pdf_signature(signatures[0], context)


def number_of(started: str) -> int:
    assert started.startswith("Circuit n°"), started
    return int(started.removeprefix("Circuit n°").split(" ", 1)[0])


async def test_a_circuit_of_visa_opinion_and_signature_ends_archived_with_its_receipt_and_a_valid_seal(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "urbanisme/arretes", "chef", "juriste", "finances",
                                             "maire")
    chef, juriste, finances, maire = people.values()
    path, data, _ = await filed_pdf(owner, room, synapse, "Arrêté n°2026-12 portant réglementation de la circulation")
    name = path.rpartition("/")[2]
    deadline = (paris_today() + timedelta(days=10)).isoformat()
    since = len(chef.received)
    started = await answer(owner, room, synapse, f"!circuit lance {name} visa: {chef.user_id}, avis: "
                           f"{juriste.user_id} {finances.user_id} (un), signature: {maire.user_id} "
                           f"échéance: {deadline}")
    number = number_of(started)
    assert "3 étape(s)" in started
    first = await notice_for(chef, room, synapse, number, 1, since)
    assert chef.user_id in first.body and "visa" in first.body

    # Only the current step's actor acts: the mayor is told it is not her turn yet.
    assert "pas encore votre tour" in await answer(maire, room, synapse, f"!circuit signe {number}")
    assert "est un visa" in await answer(chef, room, synapse, f"!circuit signe {number}")
    since, answered = len(juriste.received), len(chef.received)
    reaction = await react(chef, room, first.event_id, "✅")
    second = await notice_for(juriste, room, synapse, number, 2, since)
    # The chief's answer is the next step's notice itself, in reply to his reaction's message.
    told = await chef.wait_for_text(room, lambda m: m.reply_to == first.event_id, since=answered)
    assert told.body.startswith(f"📝 Circuit n°{number} ") and f"✔ Visa enregistré ({chef.user_id})" in told.body
    assert juriste.user_id in second.body and finances.user_id in second.body and "un seul" in second.body
    # Acting twice: the chief's step is behind him.
    assert "n’êtes pas appelé" in await answer(chef, room, synapse, f"!circuit vise {number}")

    since = len(maire.received)
    assert "Visa enregistré" in await answer(finances, room, synapse, f"!circuit vise {number} favorable")
    third = await notice_for(maire, room, synapse, number, 3, since)
    assert maire.user_id in third.body and "signature" in third.body
    # Any one of the opinions was enough: the lawyer's step is over.
    assert "n’êtes pas appelé" in await answer(juriste, room, synapse, f"!circuit vise {number}")

    since = len(owner.received)
    assert "est validé" in await answer(maire, room, synapse, f"!circuit signe {number} Lu et approuvé")
    told = await owner.wait_for_text(room, lambda m: m.body.startswith(f"✅ Circuit n°{number} "), since=since)
    archive = told.body.split("Archivé : ", 1)[1].splitlines()[0]
    receipt = told.body.split("Bordereau : ", 1)[1].splitlines()[0]
    year = paris_today().year
    assert archive == f"Archives/{year}/urbanisme/{name}" and receipt.endswith("_bordereau.pdf")
    assert "cachet électronique" in told.body

    # The archived PDF is the validated text, sealed: an independent validator trusts the seal...
    sealed = download(synapse, webdav, archive)
    assert sealed.startswith(data)  # an incremental update: the signed bytes are the validated ones
    certificate = (synapse.config.data_dir / "secrets" / "cachet.pem").read_bytes()
    status = await seal_status(sealed, certificate)
    assert status.bottom_line and status.intact and status.valid and status.trusted
    assert status.coverage.name == "ENTIRE_FILE"
    key = synapse.config.data_dir / "secrets" / "cachet.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # ...and any change to the file breaks it.
    at = sealed.index(b"circulation")
    tampered = sealed[:at] + b"C" + sealed[at + 1:]
    assert not (await seal_status(tampered, certificate)).intact

    # The receipt lists every step, actor, decision, comment and the validated version's hash.
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(download(synapse, webdav, receipt))).pages)
    flat = " ".join(text.split())
    for expected in (chef.user_id, finances.user_id, maire.user_id, owner.user_id, "visa", "signature",
                     "Lu et approuvé", hashlib.sha256(data).hexdigest(), reaction):
        assert expected in flat, expected
    assert juriste.user_id not in flat.split("Étapes", 1)[1]  # the lawyer did not act

    state = await answer(owner, room, synapse, f"!circuit état {number}")
    assert "validé et archivé" in state and "signature" in state
    # The room's members receive both files.
    files = [event for room_id, event in owner.files if room_id == room and event.sender == documents_id(synapse)]
    assert {event.body for event in files} >= {name, receipt.rpartition("/")[2]}


async def test_a_refused_circuit_goes_back_and_resumes_on_the_new_version(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "finances/commandes", "chef", "dgs")
    chef, dgs = people.values()
    path, data, posted = await filed_pdf(owner, room, synapse, "Bon de commande 42", name="commande.pdf")
    name = path.rpartition("/")[2]
    since = len(chef.received)
    number = number_of(await answer(owner, room, synapse,
                                    f"!circuit lance {name} visa: {chef.user_id}, signature: {dgs.user_id}"))
    notice = await notice_for(chef, room, synapse, number, 1, since)
    assert "se motive" in await answer(chef, room, synapse, f"!circuit refuse {number}")
    since = len(chef.received)
    await react(chef, room, notice.event_id, "❌")
    assert "se motive" in (await chef.wait_for_text(
        room, lambda m: m.sender == documents_id(synapse) and "se motive" in m.body, since=since)).body
    since = len(owner.received)
    assert "revient à son auteur" in await answer(chef, room, synapse, f"!circuit refuse {number} montant faux")
    refused = await owner.wait_for_text(room, lambda m: m.body.startswith(f"❌ Circuit n°{number}"), since=since)
    assert "montant faux" in refused.body and owner.user_id in refused.body
    assert "a été refusé" in await answer(dgs, room, synapse, f"!circuit signe {number}")
    assert "Seul l’auteur" in await answer(chef, room, synapse, f"!circuit reprend {number}")

    # A new version, as a reply to the document, then the circuit resumes on it from the start.
    second_path, second, _ = await filed_pdf(owner, room, synapse, "Bon de commande 42, montant corrigé",
                                             name="commande.pdf", reply_to=posted)
    assert second_path.endswith("_v2.pdf")
    since = len(chef.received)
    assert "repris sur" in await answer(owner, room, synapse, f"!circuit reprend {number}")
    await notice_for(chef, room, synapse, number, 1, since)
    assert "Visa enregistré" in await answer(chef, room, synapse, f"!circuit vise {number}")

    # The document changed behind the circuit's back: it stops and says so.
    since = len(owner.received)
    dav_client(synapse, webdav).upload_to(io.BytesIO(b"%PDF-1.4 autre chose"), second_path)
    stopped = await answer(dgs, room, synapse, f"!circuit signe {number}")
    assert "arrêté" in stopped
    told = await owner.wait_for_text(room, lambda m: "a changé ou a disparu" in m.body, since=since)
    assert f"circuit n°{number}" in told.body
    state = await answer(owner, room, synapse, f"!circuit état {number}")
    assert "refus" in state and "montant faux" in state and "reprise" in state and "document modifié" in state

    assert "Seul l’auteur" in await answer(dgs, room, synapse, f"!circuit annule {number}")
    assert "annulé" in await answer(owner, room, synapse, f"!circuit annule {number} dossier retiré")
    assert "a été annulé" in await answer(chef, room, synapse, f"!circuit vise {number}")
    assert data != second


async def test_wrong_requests_are_refused_with_what_to_do_and_start_nothing(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "juridique/actes", "chef")
    chef = people["chef"]
    outsider = await agents("dehors")
    path, _, _ = await filed_pdf(owner, room, synapse, "Délibération")
    name = path.rpartition("/")[2]
    tomorrow = (paris_today() + timedelta(days=1)).isoformat()
    wrong = {
        f"!circuit lance absent.pdf visa: {chef.user_id}": "Aucun document",
        f"!circuit lance {name} visa: {outsider.user_id}": "ne sont pas membres",
        f"!circuit lance {name} visa: chef": "n’est pas un agent",
        f"!circuit lance {name} visa: @": "n’est pas un agent",
        f"!circuit lance {name} modèle: inexistant": "Aucun modèle de circuit « inexistant »",
        f"!circuit lance {name} visa: {chef.user_id} échéance: 2020-01-01": "déjà passée",
        f"!circuit lance {name} visa: {chef.user_id} échéance: bientôt": "Échéance non comprise",
        f"!circuit lance {name} visa: {chef.user_id} échéance: 2026-02-30": "Échéance non comprise",
        f"!circuit lance {name} visa:": "n’a personne",
        f"!circuit lance {name}": "Étapes non comprises",
        f"!circuit lance {name} visa: {chef.user_id} modèle: arrêté": "pas les deux",
        f"!circuit lance {name} visa: {chef.user_id} échéance: {tomorrow} échéance: {tomorrow}": "deux fois",
        "!circuit vise 999999": "Aucun circuit n°999999",
        "!circuit vise trois": "n’est pas un numéro",
        "!circuit délègue @moi": "Jusqu’à quand",
        f"!circuit délègue {owner.user_id} jusqu’au {tomorrow}": "à vous-même",
    }
    for command, says in wrong.items():
        assert says in await answer(owner, room, synapse, command), command
    assert "Aucun circuit en cours" in await answer(owner, room, synapse, "!circuit liste")


async def test_a_deputy_acts_for_the_mayor_and_the_receipt_says_so(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "dg/arretes", "maire", "adjoint")
    maire, adjoint = people.values()
    until = (paris_today() + timedelta(days=20)).isoformat()
    assert "iront à" in await answer(maire, room, synapse, f"!circuit délègue {adjoint.user_id} jusqu’au {until}")
    circular = await answer(adjoint, room, synapse, f"!circuit délègue {maire.user_id} jusqu’au {until}")
    assert "reviendrait à vous" in circular
    path, _, _ = await filed_pdf(owner, room, synapse, "Arrêté de voirie")
    since = len(adjoint.received)
    # The mayor named with a pill, as Element writes a mention picked from its list.
    number = number_of(await answer(owner, room, synapse,
                                    f"!circuit lance {path.rpartition('/')[2]} signature: {maire.user_id}",
                                    pills={maire.user_id: "Madame la Maire"}))
    notice = await notice_for(adjoint, room, synapse, number, 1, since)
    assert f"{adjoint.user_id} pour {maire.user_id} (délégation)" in notice.body
    todo = await answer(adjoint, room, synapse, "!circuit àfaire")
    assert f"n°{number}" in todo
    assert "Rien n’attend" in await answer(owner, room, synapse, "!circuit àfaire")
    since = len(owner.received)
    assert "est validé" in await answer(adjoint, room, synapse, f"!circuit signe {number}")
    told = await owner.wait_for_text(room, lambda m: m.body.startswith(f"✅ Circuit n°{number} "), since=since)
    receipt = told.body.split("Bordereau : ", 1)[1].splitlines()[0]
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(download(synapse, webdav, receipt))).pages)
    assert f"{adjoint.user_id} pour {maire.user_id} (délégation)" in " ".join(text.split())
    assert "terminée" in await answer(maire, room, synapse, "!circuit délègue fin")


async def test_two_actors_of_one_step_acting_at_the_same_instant_complete_it_once(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "st/marches", "un", "deux", "trois", "quatre")
    one, two, three, four = people.values()
    path, _, _ = await filed_pdf(owner, room, synapse, "Marché de voirie")
    number = number_of(await answer(owner, room, synapse, f"!circuit lance {path.rpartition('/')[2]} avis: "
                                    f"{one.user_id} {two.user_id} {three.user_id}, visa: {four.user_id}"))
    assert "Visa enregistré" in await answer(one, room, synapse, f"!circuit vise {number}")
    assert "déjà agi" in await answer(one, room, synapse, f"!circuit vise {number}")
    since = len(four.received)
    await asyncio.gather(two.send_text(room, f"!circuit vise {number}"),
                         three.send_text(room, f"!circuit vise {number}"))
    await notice_for(four, room, synapse, number, 2, since)
    await asyncio.sleep(3)
    notices = [m for m in four.received[since:] if m.room_id == room and m.body.startswith(f"📝 Circuit n°{number} ")]
    assert len(notices) == 1
    state = await answer(owner, room, synapse, f"!circuit état {number}")
    assert state.count("— visa —") == 3 and "▶ 2." in state


async def test_a_circuit_is_seen_and_acted_on_by_its_room_s_members_only(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "dg/confidentiel", "chef")
    path, _, _ = await filed_pdf(owner, room, synapse, "Note confidentielle")
    since = len(owner.received)
    number = number_of(await answer(owner, room, synapse,
                                    f"!circuit lance {path.rpartition('/')[2]} visa: {people['chef'].user_id}"))
    assert "étape 1/1" in await answer(owner, room, synapse, f"!circuit état {number}")
    # A member who is not the step's actor reacts ✅: told so, nothing recorded.
    notice = await notice_for(owner, room, synapse, number, 1, since)
    since = len(owner.received)
    await react(owner, room, notice.event_id, "✅")
    refused = await owner.wait_for_text(room, lambda m: m.reply_to == notice.event_id, since=since)
    assert "n’êtes pas appelé" in refused.body
    assert f"— visa — {owner.user_id}" not in await answer(owner, room, synapse, f"!circuit état {number}")
    # Someone outside the room, asking from a room of theirs with the bot: as if it did not exist.
    _, elsewhere, strangers = await circuit_room(agents, synapse, "st/autre", "curieux")
    curious = strangers["curieux"]
    for command in (f"!circuit état {number}", f"!circuit vise {number}", f"!circuit annule {number}"):
        assert f"Aucun circuit n°{number} dans vos salons" in await answer(curious, elsewhere, synapse, command)
    assert "Rien n’attend" in await answer(curious, elsewhere, synapse, "!circuit àfaire")
    assert "Aucun circuit en cours" in await answer(curious, elsewhere, synapse, "!circuit liste")
    assert f"n°{number}" in await answer(people["chef"], room, synapse, "!circuit àfaire")


async def test_actors_get_a_direct_message_with_the_document_and_reminders_once_and_act_from_it(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "urbanisme/courriers", "chef")
    chef = people["chef"]
    path, data, _ = await filed_pdf(owner, room, synapse, "Courrier au préfet")
    name = path.rpartition("/")[2]
    today = paris_today().isoformat()
    number = number_of(await answer(owner, room, synapse, f"!circuit lance {name} visa: {chef.user_id} "
                                                          f"échéance: {today}"))
    direct = await chef.join_invitation()
    notice = await chef.wait_for_text(direct, lambda m: m.body.startswith(f"📝 Circuit n°{number} "), timeout=60)
    assert "Le document est joint" in notice.body and "Circuits urbanisme/courriers" in notice.body
    attached = await chef.wait_for_file(direct, documents_id(synapse))
    assert await chef.download_file(attached) == data
    reminder = await chef.wait_for_text(direct, lambda m: m.body.startswith("⏰ C’est aujourd’hui"), timeout=60)
    assert f"circuit n°{number}" in reminder.body
    await asyncio.sleep(12)  # two more rounds: neither is sent again
    assert sum(1 for m in chef.received if m.room_id == direct and m.body.startswith("⏰")) == 1
    assert sum(1 for m in chef.received if m.room_id == direct and m.body.startswith("📝")) == 1

    # ✅ on the direct message acts as in the room; the last step being a visa, nothing is sealed.
    since = len(owner.received)
    await react(chef, direct, reminder.event_id, "✅")
    told = await owner.wait_for_text(room, lambda m: m.body.startswith(f"✅ Circuit n°{number} "), since=since)
    assert "cachet" not in told.body
    archived = download(synapse, webdav, told.body.split("Archivé : ", 1)[1].splitlines()[0])
    assert archived == data  # not a signature: archived as it was validated


async def test_a_late_circuit_is_listed_and_said_late(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "st/travaux", "chef")
    chef = people["chef"]
    path, _, _ = await filed_pdf(owner, room, synapse, "Ordre de service")
    tomorrow = (paris_today() + timedelta(days=1)).isoformat()
    number = number_of(await answer(owner, room, synapse, f"!circuit lance {path.rpartition('/')[2]} visa: "
                                                          f"{chef.user_id} échéance: {tomorrow}"))
    direct = await chef.join_invitation()
    before = await chef.wait_for_text(direct, lambda m: m.body.startswith("⏰ Rappel"), timeout=60)
    assert f"circuit n°{number}" in before.body
    assert "Aucun circuit en retard" in await answer(owner, room, synapse, "!circuit en-retard")
    # Ten days pass (the deadline moved back in the bots' database, as time would).
    yesterday = (paris_today() - timedelta(days=1)).isoformat()
    database = synapse.config.data_dir / "bots" / "bots.db"
    await asyncio.to_thread(_set_deadline, database, number, yesterday)
    late = await answer(owner, room, synapse, "!circuit en-retard")
    assert f"n°{number}" in late and "en retard" in late
    assert "en retard" in await answer(chef, room, synapse, "!circuit àfaire")


def _validated(number: int) -> Callable[[Received], bool]:
    return lambda message: message.body.startswith(f"✅ Circuit n°{number} ")


def _set_deadline(database: Any, number: int, day: str) -> None:
    import sqlite3

    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE circuit SET deadline=? WHERE id=?", (day, number))


async def test_circuit_steps_and_archives_happen_once_when_the_bots_are_killed(
    synapse: ServerStack, webdav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "conseil/deliberations", "chef", "maire")
    chef, maire = people.values()
    count, chance = 6, random.Random()
    numbers = []
    for index in range(count):
        path, _, _ = await filed_pdf(owner, room, synapse, f"Délibération {index}", name=f"deliberation-{index}.pdf")
        command = f"!circuit lance {path.rpartition('/')[2]} visa: {chef.user_id}, signature: {maire.user_id}"
        numbers.append(number_of(await answer(owner, room, synapse, command)))
    since = len(maire.received)
    for number in numbers:
        await chef.send_text(room, f"!circuit vise {number}")
    await bot_process.kill_and_restart(after=chance.uniform(0.0, 1.5))  # kill -9 while visas are in flight
    for number in numbers:
        await notice_for(maire, room, synapse, number, 2, since)
    since = len(owner.received)
    for number in numbers:
        await maire.send_text(room, f"!circuit signe {number}")
    await bot_process.kill_and_restart(after=chance.uniform(0.5, 3.0))  # ...and while archiving
    for number in numbers:
        await owner.wait_for_text(room, _validated(number), since=since, timeout=180)
    await asyncio.sleep(8)  # anything done twice would have shown by now
    bodies = [m.body for m in owner.received if m.room_id == room and m.sender == documents_id(synapse)]
    for number in numbers:
        assert sum(1 for b in bodies if b.startswith(f"✅ Circuit n°{number} ")) == 1
        assert sum(1 for b in bodies if b.startswith(f"📝 Circuit n°{number} ")) == 2  # one notice per step
        state = await answer(owner, room, synapse, f"!circuit état {number}")
        assert state.count("— visa —") == 1 and state.count("— signature —") == 1, state
    archived = [name for name in dav_client(synapse, webdav).list(f"Archives/{paris_today().year}/conseil/")
                if name.endswith(".pdf")]
    day = f"{paris_today():%Y-%m-%d}"
    assert sorted(archived) == sorted([f"{day}_conseil_deliberation-{i}.pdf" for i in range(count)]
                                      + [f"{day}_conseil_deliberation-{i}_bordereau.pdf" for i in range(count)])
