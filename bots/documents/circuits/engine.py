"""What happens to a circuit: started, acted on, sent back, resumed, cancelled, archived.

Every change is one transaction of ``CircuitStore`` carrying the Matrix event that caused
it; what follows a change (the next actors told, the archive written) is done so that
doing it again finds it done: messages carry transaction ids derived from the circuit,
its round and its step; archived files carry the circuit's number as a WebDAV property.
A command replayed after a crash finds its transition and only finishes what follows.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mautrix.types import RoomID

from maillage.bots.documents.circuits.proof import (
    Receipt,
    ReceiptLine,
    SealIdentity,
    receipt_pdf,
    seal_identity,
    seal_pdf,
)
from maillage.bots.documents.circuits.spec import ACTION_OF_KIND, Step
from maillage.bots.documents.circuits.store import (
    REFUSED,
    RUNNING,
    STOPPED,
    VALIDATED,
    Actor,
    Circuit,
    CircuitStore,
    Stale,
)
from maillage.bots.runtime.bot import now_ms
from maillage.bots.runtime.commands import CommandError
from maillage.i18n import t
from maillage.secretstore import secrets_dir

if TYPE_CHECKING:
    from maillage.bots.documents.bot import DocumentsBot

log = logging.getLogger("maillage.bots.documents.circuits")

ARCHIVES = "Archives"
APPROVE, REFUSE = "✅", "❌"
MAX_ARCHIVED = 200 * 1024 * 1024  # read whole to be sealed
MAX_CHAIN = 10  # deputies of deputies followed at most


class CircuitEngine:
    def __init__(self, bot: DocumentsBot) -> None:
        self.bot = bot
        self.store = CircuitStore(bot.context.db)
        self.zone = ZoneInfo(bot.context.config.collectivite.fuseau_horaire)
        self._identity: SealIdentity | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)  # per circuit

    def identity(self) -> SealIdentity:
        if self._identity is None:
            config = self.bot.context.config
            self._identity = seal_identity(secrets_dir(config.data_dir), config.collectivite.nom,
                                           config.circuits.cachet_certificat, config.circuits.cachet_cle)
        return self._identity

    def today(self) -> date:
        return datetime.now(self.zone).date()

    # --- the document ----------------------------------------------------------------------------

    async def fingerprint(self, path: str) -> str:
        digest = hashlib.sha256()
        async for chunk in self.bot.dav.get_stream(path):
            digest.update(chunk)
        return digest.hexdigest()

    async def unchanged(self, circuit: Circuit) -> bool:
        """Whether the document is still the version the circuit runs on: its ETag first (one
        PROPFIND), its content hashed again only when the ETag moved."""
        entry = await self.bot.dav.entry(circuit.document)
        if entry is None or entry.is_folder:
            return False
        if entry.etag and entry.etag == circuit.etag:
            return True
        return await self.fingerprint(circuit.document) == circuit.sha256

    async def stop_if_changed(self, circuit: Circuit, event_id: str) -> Circuit:
        if circuit.state != RUNNING or await self.unchanged(circuit):
            return circuit
        return await self.stop(circuit, event_id)

    async def stop(self, circuit: Circuit, event_id: str) -> Circuit:
        """The document is no longer the version acted on: the circuit stops and the room is told."""
        stopped = await self.store.end(circuit, STOPPED, who=self.bot.user_id, action="document_modifie",
                                       comment="", event_id=event_id, now=now_ms())
        await self.bot.send_about(circuit.room_id, f"circuit|{circuit.id}|{circuit.round}|arret", self.text(
            t("circuit.document_changed", number=circuit.id, name=circuit.name, initiator=circuit.initiator)),
            key="arret")
        return stopped

    # --- who acts --------------------------------------------------------------------------------

    async def acting(self, step: Step) -> dict[str, str]:
        """Each actor of ``step`` → who acts for them today (their deputy, if they named one)."""
        delegations = await self.store.delegations(self.today().isoformat())
        chosen = {}
        for actor in step.actors:
            acting, seen = actor, {actor}
            while acting in delegations and len(seen) <= MAX_CHAIN:
                acting = delegations[acting][0]
                if acting in seen:
                    acting = actor  # a loop set before the rule existed: nobody stands in
                    break
                seen.add(acting)
            chosen[actor] = acting
        return chosen

    # --- transitions ----------------------------------------------------------------------------

    async def start(self, *, room_id: str, event_id: str, sender: str, document: str, folder: str,
                    model: str | None, deadline: date | None, steps: tuple[Step, ...]) -> Circuit:
        known = await self.store.started_by(event_id)
        if known is None:
            entry = await self.bot.dav.entry(document)
            assert entry is not None
            known = await self.store.create(
                room_id=room_id, start_event=event_id, document=document, sha256=await self.fingerprint(document),
                etag=entry.etag, folder=folder, initiator=sender, model=model,
                deadline=deadline.isoformat() if deadline else None, steps=steps,
                deputies=await self.acting(steps[0]), now=now_ms())
        await self.announce(known)
        return known

    async def act(self, circuit_id: int, user_id: str, action: str, comment: str, event_id: str,
                  answer: Callable[[str], Awaitable[Any]], reply_to: str) -> None:
        """``user_id`` visas, signs or refuses the current step (CommandError saying why not);
        the next actors are told while ``answer`` tells the actor (``reply_to``: the message
        the answer replies to, the command or the notice reacted to)."""
        circuit = await self._decided(circuit_id, user_id, action, comment, event_id)
        said = self.outcome(circuit, action)
        if circuit.state == RUNNING and all(a.decision is None for a in circuit.actors):
            # The step was completed: one message answers the actor and asks the next ones.
            await self.announce(circuit, said=t(f"circuit.recorded_{action}", who=user_id), reply_to=reply_to)
        else:
            await asyncio.gather(self.follow_up(circuit), answer(said))

    async def _decided(self, circuit_id: int, user_id: str, action: str, comment: str, event_id: str) -> Circuit:
        for _ in range(3):
            done = await self.store.transition_of(event_id)
            circuit = await self.store.get(circuit_id if done is None else done[0])
            if circuit is None:
                raise CommandError(t("circuit.unknown", number=circuit_id))
            if done is not None:
                return circuit  # a replay: what follows is done again, once
            actor = self._check_turn(circuit, user_id, action, comment)
            circuit = await self.stop_if_changed(circuit, event_id)
            if circuit.state == STOPPED:
                return circuit
            last = circuit.step + 1 == len(circuit.steps)
            completes = self.store.completes(circuit, actor) and action != "refuse"
            following = await self.acting(circuit.steps[circuit.step + 1]) if completes and not last else None
            try:
                return await self.store.decide(circuit, actor, action, comment.strip(), event_id, now_ms(), following)
            except Stale:
                continue  # another actor acted meanwhile: decide again on what the circuit is now
        raise CommandError(t("circuit.busy", number=circuit_id))

    def _check_turn(self, circuit: Circuit, user_id: str, action: str, comment: str) -> Actor:
        if circuit.state != RUNNING:
            raise CommandError(t(f"circuit.not_running_{circuit.state}", number=circuit.id))
        actor = circuit.may_act(user_id)
        if actor is None:
            already = next((a for a in circuit.actors if user_id in (a.actor, a.acting) and a.decision), None)
            if already is not None:
                raise CommandError(t("circuit.already_acted", number=circuit.id))
            later = any(user_id in step.actors for step in circuit.steps[circuit.step + 1:])
            raise CommandError(t("circuit.not_your_turn_yet" if later else "circuit.not_actor", number=circuit.id,
                                 step=self.step_line(circuit)))
        expected = ACTION_OF_KIND[circuit.current.kind]
        if action not in (expected, "refuse"):
            raise CommandError(t(f"circuit.wrong_action_{circuit.current.kind}", number=circuit.id))
        if action == "refuse" and not comment.strip():
            raise CommandError(t("circuit.refuse_needs_comment", number=circuit.id))
        return actor

    async def follow_up(self, circuit: Circuit) -> Circuit:
        """What follows the circuit's last transition, done once whatever the attempts."""
        if circuit.state == RUNNING:
            await self.announce(circuit)
        elif circuit.state == REFUSED:
            last = (await self.store.transitions(circuit.id))[-1]
            await self.bot.send_about(circuit.room_id, f"circuit|{circuit.id}|{circuit.round}|refus", self.text(
                t("circuit.refused", number=circuit.id, name=circuit.name, who=last.who, comment=last.comment,
                  initiator=circuit.initiator), mentions=[circuit.initiator]), key="refus")
        elif circuit.state == VALIDATED:
            self.later(self.archive_once(circuit.id), "archive")
        return circuit

    # --- what follows, out of the ordered line -------------------------------------------------

    def later(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Slow follow-ups (direct messages with the document, the archive) run beside the bot's
        ordered handling, so that the next actor's command does not wait for them. Each is
        idempotent and, if interrupted, done again by ``tick`` from what the database says."""
        task = asyncio.create_task(self._quietly(work, what))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quietly(work: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await work
        except Exception as error:  # a server away: the next round does it
            log.info("circuit %s not done for now: %s", what, type(error).__name__)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()

    async def archive_once(self, circuit_id: int) -> None:
        async with self._locks[circuit_id]:
            circuit = await self.store.get(circuit_id)
            if circuit is not None and circuit.state == VALIDATED:
                await self.archive(circuit)

    async def resume(self, circuit: Circuit, user_id: str, event_id: str, document: str) -> Circuit:
        done = await self.store.transition_of(event_id)
        if done is None:
            if circuit.state not in (REFUSED, STOPPED):
                raise CommandError(t("circuit.not_resumable", number=circuit.id))
            if user_id != circuit.initiator:
                raise CommandError(t("circuit.initiator_only", number=circuit.id, initiator=circuit.initiator))
            entry = await self.bot.dav.entry(document)
            if entry is None or entry.is_folder:
                raise CommandError(t("circuit.document_gone", name=document.rpartition("/")[2]))
            circuit = await self.store.restart(circuit, document=document, sha256=await self.fingerprint(document),
                                               etag=entry.etag, who=user_id, event_id=event_id, now=now_ms(),
                                               deputies=await self.acting(circuit.steps[0]))
        else:
            circuit = await self.store.get(circuit.id) or circuit
        await self.announce(circuit)
        return circuit

    async def react(self, user_id: str, notice_id: str, key: str, event_id: str,
                    answer: Callable[[str], Awaitable[Any]]) -> None:
        """✅ on a notice acts on its step as « vise » or « signe » would; ❌ asks for the motive.
        Other reactions, and reactions to other messages, say nothing."""
        key = key.replace("\ufe0f", "")
        notice = await self.store.notice(notice_id) if key in (APPROVE, REFUSE) else None
        circuit = await self.store.get(notice[0]) if notice is not None else None
        if notice is None or circuit is None:
            return
        if key == REFUSE:
            raise CommandError(t("circuit.refuse_needs_comment", number=circuit.id))
        if (circuit.round, circuit.step) != notice[1:] and await self.store.transition_of(event_id) is None:
            raise CommandError(t("circuit.notice_outdated", number=circuit.id))
        action = ACTION_OF_KIND[circuit.steps[notice[2]].kind]
        await self.act(circuit.id, user_id, action, "", event_id, answer, notice_id)

    def outcome(self, circuit: Circuit, action: str) -> str:
        if circuit.state == RUNNING:
            return t(f"circuit.done_{action}", number=circuit.id, step=self.step_line(circuit))
        return t(f"circuit.after_{circuit.state}", number=circuit.id)

    # --- telling ---------------------------------------------------------------------------------

    def step_line(self, circuit: Circuit) -> str:
        step = circuit.current
        return t("circuit.step_line", position=circuit.step + 1, total=len(circuit.steps),
                 kind=t(f"circuit.kind_{step.kind}"), mode=t(f"circuit.mode_{step.mode}") if len(step.actors) > 1
                 else "", actors=", ".join(self.who(a) for a in circuit.actors))

    @staticmethod
    def who(actor: Actor) -> str:
        return actor.actor if actor.acting == actor.actor else t("circuit.deputy_for", deputy=actor.acting,
                                                                      actor=actor.actor)

    async def announce(self, circuit: Circuit, *, said: str = "", reply_to: str | None = None) -> None:
        """Ask the current step's actors to act: one message in the room naming them (a ✅ on
        it acts), sent once per round and step; ``said`` (what the previous actor is told, in
        reply to ``reply_to``) goes in the same message."""
        if circuit.state != RUNNING:
            return
        waiting = [a.acting for a in circuit.waiting_for()]
        action = ACTION_OF_KIND[circuit.current.kind]
        body = t("circuit.notice", number=circuit.id, name=circuit.name, step=self.step_line(circuit),
                 action=action, deadline=self.deadline_note(circuit))
        content = self.text(body + (f"\n{said}" if said else ""), mentions=waiting)
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        event_id = await self.bot.send_about(circuit.room_id, f"circuit|{circuit.id}|{circuit.round}|{circuit.step}",
                                             content, key="avis")
        await self.store.note_notice(str(event_id), circuit)
        self.later(self.tell_directly(circuit), "direct messages")

    async def tell_directly(self, circuit: Circuit) -> None:
        """A direct message to each actor the step waits for, with the document, once per round
        and step; an actor who has not joined the bot's direct room yet gets it at a later round
        (``tick``). A ✅ on it acts as on the room's notice."""
        async with self._locks[circuit.id]:
            latest = await self.store.get(circuit.id)
            if latest is not None and (latest.round, latest.step, latest.state) == (circuit.round, circuit.step,
                                                                                     RUNNING):
                await self._tell_directly(latest)

    async def _tell_directly(self, circuit: Circuit) -> None:
        for actor in circuit.waiting_for():
            if await self.store.was_sent(circuit, actor.acting, "direct"):
                continue
            room_id = await self.bot.direct.joined(actor.acting)
            if room_id is None:
                continue  # invited: told once they have joined
            about = f"circuit|{circuit.id}|{circuit.round}|{circuit.step}|{actor.acting}"
            body = t("circuit.direct_notice", number=circuit.id, name=circuit.name,
                     room=await self.bot.room_name(circuit.room_id) or circuit.room_id, step=self.step_line(circuit),
                     action=ACTION_OF_KIND[circuit.current.kind], deadline=self.deadline_note(circuit))
            event_id = await self.bot.send_about(room_id, about, self.text(body), key="direct")
            await self.store.note_notice(str(event_id), circuit)
            entry = await self.bot.dav.entry(circuit.document)
            if entry is not None and not entry.is_folder:
                await self.bot.send_document(room_id, about, circuit.document, entry.size, key="document")
            await self.store.note_sent(circuit, actor.acting, "direct")

    async def tick(self, now: datetime) -> None:
        """Each round: direct messages not sent yet (an actor who joined since), and reminders
        before the deadline and on the day, once each."""
        before = self.bot.context.config.circuits.rappel_jours_avant
        for circuit in await self.store.with_state(VALIDATED):
            await self.archive_once(circuit.id)
        for circuit in await self.store.with_state(RUNNING):
            await self.tell_directly(circuit)
            if not circuit.deadline or now.strftime("%H:%M") < self.bot.context.config.circuits.rappels_heure:
                continue
            due = date.fromisoformat(circuit.deadline)
            days = (due - now.date()).days
            if not 0 <= days <= before:
                continue
            what = "rappel-jour" if days == 0 else "rappel-avant"
            for actor in circuit.waiting_for():
                await self.remind(circuit, actor.acting, what, due)

    async def remind(self, circuit: Circuit, user_id: str, what: str, due: date) -> None:
        if await self.store.was_sent(circuit, user_id, what):
            return
        room_id = await self.bot.direct.joined(user_id)
        if room_id is None:
            return
        key = "circuit.reminder_today" if what == "rappel-jour" else "circuit.reminder_before"
        body = t(key, number=circuit.id, name=circuit.name, date=due.strftime("%d/%m/%Y"),
                 action=ACTION_OF_KIND[circuit.current.kind], room=await self.bot.room_name(circuit.room_id))
        event_id = await self.bot.send_about(room_id, f"circuit|{circuit.id}|{circuit.round}|{circuit.step}|{user_id}",
                                             self.text(body), key=what)
        await self.store.note_notice(str(event_id), circuit)
        await self.store.note_sent(circuit, user_id, what)

    def deadline_note(self, circuit: Circuit) -> str:
        if not circuit.deadline:
            return ""
        due = date.fromisoformat(circuit.deadline)
        late = due < self.today()
        return t("circuit.deadline_late" if late else "circuit.deadline", date=due.strftime("%d/%m/%Y"))

    @staticmethod
    def text(body: str, *, mentions: list[str] | None = None) -> dict[str, Any]:
        """A message naming ``mentions`` with pills (and ``m.mentions``, so they are notified)."""
        content: dict[str, Any] = {"msgtype": "m.text", "body": body, "m.mentions": {}}
        if mentions:
            formatted = html.escape(body).replace("\n", "<br>")
            for user_id in sorted(set(mentions), key=len, reverse=True):
                escaped = html.escape(user_id)
                formatted = formatted.replace(escaped, f'<a href="https://matrix.to/#/{escaped}">{escaped}</a>')
            content |= {"format": "org.matrix.custom.html", "formatted_body": formatted,
                        "m.mentions": {"user_ids": sorted(set(mentions))}}
        return content

    # --- the archive -----------------------------------------------------------------------------

    async def archive(self, circuit: Circuit) -> Circuit:
        """The validated version in ``Archives/<année>/<service>/`` (sealed when its last step was
        a signature and it is a PDF), with its receipt; both posted in the room."""
        data = bytearray()
        async for chunk in self.bot.dav.get_stream(circuit.document):
            data += chunk
            if len(data) > MAX_ARCHIVED:
                raise CommandError(t("circuit.too_big_to_archive", name=circuit.name))
        if hashlib.sha256(data).hexdigest() != circuit.sha256:
            return await self.stop(circuit, f"archive|{circuit.id}|{circuit.round}")
        transitions = await self.store.transitions(circuit.id)
        finished = datetime.fromtimestamp(transitions[-1].at / 1000, UTC)
        folder = f"{ARCHIVES}/{finished.astimezone(self.zone).year}/{circuit.folder.split('/')[0]}"
        sealed = circuit.steps[-1].kind == "signature" and circuit.name.lower().endswith(".pdf")
        content = bytes(data)
        if sealed:
            reason = t("circuit.seal_reason", number=circuit.id)
            content = await asyncio.to_thread(seal_pdf, content, self.identity(), reason=reason,
                                              location=self.bot.context.config.collectivite.nom)
        archive = await self.store_once(folder, circuit.name, content, f"{circuit.id}:document",
                                        "application/pdf" if sealed else "application/octet-stream")
        stem = circuit.name.rsplit(".", 1)[0]
        receipt = await asyncio.to_thread(receipt_pdf, Receipt(
            organisation=self.bot.context.config.collectivite.nom, number=circuit.id,
            room=await self.bot.room_name(circuit.room_id) or circuit.room_id, document=circuit.document,
            archive=archive, sha256=circuit.sha256, initiator=circuit.initiator,
            started=datetime.fromtimestamp(circuit.created_at / 1000, UTC), finished=finished, sealed=sealed,
            lines=[self.receipt_line(circuit, transition) for transition in transitions]), self.zone)
        receipt_path = await self.store_once(folder, f"{stem}_bordereau.pdf", receipt, f"{circuit.id}:bordereau",
                                             "application/pdf")
        circuit = await self.store.archived(circuit, archive, receipt_path, now_ms())
        about = f"circuit|{circuit.id}|archive"
        await self.bot.send_about(circuit.room_id, about, self.text(t(
            "circuit.validated", number=circuit.id, name=circuit.name, archive=archive, receipt=receipt_path,
            sealed=t("circuit.validated_sealed") if sealed else "")), key="termine")
        await self.post(circuit.room_id, about, receipt, receipt_path, "bordereau")
        await self.post(circuit.room_id, about, content, archive, "archive")
        return circuit

    def receipt_line(self, circuit: Circuit, transition: Any) -> ReceiptLine:
        step = "" if transition.step is None or transition.action in ("annule", "reprend") else \
            f"{transition.step + 1}. {t('circuit.kind_' + circuit.steps[transition.step].kind)}"
        who = transition.who if transition.on_behalf is None else t(
            "circuit.deputy_for", deputy=transition.who, actor=transition.on_behalf)
        return ReceiptLine(datetime.fromtimestamp(transition.at / 1000, UTC), step, who,
                           t(f"circuit.action_{transition.action}"), transition.comment, transition.event_id,
                           transition.sha256)

    async def store_once(self, folder: str, name: str, content: bytes, mark: str, mimetype: str) -> str:
        """``content`` under ``folder/name`` (``_v2``… when taken), once: a file carrying ``mark``
        there already is what an earlier attempt stored."""
        dav = self.bot.dav
        await dav.make_folders(folder)
        for entry in await dav.listing(folder + "/"):
            if entry.properties.get("circuit") == mark:
                return entry.path
        temporary = f"{folder}/.maillage-{hashlib.sha256(mark.encode()).hexdigest()[:24]}.partiel"

        async def chunks() -> AsyncIterator[bytes]:
            yield content

        await dav.put_stream(temporary, chunks(), mimetype, len(content))
        await dav.set_properties(temporary, {"circuit": mark, "sha256": hashlib.sha256(content).hexdigest()})
        return (await self.bot.move_to_free_name(temporary, folder, name))[0]

    async def post(self, room_id: str, about: str, content: bytes, path: str, key: str) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield content

        name = path.rpartition("/")[2]
        mimetype = "application/pdf" if name.lower().endswith(".pdf") else "application/octet-stream"
        media = await self.bot.upload_for(room_id, chunks(), size=len(content), filename=name, mimetype=mimetype)
        await self.bot.post_uploaded(room_id, about, media, size=len(content), filename=name, mimetype=mimetype,
                                     key=key)

    async def in_room(self, room_id: str, user_id: str) -> bool:
        return user_id in await self.bot.client.get_joined_members(RoomID(room_id))
