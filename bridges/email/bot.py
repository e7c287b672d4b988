"""@courriel: the bridge's bot. Gives a room its addresses (``!mail adresse urbanisme``, room
admins), keeps them from the rooms' state, and puts each email received for them in the
room — its correspondent as a ghost user, a thread per conversation — once, in order, even
across a crash or a Matrix outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from html import escape
from typing import Any, ClassVar, cast

from mautrix.errors import MatrixConnectionError, MatrixRequestError, MForbidden, MNotFound
from mautrix.types import EventType, MessageEvent, RoomID, StateEvent

from maillage.bots.runtime.bot import Bot
from maillage.bots.runtime.commands import Argument, CommandError, CommandSet
from maillage.bridges.email.ghosts import Ghosts, is_ghost
from maillage.bridges.email.message import MailMessage, parse
from maillage.bridges.email.outbound import NEW_PREFIX, queue_reply, send_one
from maillage.bridges.email.store import MailStore, Received, Seen, now_ms, tables
from maillage.i18n import t

log = logging.getLogger("maillage.courriel")

MAILBOX_EVENT = EventType.find("fr.maillage.courriel", EventType.Class.STATE)
_EMAIL = re.compile(r"[^@\s<>\"]{1,64}@[a-z0-9.-]{1,253}\.[a-z]{2,}")
_LOCAL = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
THREAD_DAYS = 60  # a reply that lost its References joins a thread of the same subject this recent
LONGEST_DELAY_MS = 600_000
GIVE_UP_AFTER = 30  # attempts with the homeserver up: told in the room, kept in the database

mail_commands = CommandSet(("mail", "courriel"), "les adresses de courriel du salon (les messages reçus y arrivent)")


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    security: str
    user: str
    password: str
    ca: str = ""


def relay_of(bot: Bot) -> Relay:
    """``[courriel] relais_*``, else the ``[smtp]`` section's relay (one password: smtp_password)."""
    config, password = bot.context.config, bot.context.secrets.smtp_password
    mail = config.courriel
    if mail.relais_hote:
        return Relay(mail.relais_hote, mail.relais_port, mail.relais_securite, mail.relais_utilisateur, password,
                     mail.relais_ca)
    smtp = config.smtp
    return Relay(smtp.hote, smtp.port, smtp.securite, smtp.utilisateur, password, smtp.ca)


def mail_domain(bot: Bot) -> str:
    config = bot.context.config
    return (config.courriel.domaine or config.collectivite.nom_serveur.rsplit(":", 1)[0]).lower()


def local_part(raw: str, domain: str) -> str:
    """« urbanisme » or « urbanisme@<domaine> » as the address's local part, else CommandError."""
    value = raw.strip().lower()
    local, at, given = value.partition("@")
    if (at and given != domain) or not _LOCAL.fullmatch(local) or ".." in local:
        raise CommandError(t("mail.address_invalid", value=raw[:60], domain=domain))
    return local


