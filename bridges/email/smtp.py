"""The bridge's SMTP and LMTP endpoint (aiosmtpd), to which the collectivité's mail server
relays what it receives for the rooms' addresses.

Refused during the conversation, so the sender's server tells its user at once: an unknown
address at RCPT (550 5.1.1), a message over the size limit (552, announced by the SIZE
extension and enforced while DATA is read), a sender over its hourly allowance (451 4.7.1,
try later). Accepted (250) only once stored whole in the database; if it cannot be stored,
451 4.3.0 so the sending server tries again: nothing accepted is ever lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from maillage.bots.runtime.metrics import Metrics
from maillage.bridges.email import senders
from maillage.bridges.email.store import MailStore, now_ms

log = logging.getLogger("maillage.courriel.smtp")

HOUR_MS = 3_600_000


class MailHandler:
    def __init__(self, store: MailStore, domain: str, per_hour: int, arrived: asyncio.Event, *,
                 policy: str = "signaler", relays: list[str] | None = None, metrics: Metrics | None = None) -> None:
        self.store, self.domain, self.per_hour, self.arrived = store, domain, per_hour, arrived
        self.policy, self.relays = policy, relays or []
        self.metrics = metrics or Metrics()

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        sender = address.strip().lower()
        if sender and await self.store.accepted_since(sender, now_ms() - HOUR_MS) >= self.per_hour:
            return "451 4.7.1 Trop de messages de cet expediteur : reessayez dans une heure"
        envelope.mail_from = sender
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        local, _, domain = address.strip().lower().rpartition("@")
        if domain != self.domain or not local or await self.store.room_of(local) is None:
            return f"550 5.1.1 <{address[:200]}> : adresse inconnue"
        envelope.rcpt_tos.append(local)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        count = len(envelope.rcpt_tos)
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        sender = await senders.check(raw, peer, str(envelope.mail_from or ""), str(session.host_name or ""),
                                     self.relays)
        if self.policy == "refuser" and sender.forged:
            self.metrics.mail_smtp.labels("refuse_expediteur").inc()
            return _each(server, count, f"550 5.7.26 Expediteur non authentifie (SPF {sender.spf}, DKIM {sender.dkim})")
        try:
            await self.store.accept(str(envelope.mail_from or ""), list(envelope.rcpt_tos), raw, sender.spf,
                                    sender.dkim)
        except Exception:  # the database: the sender's server keeps the message and tries again
            log.exception("message from %s not stored; answered 451", envelope.mail_from)
            self.metrics.mail_smtp.labels("stockage_impossible").inc()
            return _each(server, count, "451 4.3.0 Stockage momentanement impossible : reessayez plus tard")
        self.arrived.set()
        self.metrics.mail_smtp.labels("accepte").inc(count)
        return _each(server, count, "250 2.0.0 Message recu")


def _each(server: SMTP, count: int, answer: str) -> str:
    """LMTP answers DATA once per recipient (RFC 2033); SMTP once."""
    return "\r\n".join([answer] * count) if isinstance(server, LMTP) else answer


async def serve(handler: MailHandler, host: str, smtp_port: int, lmtp_port: int, max_bytes: int,
                hostname: str) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {"data_size_limit": max_bytes, "enable_SMTPUTF8": True, "hostname": hostname,
                               "ident": "Maillage passerelle de courriel"}
    smtp = await loop.create_server(lambda: SMTP(handler, **options), host, smtp_port)
    lmtp = await loop.create_server(lambda: LMTP(handler, **options), host, lmtp_port)
    return [smtp, lmtp]
