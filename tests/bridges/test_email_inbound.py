"""Email into rooms: a real SMTP conversation (Python's smtplib as the outside mail server)
with the bridge, into the real Synapse, read by agents' clients — threads, attachments
(encrypted in an encrypted room), sanitised HTML, and what SMTP refuses at once."""

from __future__ import annotations

import asyncio
import email.policy
import smtplib
import uuid
from email.message import EmailMessage
from email.utils import make_msgid

import httpx
import pytest

from tests.conftest import ServerStack, ServiceProcess
from tests.harness.matrix import Agent, AgentFactory, bot_reply, create_encrypted_room

pytestmark = pytest.mark.usefixtures("in_french")
COURRIEL = "@courriel:localhost"
DOMAIN = "mairie.example"
JEAN = "@_mail_jean.dupont=40exemple.fr:localhost"


async def room_with_mailbox(agents: AgentFactory, synapse: ServerStack, name: str, address: str, *,
                            owner: Agent | None = None) -> tuple[Agent, str]:
    owner = owner or await agents("accueil")
    room = await create_encrypted_room(owner, name=name)
    levels = await owner.client.room_get_state_event(room, "m.room.power_levels")
    users = {**levels.content["users"], COURRIEL: 50}
    await owner.client.room_put_state(room, "m.room.power_levels", {**levels.content, "users": users})
    await owner.client.room_invite(room, COURRIEL)
    await owner.wait_for_members_including(room, COURRIEL)
    answer = await bot_reply(owner, room, COURRIEL, f"!mail adresse {address}")
    assert answer == (f"Les courriels envoyés à {address}@{DOMAIN} arrivent désormais dans ce salon ; "
                      "chaque conversation y a son fil."), answer
    return owner, room