class CourrielBot(Bot):
    localpart = "courriel"
    displayname = "Courriel"
    title = "Passerelle de courriel — aide"
    commands: ClassVar[list[CommandSet]] = [mail_commands]
    tables = (tables,)

    async def setup(self) -> None:
        config = self.context.config
        self.mail = MailStore(self.context.db)
        self.domain = mail_domain(self)
        self.ghosts = Ghosts(config.bots_homeserver_url, self.context.secrets.courriel_as_token,
                             config.collectivite.nom_serveur, self)
        self.relay = relay_of(self)
        log.info("replies leave through %s:%s (%s)", self.relay.host or "-", self.relay.port, self.relay.security)
        self.arrived, self.to_send = asyncio.Event(), asyncio.Event()
        self.client.add_event_handler(MAILBOX_EVENT, self.on_mailbox_state, wait_sync=True)
        self._work = [asyncio.create_task(self.deliver_forever()), asyncio.create_task(self.send_forever())]

    async def close(self) -> None:
        for task in self._work:
            task.cancel()
        await self.ghosts.close()

    # --- mailboxes -------------------------------------------------------------------------

    async def on_mailbox_state(self, event: StateEvent) -> None:
        raw: Any = event.content
        content = raw.serialize() if hasattr(raw, "serialize") else dict(raw)
        addresses = content.get("adresses")
        valid = [a for a in addresses if isinstance(a, str) and _LOCAL.fullmatch(a)] \
            if isinstance(addresses, list) else []
        held_elsewhere = await self.mail.set_addresses(str(event.room_id), valid)
        if held_elsewhere:  # written into the state by hand (or by another tool): said, once per change
            with contextlib.suppress(MatrixRequestError):
                await self.send_about(str(event.room_id), str(event.event_id), {"msgtype": "m.notice", "body": t(
                    "mail.address_held_elsewhere", addresses=", ".join(self.full(a) for a in held_elsewhere))},
                    key="adresse-prise")

    async def mailbox_state(self, room_id: str) -> dict[str, Any]:
        try:
            found: Any = await self.client.get_state_event(RoomID(room_id), MAILBOX_EVENT)
        except MNotFound:
            return {}
        return dict(found.serialize() if hasattr(found, "serialize") else found)

    async def set_mailbox_state(self, room_id: str, **changes: Any) -> None:
        content = {**await self.mailbox_state(room_id), **changes}
        try:
            await self.client.send_state_event(RoomID(room_id), MAILBOX_EVENT, cast(Any, content))
        except MForbidden:
            raise CommandError(t("mail.bot_needs_power")) from None
        if "adresses" in changes:
            await self.mail.set_addresses(room_id, list(changes["adresses"]))

    async def signature(self, room_id: str) -> str:
        return str((await self.mailbox_state(room_id)).get("signature", ""))[:1000]

    async def display_name(self, room_id: str, user_id: str) -> str:
        try:
            member: Any = await self.client.get_state_event(RoomID(room_id), EventType.ROOM_MEMBER, user_id)
            name = str(getattr(member, "displayname", "") or "")
        except MatrixRequestError:
            name = ""
        return name or user_id[1:].split(":", 1)[0]

    # --- replies ---------------------------------------------------------------------------

    async def on_message(self, event: MessageEvent) -> None:
        """An agent's message in a mail thread: the correspondent's reply, queued once."""
        if is_ghost(str(event.sender)):
            return
        relation = event.content.relates_to
        if relation is None or str(relation.rel_type) != "m.thread" or not relation.event_id:
            return
        thread = await self.mail.thread(str(event.room_id), str(relation.event_id))
        if not thread:
            return
        if thread[0].address not in await self.mail.addresses_of(str(event.room_id)):
            # The address was taken off the room since: sent from it, the correspondent's
            # answer would reach no room, or another one.
            await self.reply(event, t("mail.address_gone", address=self.full(thread[0].address),
                                      to=thread[0].correspondent))
            return
        await queue_reply(self, event, thread)

    async def send_forever(self) -> None:
        while True:
            try:
                pending = await self.mail.to_send()
            except Exception:
                log.exception("courriel: replies to send not read")
                pending = []
            for outgoing in pending:
                try:
                    await send_one(self, outgoing)
                except Exception:  # a Matrix outage while telling the result: the same reply next round
                    log.exception("reply %s: result not recorded", outgoing.event_id)
            if len(pending) < 20:
                self.to_send.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.to_send.wait(), timeout=5.0)

    def full(self, local: str) -> str:
        return f"{local}@{self.domain}"

    # --- delivery --------------------------------------------------------------------------

    async def deliver_forever(self) -> None:
        """Messages stored by SMTP, into their rooms in order of arrival; woken by each arrival."""
        while True:
            try:
                pending = await self.mail.to_deliver()
            except Exception:  # the database away a moment: looked at again
                log.exception("courriel: messages to deliver not read")
                pending = []
            for received in pending:
                await self.deliver_safely(received)
            if len(pending) < 20:
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), timeout=2.0)

    async def deliver_safely(self, received: Received) -> None:
        """Delivered, or tried again later with back-off (2 s, 4 s… 10 min); a message that still
        cannot be shown after ``GIVE_UP_AFTER`` tries with the homeserver up is told in its room."""
        attempts = received.attempts + 1
        try:
            await self.deliver(received)
            return
        except (MatrixConnectionError, MatrixRequestError, OSError) as error:  # an outage
            log.info("courriel %s not delivered for now (%s); attempt %d", received.id, type(error).__name__,
                     attempts)
            unshown = False
        except Exception:
            log.exception("courriel %s could not be shown", received.id)
            unshown = attempts == GIVE_UP_AFTER
        await self.mail.later(received.id, attempts, min(LONGEST_DELAY_MS, 1000 * 2 ** min(attempts, 10)))
        if unshown:
            await self._tell_unshown(received)

    async def deliver(self, received: Received) -> None:
        room_id = await self.mail.room_of(received.address)
        if room_id is None:  # the address was withdrawn since: kept, and said in the log
            log.warning("courriel %s: address %s no longer has a room; kept", received.id, received.address)
            await self.mail.later(received.id, received.attempts + 1, LONGEST_DELAY_MS)
            return
        message = parse(received.raw, received.sender, self.domain)
        if message.message_id and await self.mail.seen(room_id, [message.message_id]) is not None:
            # Sent again by a server that did not hear our 250 (a crash right after storing it):
            # shown once already.
            await self.mail.delivered(received.id, None)
            return
        thread = await self.mail.seen(room_id, message.references)
        if thread is None and message.thread_subject:
            thread = await self.mail.by_subject(room_id, message.thread_subject, message.sender_address,
                                                now_ms() - THREAD_DAYS * 86_400_000)
        ghost = await self.ghosts.in_room(room_id, message.sender_address, message.sender_name)
        content = self.rendered(message, received.address, new_thread=thread is None,
                                sender=(received.spf, received.dkim))
        if thread is not None:
            content["m.relates_to"] = {"rel_type": "m.thread", "event_id": thread.root, "is_falling_back": True,
                                       "m.in_reply_to": {"event_id": thread.event_id}}
        event_id = await self.ghosts.send(ghost, room_id, received.id, "texte", content)
        root = thread.root if thread is not None else str(event_id)
        for index, attachment in enumerate(message.attachments):
            media = await self.upload_for(room_id, _chunks(attachment.data), size=len(attachment.data),
                                          filename=attachment.name, mimetype=attachment.mimetype)
            await self.ghosts.send(ghost, room_id, received.id, f"piece-{index}", {
                "msgtype": _msgtype(attachment.mimetype), "body": attachment.name, "filename": attachment.name,
                "info": {"mimetype": attachment.mimetype, "size": len(attachment.data)}, **media,
                "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": True,
                                 "m.in_reply_to": {"event_id": str(event_id)}}})
        self.context.metrics.mail_delivered.inc()
        await self.mail.delivered(received.id, Seen(
            room_id, message.message_id or f"sans-identifiant-{received.id}", str(event_id), root,
            message.thread_subject, message.subject, message.sender_address, received.address))

    def rendered(self, message: MailMessage, address: str, *, new_thread: bool,
                 sender: tuple[str, str] = ("", "")) -> dict[str, Any]:
        """The message's content: its subject heading a new conversation, what the sender checks
        found, what kind of message it is when automatic, the text (and sanitised HTML)."""
        lines = []
        if new_thread:
            lines.append(t("mail.subject_line", subject=message.subject or t("mail.no_subject"),
                           address=self.full(address)))
        spf_result, dkim_result = sender
        if spf_result:
            verified = spf_result == "pass" or dkim_result == "pass"
            flagged = not verified and self.context.config.courriel.politique_expediteur != "accepter"
            lines.append(t("mail.sender_unverified" if flagged else "mail.sender_checked", spf=spf_result,
                           dkim=dkim_result))
        if message.automatic:
            lines.append(t(f"mail.automatic_{message.automatic}"))
        notes = "\n".join(lines)
        text = message.text or t("mail.empty_body")
        if message.truncated:
            text += "\n\n" + t("mail.truncated")
        content: dict[str, Any] = {"msgtype": "m.text", "body": f"{notes}\n\n{text}".strip()}
        if message.html is not None or notes:
            head = "".join(f"<p><strong>{escape(line)}</strong></p>" for line in lines)
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = head + (message.html or f"<p>{escape(text)}</p>".replace("\n", "<br>"))
        return content

    async def _tell_unshown(self, received: Received) -> None:
        room_id = await self.mail.room_of(received.address)
        if room_id is not None:
            await self.send_about(room_id, received.id, {
                "msgtype": "m.notice", "body": t("mail.unshown", sender=received.sender or "?")}, key="illisible")


