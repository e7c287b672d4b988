"""@documents files what agents post, as an independent WebDAV client sees it."""

from __future__ import annotations

import asyncio
import io
import os
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from webdav3.client import Client as WebDavClient

from tests.bots.test_runtime import _bot_answer, _room_with_bot, bound_folder_of, documents_id, let_the_bot_bind
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.matrix import Agent, AgentFactory
from tests.harness.office import docx_with_text, odt_with_text, pdf_with_text

NS = "urn:x-maillage:documents"


def dav_client(stack: ServerStack, webdav: str) -> WebDavClient:
    return WebDavClient({"webdav_hostname": webdav, "webdav_login": "maillage",
                         "webdav_password": stack.secrets.dav_password})


async def post_file(agent: Agent, room: str, data: bytes, filename: str, *, encrypt: bool = True,
                    reply_to: str | None = None) -> str:
    response, keys = await agent.client.upload(io.BytesIO(data), content_type="application/pdf",
                                               filename=filename, encrypt=encrypt, filesize=len(data))
    content: dict[str, object] = {"msgtype": "m.file", "body": filename,
                                  "info": {"mimetype": "application/pdf", "size": len(data)}}
    if encrypt:
        content["file"] = {"url": response.content_uri, **keys}
    else:
        content["url"] = response.content_uri
    if reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    sent = await agent.client.room_send(room, "m.room.message", content, ignore_unverified_devices=True)
    return str(sent.event_id)


async def bound_room(agents: AgentFactory, stack: ServerStack, folder: str) -> tuple[Agent, str]:
    owner, room = await _room_with_bot(agents, stack, f"Dossier {folder}")
    await let_the_bot_bind(owner, room, stack)
    assert "Ce salon est lié" in await _bot_answer(owner, room, stack, f"!doc lier {folder}")
    return owner, room


async def filed(agent: Agent, room: str, stack: ServerStack, since: int) -> str:
    message = await agent.wait_for_text(
        room, lambda m: m.sender == documents_id(stack) and "Rangé dans" in m.body, since=since, timeout=60)
    return message.body.split("« ", 1)[1].split(" »", 1)[0]


