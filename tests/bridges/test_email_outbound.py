"""Answers from the room: an agent's message in a mail thread goes out through the relay (a
real SMTP server the test runs on loopback) threaded for the correspondent's mail client,
signed, with files as attachments; a refusal is told in the thread; « !mail nouveau »
starts a conversation."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import io
import re
import smtplib
import sqlite3
import ssl
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from maillage.config import load_config
from maillage.deploy.tls import issue_server_certificate
from maillage.secretstore import load_secrets, update_secrets
from tests.bridges.test_email_inbound import COURRIEL, DOMAIN, JEAN, mail, room_with_mailbox, smtp_send
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.matrix import Agent, AgentFactory, bot_reply
from tests.harness.servers import free_port

pytestmark = pytest.mark.usefixtures("in_french")


class Relay:
    """The collectivité's relay as the bridge meets it: it refuses ``inexistant@…`` at RCPT."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("inexistant@"):
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def wait_for(self, predicate: Any, timeout: float = 60) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, _, message in self.received:
                if predicate(message):
                    return message
            time.sleep(0.2)
        raise AssertionError(f"nothing matching reached the relay; it got {[m['Subject'] for *_, m in self.received]}")


def plain(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    return str(body.get_content()).replace("\r\n", "\n") if body is not None else ""


@pytest.fixture
def relay(synapse: ServerStack) -> Iterator[Relay]:
    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=synapse.config.courriel.relais_port)
    controller.start()
    yield handler
    controller.stop()


async def post_file(agent: Agent, room: str, data: bytes, filename: str, thread: str) -> None:
    response, keys = await agent.client.upload(io.BytesIO(data), content_type="application/pdf", filename=filename,
                                               encrypt=True, filesize=len(data))
    await agent.client.room_send(room, "m.room.message", {
        "msgtype": "m.file", "body": filename, "info": {"mimetype": "application/pdf", "size": len(data)},
        "file": {"url": response.content_uri, **keys},
        "m.relates_to": {"rel_type": "m.thread", "event_id": thread, "is_falling_back": True,
                         "m.in_reply_to": {"event_id": thread}}}, ignore_unverified_devices=True)