def _chunks(data: bytes) -> Any:
    async def chunks() -> Any:
        for start in range(0, len(data), 1 << 16):
            yield data[start:start + (1 << 16)]
    return chunks()


def _msgtype(mimetype: str) -> str:
    return "m.image" if mimetype.startswith("image/") and mimetype != "image/svg+xml" else "m.file"


# --- commands ---------------------------------------------------------------------------------


@mail_commands.subcommand("adresse", "address", help="donner une adresse de courriel à ce salon",
                          example="!mail adresse urbanisme", admin=True,
                          arguments=(Argument("adresse", "partie avant @ de l’adresse"),))
async def add_address(bot: CourrielBot, event: MessageEvent, adresse: str) -> None:
    local = local_part(adresse, bot.domain)
    holder = await bot.mail.room_of(local)
    if holder is not None and holder != event.room_id:
        raise CommandError(t("mail.address_taken", address=bot.full(local)))
    addresses = await bot.mail.addresses_of(event.room_id)
    if local not in addresses:
        await bot.set_mailbox_state(event.room_id, adresses=sorted([*addresses, local]))
    await bot.reply(event, t("mail.address_added", address=bot.full(local)))


@mail_commands.subcommand("adresses", "addresses", help="les adresses de courriel de ce salon",
                          example="!mail adresses")
