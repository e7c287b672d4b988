"""Is the sender who they say? SPF and DKIM checked against a real DNS server (dnsmasq
answering for exemple.fr) and shown on the message; « refuser » turns a forged message
away during the SMTP conversation."""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import make_msgid

import dkim
import pytest

from maillage.config import load_config
from tests.bridges.test_email_inbound import DOMAIN, JEAN, room_with_mailbox
from tests.conftest import SenderDomain, ServerStack, ServiceProcess
from tests.harness.matrix import AgentFactory, Received

pytestmark = pytest.mark.usefixtures("in_french")


def relayed(domain: SenderDomain, subject: str, text: str, to: str, *, from_ip: str, sign: bool,
            tamper: bool = False) -> bytes:
    """A message as the collectivité's relay hands it over: its Received header names the server
    that sent it to the relay."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "Jean Dupont <jean.dupont@exemple.fr>", to, subject
    message["Message-ID"] = make_msgid(domain=domain.name)
    message.set_content(text)
    raw = message.as_bytes(policy=SMTP_POLICY)
    if sign:
        raw = dkim.sign(raw, domain.selector.encode(), domain.name.encode(), domain.private_key,
                        include_headers=[b"from", b"to", b"subject", b"message-id"]) + raw
    if tamper:
        raw = raw.replace(text.encode(), text.upper().encode())
    received = f"Received: from mx.exemple.fr (mx.exemple.fr [{from_ip}]) by relais.{DOMAIN}; Sun, 6 Dec 2026\r\n"
    return received.encode() + raw


def send(synapse: ServerStack, raw: bytes, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", synapse.config.courriel.port_smtp, timeout=60) as relay:
        relay.sendmail("jean.dupont@exemple.fr", [to], raw)


async def test_spf_and_dkim_results_are_shown_and_an_unverified_sender_is_flagged(
        synapse: ServerStack, bridge: ServiceProcess, dns_server: SenderDomain, agents: AgentFactory) -> None:
    address = f"verif-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, "Vérification", address)
    to = f"{address}@{DOMAIN}"
    for subject, from_ip, sign, tamper in (("Signé et autorisé", dns_server.server_ip, True, False),
                                           ("Usurpé", "198.51.100.7", False, False),
                                           ("Altéré en route", "198.51.100.7", True, True)):
        raw = relayed(dns_server, subject, f"texte {subject}", to, from_ip=from_ip, sign=sign, tamper=tamper)
        await asyncio.to_thread(send, synapse, raw, to)

    def about(subject: str) -> Callable[[Received], bool]:
        return lambda m: m.sender == JEAN and m.body.startswith(f"✉️ {subject}")

    for subject, line in (("Signé et autorisé", "Expéditeur : SPF pass, DKIM pass"),
                          ("Usurpé", "⚠️ Expéditeur non vérifié (SPF fail, DKIM none)"),
                          ("Altéré en route", "⚠️ Expéditeur non vérifié (SPF fail, DKIM fail)")):
        shown = await owner.wait_for_text(room, about(subject), timeout=60)
        assert shown.body.splitlines()[1].startswith(line), shown.body


async def test_the_refusing_policy_turns_a_forged_sender_away_at_smtp_time(
        synapse: ServerStack, bridge: ServiceProcess, dns_server: SenderDomain, agents: AgentFactory) -> None:
    address = f"strict-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, "Stricte", address)
    to = f"{address}@{DOMAIN}"
    source = synapse.config.source
    variant = source.with_name("maillage-courriel-strict.toml")
    variant.write_text(source.read_text().replace("[courriel]", '[courriel]\npolitique_expediteur = "refuser"'))
    bridge.stop()
    try:
        bridge.start(load_config(variant))
        forged = relayed(dns_server, "Faux", "virement urgent", to, from_ip="198.51.100.7", sign=False)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send, synapse, forged, to)
        assert refused.value.smtp_code == 550 and b"5.7.26" in refused.value.smtp_error
        genuine = relayed(dns_server, "Vrai", "demande sincère", to, from_ip=dns_server.server_ip, sign=True)
        await asyncio.to_thread(send, synapse, genuine, to)
        await owner.wait_for_text(room, lambda m: m.sender == JEAN and "demande sincère" in m.body, timeout=60)
        assert not [m for m in owner.received if m.room_id == room and "virement urgent" in m.body]
    finally:
        bridge.stop()
        bridge.start()