async def test_an_agent_answers_from_the_thread_and_the_correspondent_s_client_threads_it(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory, relay: Relay) -> None:
    address = f"urba-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, "Service urbanisme", address)
    signed = await bot_reply(owner, room, COURRIEL, "!mail signature Service urbanisme — Mairie de Test")
    assert "seront signées" in signed
    question = mail("Permis de construire", "Où en est mon dossier ?", to=f"{address}@{DOMAIN}")
    await asyncio.to_thread(smtp_send, synapse, question, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
    shown = await owner.wait_for_text(room, lambda m: m.sender == JEAN, timeout=60)

    # Outside a mail thread, nothing goes out; in it, the answer does.
    await owner.send_text(room, "Qui s’occupe de ce dossier ?")
    await owner.send_text(room, "Bonjour Monsieur Dupont, votre dossier est complet.", in_thread=shown.event_id)
    answer = await asyncio.to_thread(relay.wait_for, lambda m: "dossier est complet" in plain(m))
    assert answer["To"] == "jean.dupont@exemple.fr"
    assert answer["From"].addresses[0].addr_spec == f"{address}@{DOMAIN}"
    assert answer["From"].addresses[0].display_name.endswith("— Service urbanisme")
    assert answer["Subject"] == "Re: Permis de construire"
    assert answer["In-Reply-To"] == str(question["Message-ID"])
    assert str(question["Message-ID"]) in answer["References"]
    assert answer["Message-ID"].endswith(f"@{DOMAIN}>")
    assert "-- \nService urbanisme — Mairie de Test" in plain(answer)
    assert not [m for *_, m in relay.received if "Qui s’occupe" in plain(m)]

    # His answer to ours comes back into the same thread.
    back = mail("Re: Permis de construire", "Merci beaucoup.", to=f"{address}@{DOMAIN}",
                in_reply_to=str(answer["Message-ID"]))
    await asyncio.to_thread(smtp_send, synapse, back, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
    thanks = await owner.wait_for_text(room, lambda m: m.sender == JEAN and "Merci beaucoup" in m.body, timeout=60)
    assert thanks.thread_root == shown.event_id

    # The correspondent's server bounces our answer later: the report lands in the same thread.
    report = (f"From: Mail Delivery System <MAILER-DAEMON@exemple.fr>\r\nTo: {address}@{DOMAIN}\r\n"
              "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
              'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
              "--r\r\nContent-Type: text/plain\r\n\r\nBoite pleine : message non remis.\r\n"
              "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.exemple.fr\r\n\r\n"
              "Final-Recipient: rfc822; jean.dupont@exemple.fr\r\nAction: failed\r\nStatus: 5.2.2\r\n\r\n"
              f"--r\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {answer['Message-ID']}\r\n"
              "Subject: Re: Permis de construire\r\n\r\n--r--\r\n").encode()

    def bounce() -> None:
        with smtplib.SMTP("127.0.0.1", synapse.config.courriel.port_smtp, timeout=60) as outside:
            outside.sendmail("", [f"{address}@{DOMAIN}"], report)

    await asyncio.to_thread(bounce)
    bounced = await owner.wait_for_text(room, lambda m: "Boite pleine" in m.body, timeout=60)
    assert bounced.thread_root == shown.event_id and "Avis de non-remise" in bounced.body

    # A file posted in the thread goes as an attachment.
    plan = b"%PDF-1.4 plan " * 1000
    await post_file(owner, room, plan, "arrete-de-permis.pdf", shown.event_id)
    sent_file = await asyncio.to_thread(relay.wait_for, lambda m: any(
        part.get_filename() == "arrete-de-permis.pdf" for part in m.iter_attachments()))
    assert next(sent_file.iter_attachments()).get_content() == plan

    # A new conversation started in the room; a refusal by the relay told in the thread.
    for to, subject in (("marie.martin@exemple.fr", "Réunion publique"), ("inexistant@exemple.fr", "Relance")):
        started = await bot_reply(owner, room, COURRIEL, f"!mail nouveau {to} {subject}")
        assert started.startswith(f"✉️ Nouvelle conversation avec {to}")
        root = next(m for m in reversed(owner.received) if m.room_id == room and m.body == started).event_id
        await owner.send_text(room, f"Message pour {to}", in_thread=root)
    first = await asyncio.to_thread(relay.wait_for, lambda m: m["To"] == "marie.martin@exemple.fr")
    assert first["Subject"] == "Réunion publique" and first["In-Reply-To"] is None
    refused = await owner.wait_for_text(room, lambda m: m.sender == COURRIEL and "n’a pas été remis" in m.body,
                                        timeout=60)
    assert "inexistant@exemple.fr" in refused.body and "550" in refused.body
    for typed in ("pas-une-adresse Sujet", "x@y Sujet"):
        assert "Adresse du correspondant refusée" in await bot_reply(owner, room, COURRIEL, f"!mail nouveau {typed}")


async def mail_thread(agents: AgentFactory, synapse: ServerStack, name: str, prefix: str) -> tuple[Agent, str, str]:
    """A room with a mailbox of its own and Jean's mail shown there: (owner, room, the mail's event)."""
    address = f"{prefix}-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, name, address)
    to = f"{address}@{DOMAIN}"
    await asyncio.to_thread(smtp_send, synapse, mail("Demande", "Bonjour.", to=to), "jean.dupont@exemple.fr", [to])
    shown = await owner.wait_for_text(room, lambda m: m.sender == JEAN, timeout=60)
    return owner, room, shown.event_id


async def told_in_thread(owner: Agent, room: str, thread: str, timeout: float = 60) -> str:
    """What the bridge says in the mail's thread (a refusal, a wait): its text."""
    told = await owner.wait_for_text(room, lambda m: m.sender == COURRIEL and m.thread_root == thread,
                                     timeout=timeout)
    return told.body


@contextlib.contextmanager
def bridge_running_with(bridge: ServiceProcess, variant: Path) -> Iterator[None]:
    """The bridge restarted on a variant of the config, and on the usual one afterwards."""
    bridge.stop()
    try:
        bridge.start(load_config(variant))
        yield
    finally:
        bridge.stop()
        bridge.start()


async def test_a_reply_the_relay_never_takes_is_given_up_after_two_days_and_said_in_the_thread(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory) -> None:
    """No relay listening (no ``relay`` fixture here): the reply is kept and tried again with
    back-off; two days later it is given up, and the thread is told."""
    owner, room, thread = await mail_thread(agents, synapse, "Sans relais", "sans-relais")
    await owner.send_text(room, "Réponse qui ne partira pas.", in_thread=thread)

    database = synapse.config.data_dir / "courriel" / "courriel.db"

    def attempts() -> int:
        with sqlite3.connect(database, timeout=10) as db:
            row = db.execute("SELECT essais FROM courriel_sortant WHERE room_id=?", (room,)).fetchone()
        return int(row[0]) if row else 0

    deadline = time.monotonic() + 60
    while await asyncio.to_thread(attempts) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert await asyncio.to_thread(attempts) >= 1  # tried, refused by the closed port, kept for later
    assert not [m for m in owner.received if m.room_id == room and m.sender == COURRIEL and m.thread_root == thread]

    def two_days_pass() -> None:  # the queued reply's age, as if written three days ago
        with sqlite3.connect(database, timeout=10) as db:
            db.execute("UPDATE courriel_sortant SET cree_ms = cree_ms - ? WHERE room_id=?", (3 * 86_400_000, room))

    await asyncio.to_thread(two_days_pass)
    told = await told_in_thread(owner, room, thread, timeout=90)
    assert told.startswith("Le courriel à jean.dupont@exemple.fr n’a pas été remis : le relais de messagerie "
                           "n’a pas répondu pendant deux jours"), told


async def test_without_a_relay_configured_the_answer_waits_and_the_thread_is_told(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory) -> None:
    source = synapse.config.source
    variant = source.with_name("maillage-courriel-sans-relais.toml")
    variant.write_text(source.read_text().replace('relais_hote = "127.0.0.1"', 'relais_hote = ""'))
    assert 'relais_hote = ""' in variant.read_text()
    with bridge_running_with(bridge, variant):
        owner, room, thread = await mail_thread(agents, synapse, "Sans relais configuré", "sans-config")
        await owner.send_text(room, "Réponse en attente d’un relais.", in_thread=thread)
        told = await told_in_thread(owner, room, thread)
        assert told.startswith("Le courriel à jean.dupont@exemple.fr n’est pas encore parti : aucun relais"), told


RELAY_USER, RELAY_PASSWORD = "passerelle", "Mot-de-passe-relais-8c1d"


@contextlib.contextmanager
def guarded_relay(tmp_path: Path) -> Iterator[tuple[Relay, int, Path]]:
    """The collectivité's relay as production has it: STARTTLS required (a certificate of the
    collectivité's own authority), then a login, before any mail; its port and the CA file."""
    certificate = issue_server_certificate(tmp_path / "ca", tmp_path / "relais", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.certificate, certificate.key)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        accepted = isinstance(data, LoginPassword) and data.login == RELAY_USER.encode() \
            and data.password == RELAY_PASSWORD.encode()
        return AuthResult(success=accepted, handled=False)  # handled=False: aiosmtpd answers 535 itself

    handler, port = Relay(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            auth_required=True, authenticator=authenticate)
    controller.start()
    try:
        yield handler, port, tmp_path / "ca" / "ca.pem"
    finally:
        controller.stop()


async def test_answers_go_through_a_relay_that_wants_starttls_and_a_password_and_a_wrong_one_is_told(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory, tmp_path: Path) -> None:
    data_dir = synapse.config.data_dir
    before = load_secrets(data_dir).smtp_password
    with guarded_relay(tmp_path) as (relay_seen, port, ca):
        text = synapse.config.source.read_text()
        text = re.sub(r"relais_port = \d+", f"relais_port = {port}", text)
        text = text.replace('relais_securite = "aucune"', 'relais_securite = "starttls"')
        text = text.replace("[courriel]", f'[courriel]\nrelais_utilisateur = "{RELAY_USER}"\nrelais_ca = "{ca}"')
        variant = synapse.config.source.with_name("maillage-courriel-relais-tls.toml")
        variant.write_text(text)
        update_secrets(data_dir, smtp_password="Pas-le-bon-mot-de-passe-1")
        try:
            with bridge_running_with(bridge, variant):
                owner, room, thread = await mail_thread(agents, synapse, "Relais protégé", "tls")
                await owner.send_text(room, "Réponse par le relais protégé.", in_thread=thread)
                told = await told_in_thread(owner, room, thread)
                assert "le relais de messagerie refuse l’identifiant de la passerelle (535)" in told, told
                assert "Pas-le-bon" not in told and not relay_seen.received

                # The password corrected and the bridge restarted: the kept answer goes, over TLS.
                update_secrets(data_dir, smtp_password=RELAY_PASSWORD)
                bridge.stop()
                bridge.start(load_config(variant))
                answer = await asyncio.to_thread(relay_seen.wait_for, lambda m: "relais protégé" in plain(m), 90)
                assert answer["To"] == "jean.dupont@exemple.fr"
                log = (data_dir / "logs" / "courriel.log").read_text()
                assert "Pas-le-bon-mot-de-passe-1" not in log and RELAY_PASSWORD not in log
        finally:  # the usual relay takes no password: the bridge restarted before it is put back is fine
            update_secrets(data_dir, smtp_password=before)


async def test_an_answer_from_a_room_without_its_mailbox_stays_in_the_room_and_the_agent_is_told(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory, relay: Relay) -> None:
    """The room's address taken off after a mail came: an answer in its thread would go out from
    an address whose replies reach no room; it is not sent, and the agent is told why."""
    owner, room, thread = await mail_thread(agents, synapse, "Adresse retirée", "retiree")
    address = (await owner.client.room_get_state_event(room, "fr.maillage.courriel")).content["adresses"][0]
    assert "ne mène plus à ce salon" in await bot_reply(owner, room, COURRIEL, f"!mail retire {address}")

    await owner.send_text(room, "Réponse après le retrait.", in_thread=thread)
    told = await told_in_thread(owner, room, thread)
    assert told.startswith("Ce message n’est pas parti à jean.dupont@exemple.fr : ce salon n’a plus l’adresse "
                           f"{address}@{DOMAIN}."), told
    assert "Ce salon n’a pas d’adresse de courriel" in await bot_reply(
        owner, room, COURRIEL, "!mail nouveau marie.martin@exemple.fr Réunion publique")
    assert not [m for *_, m in relay.received if f"{address}@" in str(m["From"])]  # nothing was queued