async def list_addresses(bot: CourrielBot, event: MessageEvent) -> None:
    addresses = await bot.mail.addresses_of(event.room_id)
    await bot.reply(event, t("mail.addresses", addresses=", ".join(bot.full(a) for a in addresses))
                    if addresses else t("mail.no_address"))


@mail_commands.subcommand("retire", "retirer", "remove", help="retirer une adresse de courriel de ce salon",
                          example="!mail retire urbanisme", admin=True,
                          arguments=(Argument("adresse", "partie avant @ de l’adresse"),))
async def remove_address(bot: CourrielBot, event: MessageEvent, adresse: str) -> None:
    local = local_part(adresse, bot.domain)
    addresses = await bot.mail.addresses_of(event.room_id)
    if local not in addresses:
        raise CommandError(t("mail.address_not_here", address=bot.full(local)))
    await bot.set_mailbox_state(event.room_id, adresses=[a for a in addresses if a != local])
    await bot.reply(event, t("mail.address_removed", address=bot.full(local)))


@mail_commands.subcommand("signature", help="la signature des réponses envoyées depuis ce salon",
                          example="!mail signature Service urbanisme — Mairie de Bourg-Vallon — 01 23 45 67 89",
                          admin=True, arguments=(Argument("signature", "texte de la signature", rest=True),))
async def set_signature(bot: CourrielBot, event: MessageEvent, signature: str) -> None:
    text = signature.strip()
    if len(text) > 1000:
        raise CommandError(t("mail.signature_too_long"))
    await bot.set_mailbox_state(event.room_id, signature=text)
    await bot.reply(event, t("mail.signature_set", signature=text))


@mail_commands.subcommand("nouveau", "new", help="écrire à une adresse : un fil où chaque message part par courriel",
                          example="!mail nouveau jean.dupont@exemple.fr Votre demande de permis",
                          arguments=(Argument("adresse", "adresse du correspondant"),
                                     Argument("sujet", "objet du courriel", rest=True)))
async def new_conversation(bot: CourrielBot, event: MessageEvent, adresse: str, sujet: str) -> None:
    addresses = await bot.mail.addresses_of(event.room_id)
    if not addresses:
        raise CommandError(t("mail.no_address"))
    correspondent = adresse.strip().lower()
    if not _EMAIL.fullmatch(correspondent):
        raise CommandError(t("mail.correspondent_invalid", value=adresse[:80]))
    title = " ".join(sujet.split())[:300]
    root = await bot.reply(event, t("mail.new_conversation", to=correspondent, subject=title,
                                    address=bot.full(addresses[0])))
    await bot.mail.remember(Seen(event.room_id, f"{NEW_PREFIX}{event.event_id}", str(root), str(root),
                                 title.lower(), title, correspondent, addresses[0]))