def smtp_send(synapse: ServerStack, message: EmailMessage, sender: str, recipients: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", synapse.config.courriel.port_smtp, timeout=60) as outside:
        outside.sendmail(sender, recipients, message.as_bytes(policy=email.policy.SMTP))  # CRLF, as MTAs send


def mail(subject: str, text: str, *, sender: str = "Jean Dupont <jean.dupont@exemple.fr>", to: str,
         in_reply_to: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Message-ID"] = make_msgid(domain="exemple.fr")
    if in_reply_to:
        message["In-Reply-To"], message["References"] = in_reply_to, in_reply_to
    message.set_content(text)
    return message


async def test_a_citizen_s_emails_arrive_in_the_room_as_one_thread_with_their_attachment(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory) -> None:
    address = f"urbanisme-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, "Urbanisme", address)
    first = mail("Permis de construire — 12 rue des Lilas", "Bonjour,\nvoici ma demande de permis.\nJean Dupont",
                 to=f"{address}@{DOMAIN}")
    plan = b"%PDF-1.4\n" + b"plan de masse " * 5000
    first.add_alternative("<p>Bonjour,<br>voici ma <b>demande</b>.</p><script>alert(1)</script>"
                          "<img src='https://traceur.example/pixel.gif'><a href='javascript:alert(2)'>lien</a>"
                          "<iframe src='https://exemple.fr'></iframe>", subtype="html")
    first.add_attachment(plan, maintype="application", subtype="pdf", filename="plan-de-masse.pdf")
    await asyncio.to_thread(smtp_send, synapse, first, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])

    shown = await owner.wait_for_text(room, lambda m: m.sender == JEAN, timeout=60)
    assert shown.encrypted  # the room is encrypted: so is what the correspondent says in it
    assert shown.body.startswith(f"✉️ Permis de construire — 12 rue des Lilas — à {address}@{DOMAIN}")
    assert "voici ma demande de permis." in shown.body
    for dangerous in ("<script", "alert(", "<img", "javascript:", "<iframe", "traceur.example"):
        assert dangerous not in shown.formatted, shown.formatted
    assert "<b>demande</b>" in shown.formatted
    attachment = await owner.wait_for_file(room, JEAN)
    assert attachment.body == "plan-de-masse.pdf" and await owner.download_file(attachment) == plan
    profile = await owner.client.get_displayname(JEAN)
    assert getattr(profile, "displayname", "") == "Jean Dupont (jean.dupont@exemple.fr)"

    # His reply (his client keeps In-Reply-To) lands in the same thread; so does one whose
    # client dropped the references but kept the subject.
    reply = mail("RE: Permis de construire — 12 rue des Lilas", "J’ajoute le plan de situation.",
                 to=f"{address}@{DOMAIN}", in_reply_to=str(first["Message-ID"]))
    await asyncio.to_thread(smtp_send, synapse, reply, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
    threaded = await owner.wait_for_text(room, lambda m: m.sender == JEAN and "plan de situation" in m.body,
                                         timeout=60)
    assert threaded.thread_root == shown.event_id
    assert not threaded.body.startswith("✉️")  # a reply, not a new conversation
    lost = mail("Re: Permis de construire — 12 rue des Lilas", "Et la notice.", to=f"{address}@{DOMAIN}")
    await asyncio.to_thread(smtp_send, synapse, lost, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
    by_subject = await owner.wait_for_text(room, lambda m: m.sender == JEAN and "la notice" in m.body, timeout=60)
    assert by_subject.thread_root == shown.event_id

    # Another subject: another thread.
    other = mail("Déclaration de travaux", "Une autre demande.", to=f"{address}@{DOMAIN}")
    await asyncio.to_thread(smtp_send, synapse, other, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
    second = await owner.wait_for_text(room, lambda m: m.sender == JEAN and "autre demande" in m.body, timeout=60)
    assert second.thread_root is None and second.body.startswith("✉️ Déclaration de travaux")
    assert sum(m.sender == JEAN and m.body.startswith("✉️") for m in owner.received if m.room_id == room) == 2


async def test_smtp_refuses_unknown_addresses_oversized_messages_and_bad_addresses_in_french(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory) -> None:
    address = f"etat-civil-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, "État civil", address)
    for typed, told in (("Pas_Valide!", "Adresse refusée"), ("deux mots", "Trop d’arguments"),
                        (f"{address}@autre.example", "Adresse refusée")):
        assert told in await bot_reply(owner, room, COURRIEL, f"!mail adresse {typed}")
    listed = await bot_reply(owner, room, COURRIEL, "!mail adresses")
    assert listed == f"Adresses de ce salon : {address}@{DOMAIN}"

    def refused_recipient() -> smtplib.SMTPRecipientsRefused:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp_send(synapse, mail("Bonjour", "x", to=f"inconnu@{DOMAIN}"), "a@exemple.fr", [f"inconnu@{DOMAIN}"])
        return refused.value

    refused = await asyncio.to_thread(refused_recipient)
    code, text = refused.recipients[f"inconnu@{DOMAIN}"]
    assert code == 550 and b"5.1.1" in text

    def oversized() -> smtplib.SMTPSenderRefused:
        big = mail("Gros fichier", "voir la pièce jointe", to=f"{address}@{DOMAIN}")
        big.add_attachment(b"\0" * (26 * 1024 * 1024), maintype="application", subtype="octet-stream",
                           filename="archive.bin")
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused:
            smtp_send(synapse, big, "a@exemple.fr", [f"{address}@{DOMAIN}"])
        return refused.value  # type: ignore[return-value]

    too_big = await asyncio.to_thread(oversized)
    assert too_big.smtp_code == 552

    # A second room cannot take the address; once removed, its mail is refused at RCPT.
    other_owner, other_room = owner, await create_encrypted_room(owner, name="Autre salon")
    await other_owner.client.room_invite(other_room, COURRIEL)
    await other_owner.wait_for_members_including(other_room, COURRIEL)
    taken = await bot_reply(other_owner, other_room, COURRIEL, f"!mail adresse {address}")
    assert "appartient déjà à un autre salon" in taken
    # Written into the second room's state by hand, the claim is told there, and the mail
    # still goes to the first room only.
    since = len(other_owner.received)
    await other_owner.client.room_put_state(other_room, "fr.maillage.courriel", {"adresses": [address]})
    notice = await other_owner.wait_for_text(other_room, lambda m: m.sender == COURRIEL, since=since)
    assert notice.body.startswith(f"Ce salon ne reçoit pas les courriels de {address}@{DOMAIN} :"), notice.body
    await asyncio.to_thread(smtp_send, synapse, mail("Pour le premier salon", "Premier.", to=f"{address}@{DOMAIN}"),
                            "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
    arrived = await owner.wait_for_text(room, lambda m: m.sender == JEAN and "Premier." in m.body)
    assert not any(m.room_id == other_room for m in owner.received if m.sender == JEAN), arrived.room_id
    removed = await bot_reply(owner, room, COURRIEL, f"!mail retire {address}")
    assert "ne mène plus à ce salon" in removed
    await asyncio.sleep(1)

    def after_removal() -> int:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp_send(synapse, mail("Bonjour", "x", to=f"{address}@{DOMAIN}"), "a@exemple.fr",
                      [f"{address}@{DOMAIN}"])
        return int(refused.value.recipients[f"{address}@{DOMAIN}"][0])

    assert await asyncio.to_thread(after_removal) == 550
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{bridge.url}/sante")).status_code == 200


async def test_a_mail_server_delivering_over_lmtp_gets_one_answer_per_recipient(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory) -> None:
    first, second = f"lmtp-a-{uuid.uuid4().hex[:6]}", f"lmtp-b-{uuid.uuid4().hex[:6]}"
    owner, room_a = await room_with_mailbox(agents, synapse, "LMTP A", first)
    _, room_b = await room_with_mailbox(agents, synapse, "LMTP B", second, owner=owner)
    message = mail("Par LMTP", "Remis par le serveur de messagerie.", to=f"{first}@{DOMAIN}")

    def deliver() -> tuple[list[int], list[int]]:
        """The conversation step by step: smtplib reads one answer to DATA, LMTP gives one per
        accepted recipient (RFC 2033)."""
        with smtplib.LMTP("127.0.0.1", synapse.config.courriel.port_lmtp, timeout=60) as server:
            server.ehlo("mx.mairie.example")  # LHLO
            server.mail("jean.dupont@exemple.fr")
            recipients = [server.rcpt(f"{local}@{DOMAIN}")[0] for local in (first, second, "inconnu")]
            answers = [server.data(message.as_bytes(policy=email.policy.SMTP))[0], server.getreply()[0]]
            return recipients, answers

    recipients, answers = await asyncio.to_thread(deliver)
    assert recipients == [250, 250, 550] and answers == [250, 250]
    for room in (room_a, room_b):
        shown = await owner.wait_for_text(room, lambda m: m.sender == JEAN and "Remis par le serveur" in m.body,
                                          timeout=60)
        assert shown.body.startswith("✉️ Par LMTP")
