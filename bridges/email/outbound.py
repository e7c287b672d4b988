"""Replies: what an agent writes in a mail thread goes to the correspondent by SMTP, through
the collectivité's relay (aiosmtplib: STARTTLS or TLS, authentication).

The message is built so the correspondent's mail client threads it: a Message-ID of ours
(recorded in the thread at once, so their answer comes back to it), In-Reply-To and
References from the thread, « Re: » and the subject; ``From: "Agent — Room" <address@…>``;
the room's signature; a file posted in the thread goes as an attachment.

Queued in the database once per event (a replayed event finds it there), sent in order,
retried with back-off while the relay is away (up to two days), and a refusal told in the
thread. Marked sent once the relay answers; a crash in that instant sends it again with the
same Message-ID, which mail clients show once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from html import escape
from typing import TYPE_CHECKING, Any

import aiosmtplib
from mautrix.types import EventType, MessageEvent, MessageType

from maillage.bridges.email.message import LOOP_HEADER
from maillage.bridges.email.store import Outgoing, Seen, now_ms
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bridges.email.bot import CourrielBot

log = logging.getLogger("maillage.courriel.envoi")

FILE_TYPES = (MessageType.FILE, MessageType.IMAGE, MessageType.VIDEO, MessageType.AUDIO)
MAX_ATTACHMENT = 20 * 1024 * 1024
GIVE_UP_MS = 2 * 86_400_000
NEW_PREFIX = "nouveau-"  # the Message-ID a conversation started in the room gets before its first mail


def message_id_of(event_id: str, domain: str) -> str:
    return f"{hashlib.sha256(event_id.encode()).hexdigest()[:32]}@{domain}"


async def queue_reply(bot: CourrielBot, event: MessageEvent, thread: list[Seen]) -> None:
    """The agent's message as an email to the thread's correspondent, queued once."""
    first, last_mail = thread[0], next((m for m in reversed(thread) if not m.message_id.startswith(NEW_PREFIX)), None)
    content = event.content
    attachments = []
    text = str(content.body or "")
    rich = str(getattr(content, "formatted_body", "") or "") if getattr(content, "format", None) else ""
    if content.msgtype in FILE_TYPES:
        data = await bot.attachment_bytes(event, MAX_ATTACHMENT)
        if data is None:
            await bot.reply(event, t("mail.attachment_too_big", mb=MAX_ATTACHMENT // (1024 * 1024)))
            return
        info = getattr(content, "info", None)
        mimetype = str(getattr(info, "mimetype", "") or "application/octet-stream")
        attachments.append({"nom": text or "piece-jointe", "type": mimetype,
                            "donnees": base64.b64encode(data).decode()})
        text, rich = t("mail.attachment_sent", name=text), ""
    agent = await bot.display_name(str(event.room_id), str(event.sender))
    room = await bot.room_name(str(event.room_id))
    message_id = message_id_of(str(event.event_id), bot.domain)
    references = [m.message_id for m in thread if not m.message_id.startswith(NEW_PREFIX)][-20:]
    signature = await bot.signature(str(event.room_id))
    payload = {"de": f"{agent} — {room}" if room else agent, "adresse": bot.full(first.address),
               "a": first.correspondent, "titre": first.title, "reponse": last_mail is not None,
               "en_reponse_a": last_mail.message_id if last_mail else "", "references": references,
               "texte": text, "html": rich, "signature": signature, "pieces": attachments}
    root = first.root
    queued = await bot.mail.queue(
        Outgoing(str(event.event_id), str(event.room_id), root, message_id, payload, 0),
        Seen(str(event.room_id), message_id, str(event.event_id), root, first.subject, first.title,
             first.correspondent, first.address))
    if queued:
        bot.to_send.set()


def build(outgoing: Outgoing) -> EmailMessage:
    c = outgoing.content
    message = EmailMessage()
    message["From"] = formataddr((str(c["de"]), str(c["adresse"])))
    message["To"] = str(c["a"])
    title = str(c["titre"]) or t("mail.no_subject")
    message["Subject"] = f"Re: {title}" if c["reponse"] and not title.lower().startswith("re:") else title
    message["Message-ID"] = f"<{outgoing.message_id}>"
    message["Date"] = formatdate(localtime=True)
    if c["en_reponse_a"]:
        message["In-Reply-To"] = f"<{c['en_reponse_a']}>"
        message["References"] = " ".join(f"<{m}>" for m in c["references"])
    message[LOOP_HEADER] = "1"  # our own mail coming back is recognised, never answered
    signature = str(c["signature"])
    message.set_content(str(c["texte"]) + (f"\n\n-- \n{signature}\n" if signature else "\n"))
    if c["html"]:
        signed = f"<p>-- <br>{escape(signature).replace(chr(10), '<br>')}</p>" if signature else ""
        message.add_alternative(f"<html><body>{c['html']}{signed}</body></html>", subtype="html")
    for piece in c["pieces"]:
        maintype, _, subtype = str(piece["type"]).partition("/")
        message.add_attachment(base64.b64decode(piece["donnees"]), maintype=maintype or "application",
                               subtype=subtype or "octet-stream", filename=str(piece["nom"]))
    return message


async def send_one(bot: CourrielBot, outgoing: Outgoing) -> None:
    relay = bot.relay
    if not relay.host:  # kept: it goes once a relay is configured (and the bridge restarted)
        if outgoing.attempts == 0:
            await bot.send_about(outgoing.room_id, outgoing.event_id, thread_notice(outgoing, t(
                "mail.no_relay", to=str(outgoing.content.get("a", "?")))), key="sans-relais")
        await later(bot, outgoing, t("mail.no_relay_short"))
        return
    try:
        await aiosmtplib.send(build(outgoing), hostname=relay.host, port=relay.port, username=relay.user or None,
                              password=relay.password or None, use_tls=relay.security == "tls",
                              start_tls=relay.security == "starttls", cert_bundle=relay.ca or None, timeout=60)
    except aiosmtplib.SMTPAuthenticationError as error:  # the configuration's fault: kept, told once
        if outgoing.attempts == 0:
            told = t("mail.relay_login_refused", to=str(outgoing.content.get("a", "?")), code=error.code)
            await bot.send_about(outgoing.room_id, outgoing.event_id, thread_notice(outgoing, told), key="identifiant")
        await later(bot, outgoing, f"{error.code} {t('mail.relay_login_refused_short')}")
    except aiosmtplib.SMTPRecipientsRefused as refused:
        await refusal(bot, outgoing, "; ".join(f"{r.code} {r.message}" for r in refused.recipients))
    except aiosmtplib.SMTPResponseException as error:
        if 500 <= error.code < 600:
            await refusal(bot, outgoing, f"{error.code} {error.message}")
        else:
            await later(bot, outgoing, f"{error.code} {error.message}")
    except (aiosmtplib.SMTPException, OSError) as error:
        await later(bot, outgoing, f"{type(error).__name__}: {str(error)[:200]}")
    else:
        bot.context.metrics.mail_sent.labels("envoye").inc()
        await bot.mail.sent(outgoing.event_id)
        await bot.send_about(outgoing.room_id, outgoing.event_id, {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": outgoing.event_id, "key": "📨"}}, key="envoye",
            event_type=EventType.REACTION)


async def refusal(bot: CourrielBot, outgoing: Outgoing, detail: str) -> None:
    """Refused for good by the relay (an address that does not exist…): said in the thread."""
    await bot.send_about(outgoing.room_id, outgoing.event_id, thread_notice(outgoing, t(
        "mail.send_refused", to=str(outgoing.content.get("a", "?")), detail=detail[:300])), key="refus")
    bot.context.metrics.mail_sent.labels("refuse").inc()
    await bot.mail.sent(outgoing.event_id, "refuse")


async def later(bot: CourrielBot, outgoing: Outgoing, detail: str) -> None:
    attempts = outgoing.attempts + 1
    if now_ms() - outgoing.created_ms > GIVE_UP_MS:
        await refusal(bot, outgoing, t("mail.send_gave_up", detail=detail))
        return
    log.info("reply %s not sent for now (%s); attempt %d", outgoing.event_id, detail, attempts)
    await bot.mail.send_later(outgoing.event_id, attempts, min(3_600_000, 5_000 * 2 ** min(attempts, 10)))


def thread_notice(outgoing: Outgoing, body: str) -> dict[str, Any]:
    return {"msgtype": "m.notice", "body": body, "m.relates_to": {
        "rel_type": "m.thread", "event_id": outgoing.root, "is_falling_back": True,
        "m.in_reply_to": {"event_id": outgoing.event_id}}}
