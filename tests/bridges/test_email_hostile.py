"""Hostile and broken mail through a real SMTP conversation: each is shown in the room as well
as it can be read (never a crash, never a lost message), and a flood from one sender is
held back with « try later »."""

from __future__ import annotations

import asyncio
import base64
import io
import smtplib
import uuid
import zipfile

import pytest

from tests.bridges.test_email_inbound import COURRIEL, DOMAIN, room_with_mailbox
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.matrix import AgentFactory, bot_reply

pytestmark = pytest.mark.usefixtures("in_french")
SENDER = "@_mail_robert=40exemple.fr:localhost"


def raw(subject: str, headers: str, body: str) -> bytes:
    lines = ["From: Robert <robert@exemple.fr>", "To: x", f"Subject: {subject}",
             f"Message-ID: <{uuid.uuid4().hex}@exemple.fr>", *([headers] if headers else []), "", body]
    return "\r\n".join(lines).encode("utf-8", errors="surrogateescape")


def nested(depth: int) -> str:
    parts = []
    for level in range(depth):
        parts.append(f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}')
    inner = "Content-Type: text/plain\r\n\r\ncoeur du message imbrique"
    closing = "".join(f"\r\n--b{level}--" for level in reversed(range(depth)))
    return "\r\n".join(parts) + "\r\n" + inner + closing


def bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (50 * 1024 * 1024))
    return buffer.getvalue()


async def test_broken_and_hostile_mail_is_shown_as_well_as_it_can_be_and_never_stops_the_bridge(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory) -> None:
    address = f"courrier-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, "Courrier", address)
    to = f"{address}@{DOMAIN}"
    zipped = base64.encodebytes(bomb()).decode().replace("\n", "\r\n")
    cases = {
        "mime-casse": raw("Mime casse", 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="absente"',
                          "texte sans frontiere ni fin"),
        "imbrique": raw("Imbrique", "MIME-Version: 1.0\r\n" + nested(60).split("\r\n\r\n", 1)[0],
                        nested(60).split("\r\n\r\n", 1)[1]),
        "charset": raw("Jeu de caracteres", 'Content-Type: text/plain; charset="x-inconnu-99"',
                       "caf\udce9 cr\udce8me"),
        "mot-encode": raw("=?utf-8?B?cGFzIGR1IGJhc2U2NA!!?= et =?x-inconnu?Q?abc?=", "", "objet mal encode"),
        "bombe": raw("Archive", 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="z"',
                     "--z\r\nContent-Type: text/plain\r\n\r\nvoir l'archive\r\n--z\r\nContent-Type: application/zip\r\n"
                     'Content-Disposition: attachment; filename="archive.zip"\r\nContent-Transfer-Encoding: base64'
                     f"\r\n\r\n{zipped}\r\n--z--"),
    }

    def send_all() -> None:
        with smtplib.SMTP("127.0.0.1", synapse.config.courriel.port_smtp, timeout=60) as outside:
            for message in cases.values():
                outside.sendmail("robert@exemple.fr", [to], message)

    await asyncio.to_thread(send_all)
    shown = await owner.wait_for_text(room, lambda m: m.sender == SENDER and "voir l'archive" in m.body, timeout=90)
    bodies = [m.body for m in owner.received if m.room_id == room and m.sender == SENDER]
    assert any("texte sans frontiere" in b for b in bodies), bodies
    assert any("Imbrique" in b for b in bodies), bodies  # shown, its 60 levels not followed
    assert any("café crème" in b for b in bodies), bodies  # an unknown charset read as Latin-1
    assert any("objet mal encode" in b for b in bodies), bodies
    archive = await owner.wait_for_file(room, SENDER)
    assert archive.body == "archive.zip" and len(await owner.download_file(archive)) < 200_000  # never inflated
    assert shown.sender == SENDER
    assert "Adresses de ce salon" in await bot_reply(owner, room, COURRIEL, "!mail adresses")  # still answering


async def test_a_flood_from_one_sender_is_told_to_try_later(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory) -> None:
    address = f"flot-{uuid.uuid4().hex[:6]}"
    await room_with_mailbox(agents, synapse, "Flot", address)
    limit = synapse.config.courriel.limite_par_heure
    flooder = f"flot-{uuid.uuid4().hex[:6]}@exemple.fr"

    def flood() -> tuple[int, int]:
        accepted = 0
        with smtplib.SMTP("127.0.0.1", synapse.config.courriel.port_smtp, timeout=60) as outside:
            for index in range(limit + 5):
                try:
                    outside.sendmail(flooder, [f"{address}@{DOMAIN}"], raw(f"Message {index}", "", "x"))
                    accepted += 1
                except smtplib.SMTPSenderRefused as refused:
                    return accepted, refused.smtp_code
        return accepted, 250

    accepted, code = await asyncio.to_thread(flood)
    assert (accepted, code) == (limit, 451)