def today() -> str:
    return datetime.now(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d")


async def test_a_file_posted_in_an_encrypted_room_is_filed_with_its_properties(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await bound_room(agents, synapse, "urbanisme/permis")
    data = b"%PDF-1.7\n" + os.urandom(300_000)
    since = len(owner.received)
    await post_file(owner, room, data, "Permis Construire Dupont.pdf")
    path = await filed(owner, room, synapse, since)
    assert path == f"urbanisme/permis/{today()}_urbanisme_permis-construire-dupont.pdf"

    dav = dav_client(synapse, webdav)
    stored = io.BytesIO()
    dav.download_from(stored, path)
    assert stored.getvalue() == data
    import hashlib

    assert dav.get_property(path, {"namespace": NS, "name": "sha256"}) == hashlib.sha256(data).hexdigest()
    assert dav.get_property(path, {"namespace": NS, "name": "uploader"}) == owner.user_id
    assert not [name for name in dav.list("urbanisme/permis/") if name.endswith(".partiel")]


async def test_nothing_is_overwritten_same_name_and_replies_make_versions(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await bound_room(agents, synapse, "st/voirie")
    since = len(owner.received)
    first = await post_file(owner, room, b"version un", "Plan.pdf", encrypt=False)
    first_path = await filed(owner, room, synapse, since)
    since = len(owner.received)
    await post_file(owner, room, b"version deux", "plan.pdf")
    second_path = await filed(owner, room, synapse, since)
    since = len(owner.received)
    await post_file(owner, room, b"version trois", "autre-nom.pdf", reply_to=first)
    third_path = await filed(owner, room, synapse, since)

    base = f"st/voirie/{today()}_st_plan"
    assert (first_path, second_path, third_path) == (f"{base}.pdf", f"{base}_v2.pdf", f"{base}_v3.pdf")
    dav = dav_client(synapse, webdav)
    for path, content in ((first_path, b"version un"), (second_path, b"version deux"),
                          (third_path, b"version trois")):
        buffer = io.BytesIO()
        dav.download_from(buffer, path)
        assert buffer.getvalue() == content


async def test_files_in_an_unbound_room_are_left_alone(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await _room_with_bot(agents, synapse, "Sans dossier")
    await post_file(owner, room, b"rien", "note.pdf")
    answer = await _bot_answer(owner, room, synapse, "!doc dossier")  # handled after the file, in order
    assert "n’est lié à aucun dossier" in answer
    assert not [m for m in owner.received if m.room_id == room and "Rangé" in m.body]


async def test_another_room_s_folder_set_by_hand_in_room_state_is_not_used(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    """Any client can send room state: binding by hand to another room's folder gives no
    access to its documents; the room is told, stays unbound, and can be unbound."""
    direction, direction_room = await bound_room(agents, synapse, "direction/confidentiel")
    await post_file(direction, direction_room, b"budget 2027", "budget.pdf")
    await filed(direction, direction_room, synapse, 0)
    intruder, room = await _room_with_bot(agents, synapse, "Salon quelconque")
    since = len(intruder.received)
    await intruder.client.room_put_state(room, "fr.maillage.documents", {"dossier": "direction/confidentiel"})
    told = await intruder.wait_for_text(room, lambda m: m.sender == documents_id(synapse)
                                        and "pas pris en compte" in m.body, since=since)
    assert "déjà lié à un autre salon" in told.body
    listing = await _bot_answer(intruder, room, synapse, "!doc liste")
    assert "budget" not in listing and "n’est lié à aucun dossier" in listing
    await post_file(intruder, room, b"intrus", "budget.pdf")
    assert "n’est lié à aucun dossier" in await _bot_answer(intruder, room, synapse, "!doc envoie budget.pdf")
    assert not [m for m in intruder.received if m.room_id == room and "Rangé" in m.body]
    await let_the_bot_bind(intruder, room, synapse)
    assert "n’est plus lié" in await _bot_answer(intruder, room, synapse, "!doc délier")
    listing = await _bot_answer(direction, direction_room, synapse, "!doc liste")
    assert "budget" in listing and "_v2" not in listing


@pytest.mark.parametrize("original", ["rapport\x1b[31m.pdf", "NUL.pdf", "a" * 300 + ".pdf"])
async def test_odd_names_are_filed_and_the_agent_told(
    original: str, synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await bound_room(agents, synapse, f"dg/noms-{len(original)}")
    since = len(owner.received)
    await post_file(owner, room, b"contenu", original)
    message = await owner.wait_for_text(
        room, lambda m: m.sender == documents_id(synapse) and "Rangé dans" in m.body, since=since, timeout=60)
    path = message.body.split("« ", 1)[1].split(" »", 1)[0]
    assert path.startswith(f"dg/noms-{len(original)}/") and "\x1b" not in path
    if original.startswith("NUL"):
        assert "réservé" in message.body
    if len(original) > 200:
        assert "raccourci" in message.body


async def test_list_info_versions_rename_trash_and_restore(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await bound_room(agents, synapse, "dg/conseil")
    since = len(owner.received)
    first = await post_file(owner, room, b"ordre du jour", "Ordre du jour.pdf")
    name = (await filed(owner, room, synapse, since)).rsplit("/", 1)[1]
    since = len(owner.received)
    await post_file(owner, room, b"ordre du jour v2", "autre.pdf", reply_to=first)
    await filed(owner, room, synapse, since)

    listing = await _bot_answer(owner, room, synapse, "!doc liste")
    assert name in listing and name.replace(".pdf", "_v2.pdf") in listing
    info = await _bot_answer(owner, room, synapse, f"!doc infos {name}")
    assert "versions : 2" in info and owner.user_id in info and "Ordre du jour.pdf" in info
    versions = await _bot_answer(owner, room, synapse, f"!doc versions {name}")
    assert "v1 :" in versions and "v2 :" in versions
    found = await _bot_answer(owner, room, synapse, "!doc cherche ordre jour")
    assert "2 document(s) trouvé(s)" in found

    renamed = await _bot_answer(owner, room, synapse, f"!doc renomme {name} Ordre du jour définitif")
    assert "ordre-du-jour-definitif.pdf" in renamed
    trashed = await _bot_answer(owner, room, synapse, "!doc supprime ordre-du-jour-definitif.pdf")
    assert "corbeille" in trashed
    assert "ordre-du-jour-definitif.pdf" not in await _bot_answer(owner, room, synapse, "!doc liste")
    assert dav_client(synapse, webdav).check("dg/conseil/.corbeille/ordre-du-jour-definitif.pdf")
    restored = await _bot_answer(owner, room, synapse, "!doc restaure ordre-du-jour-definitif.pdf")
    assert "restauré" in restored
    assert "ordre-du-jour-definitif.pdf" in await _bot_answer(owner, room, synapse, "!doc liste")


@pytest.mark.parametrize("name", ["../urbanisme/permis", "/etc/passwd", "..%2F..%2Fx", "a\\..\\b", "x/../../y"])
async def test_commands_reach_only_the_room_folder(
    name: str, synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await bound_room(agents, synapse, f"isole/{abs(hash(name)) % 10_000}")
    for command in ("infos", "supprime", "versions", "liste"):
        answer = await _bot_answer(owner, room, synapse, f"!doc {command} {name}")
        assert "Nom refusé" in answer, (command, answer)


async def test_a_room_cannot_bind_another_room_s_folder(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    await bound_room(agents, synapse, "finances/paie")
    intruder, room = await _room_with_bot(agents, synapse, "Curieux")
    await let_the_bot_bind(intruder, room, synapse)
    for folder in ("finances/paie", "finances", "finances/paie/bulletins"):
        answer = await _bot_answer(intruder, room, synapse, f"!doc lier {folder}")
        assert "déjà lié à un autre salon" in answer, answer
    assert await bound_folder_of(intruder, room) is None
    assert "Ce salon est lié" in await _bot_answer(intruder, room, synapse, "!doc lier finances/budget")


async def test_a_document_is_posted_back_encrypted_in_an_encrypted_room(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await bound_room(agents, synapse, "urbanisme/retour")
    data = os.urandom(700_000)
    since = len(owner.received)
    await post_file(owner, room, data, "Plan cadastral.pdf")
    name = (await filed(owner, room, synapse, since)).rsplit("/", 1)[1]
    await owner.send_text(room, f"!doc envoie {name}")
    sent = await owner.wait_for_file(room, documents_id(synapse))
    from nio import RoomEncryptedFile

    assert isinstance(sent, RoomEncryptedFile)
    assert await owner.download_file(sent) == data


async def test_a_webdav_outage_is_told_and_the_document_filed_when_it_is_back(
    synapse: ServerStack, webdav_process: ServiceProcess, webdav: str, bot_process: ServiceProcess, bots: str,
    agents: AgentFactory
) -> None:
    """Longer than any retry inside one attempt, and with a crash of the bots meanwhile: the document
    is kept (not dropped), later commands are not held up, and it is filed once WebDAV is back."""
    owner, room = await bound_room(agents, synapse, "panne/webdav")
    webdav_process.stop()
    try:
        since = len(owner.received)
        await post_file(owner, room, b"pendant la panne", "Arrete municipal.pdf")
        told = await owner.wait_for_text(
            room, lambda m: m.sender == documents_id(synapse) and "ne répond pas" in m.body, since=since)
        assert "sera rangé dès son retour" in told.body
        assert "panne/webdav" in await _bot_answer(owner, room, synapse, "!doc dossier")
        bot_process.kill()
        bot_process.start()
        await asyncio.sleep(50)
    finally:
        webdav_process.start()
    message = await owner.wait_for_text(
        room, lambda m: m.sender == documents_id(synapse) and "Rangé dans" in m.body, since=since, timeout=150)
    path = message.body.split("« ", 1)[1].split(" »", 1)[0]
    stored = io.BytesIO()
    dav_client(synapse, webdav).download_from(stored, path)
    assert stored.getvalue() == b"pendant la panne"
    assert len([m for m in owner.received[since:] if "ne répond pas" in m.body]) == 1  # told once


async def test_a_command_in_a_thread_is_answered_in_that_thread(
    synapse: ServerStack, bots: str, agents: AgentFactory
) -> None:
    owner, room = await _room_with_bot(agents, synapse, "Fils")
    root = await owner.send_text(room, "Dossier Dupont : suivi")
    response = await owner.client.room_send(room, "m.room.message", {
        "msgtype": "m.text", "body": "!doc dossier",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": True,
                         "m.in_reply_to": {"event_id": root}}}, ignore_unverified_devices=True)
    command = str(response.event_id)
    answer = await owner.wait_for_text(room, lambda m: m.sender == documents_id(synapse))
    event = await owner.client.room_get_event(room, answer.event_id)
    relates = event.event.source["content"].get("m.relates_to", {})
    assert relates.get("rel_type") == "m.thread" and relates.get("event_id") == root
    assert relates["m.in_reply_to"]["event_id"] == command


async def _search_until(agent: Agent, room: str, stack: ServerStack, words: str, expected: str) -> str:
    """Documents are read for search just after they are filed: ask again for a short while."""
    deadline = time.monotonic() + 30
    while True:
        answer = await _bot_answer(agent, room, stack, f"!doc cherche {words}")
        if expected in answer or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.5)


async def test_words_inside_pdf_odt_and_docx_are_found_in_the_room_s_own_folder_only(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await bound_room(agents, synapse, "voirie/arretes")
    pdf = pdf_with_text("Arrêté de circulation n° 114", "Travaux rue des Tanneurs, côté pair")
    documents = [(pdf, "Arrêté 114.pdf"),
                 (docx_with_text("Devis de l’entreprise Bâtiroute", "Enrobés"), "Devis.docx"),
                 (odt_with_text("Compte rendu", "Réunion de chantier du lundi"), "CR chantier.odt"),
                 (b"%PDF-1.7\n\x00 damaged", "Abîmé.pdf")]
    names = []
    for data, filename in documents:
        since = len(owner.received)
        await post_file(owner, room, data, filename)
        names.append((await filed(owner, room, synapse, since)).rsplit("/", 1)[1])

    found = await _search_until(owner, room, synapse, "tanneurs pair", names[0])
    assert "1 document(s) trouvé(s)" in found
    assert "dans le texte : « Arrêté de circulation n° 114 Travaux rue des Tanneurs, côté pair »" in found
    assert names[1] in await _search_until(owner, room, synapse, "BATIROUTE", names[1])  # case, accents
    assert names[2] in await _search_until(owner, room, synapse, "réunion chantier lundi", names[2])
    assert names[3] in await _bot_answer(owner, room, synapse, "!doc cherche abime")  # by name, unreadable

    neighbour, elsewhere = await bound_room(agents, synapse, "voirie/autre-service")
    assert "Aucun document" in await _bot_answer(neighbour, elsewhere, synapse, "!doc cherche tanneurs")

    renamed = await _bot_answer(owner, room, synapse, f"!doc renomme {names[0]} arrete circulation")
    assert "arrete-circulation.pdf" in renamed
    assert "arrete-circulation.pdf" in await _bot_answer(owner, room, synapse, "!doc cherche tanneurs")
    await _bot_answer(owner, room, synapse, "!doc supprime arrete-circulation.pdf")
    assert "Aucun document" in await _bot_answer(owner, room, synapse, "!doc cherche tanneurs")


async def test_a_symbolic_link_does_not_lead_a_room_into_another_room_s_folder(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    """WsgiDAV refuses a link itself but follows one met on the way when it stays inside its
    root: a link put (by hand, on the server) in room A's folder towards room B's must not
    lead A's commands into B's documents."""
    neighbour, other = await bound_room(agents, synapse, "liens/rh")
    since = len(neighbour.received)
    await post_file(neighbour, other, b"%PDF-1.7 salaires", "Salaires.pdf")
    secret = (await filed(neighbour, other, synapse, since)).rsplit("/", 1)[1]
    owner, room = await bound_room(agents, synapse, "liens/accueil")
    root = synapse.config.data_dir / "webdav" / "fichiers"
    (root / "liens" / "accueil" / "vers-rh").symlink_to(root / "liens" / "rh", target_is_directory=True)
    (root / "liens" / "par-lien").symlink_to(root / "liens" / "rh", target_is_directory=True)

    for command in (f"infos vers-rh/{secret}", f"envoie vers-rh/{secret}", f"versions vers-rh/{secret}",
                    f"supprime vers-rh/{secret}"):
        assert "Aucun document" in await _bot_answer(owner, room, synapse, f"!doc {command}"), command
    assert "est vide" in await _bot_answer(owner, room, synapse, "!doc liste vers-rh")
    assert "vers-rh" not in await _bot_answer(owner, room, synapse, "!doc liste")
    assert "Aucun document" in await _bot_answer(owner, room, synapse, "!doc cherche salaires")
    assert (root / "liens" / "rh" / secret).exists()  # nothing moved to a trash

    third, room_c = await _room_with_bot(agents, synapse, "Par un lien")
    await let_the_bot_bind(third, room_c, synapse)
    refused = await _bot_answer(third, room_c, synapse, "!doc lier liens/par-lien")
    assert "refuse le dossier « liens/par-lien »" in refused
    assert await bound_folder_of(third, room_c) is None


async def test_an_attachment_whose_hash_does_not_match_is_refused_and_nothing_kept(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    """The event's hash of the encrypted file is what proves the homeserver served it intact."""
    owner, room = await bound_room(agents, synapse, "controle/empreinte")
    data = os.urandom(200_000)
    response, keys = await owner.client.upload(io.BytesIO(data), content_type="application/pdf",
                                               filename="Altere.pdf", encrypt=True, filesize=len(data))
    keys["hashes"] = {"sha256": "A" * 43}  # not the hash of what the homeserver holds
    since = len(owner.received)
    await owner.client.room_send(room, "m.room.message", {
        "msgtype": "m.file", "body": "Altéré.pdf", "file": {"url": response.content_uri, **keys},
        "info": {"mimetype": "application/pdf", "size": len(data)}}, ignore_unverified_devices=True)
    told = await owner.wait_for_text(room, lambda m: m.sender == documents_id(synapse), since=since)
    assert "corrompu" in told.body
    folder = synapse.config.data_dir / "webdav" / "fichiers" / "controle" / "empreinte"
    assert [p.name for p in folder.iterdir()] == []  # neither the file nor a temporary part of it
