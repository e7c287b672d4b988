"""@documents: files every document posted in a room into that room's WebDAV folder.

The room's folder is room state (``fr.maillage.documents``, state key ``""``,
content ``{"dossier": "urbanisme/permis"}``; empty content: unbound), so any
client shows it and it survives the loss of the bot's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import re
import tempfile
import time
import unicodedata
from typing import Any, ClassVar

from mautrix.types import (
    EventType,
    MediaMessageEventContent,
    MessageEvent,
    MessageType,
    ReactionEvent,
)

from maillage.bots.documents.circuits.engine import CircuitEngine
from maillage.bots.documents.circuits.store import circuits_tables
from maillage.bots.documents.extract import MAX_FILE, extract_text, fold, is_indexed
from maillage.bots.documents.naming import base_of, stored_name, with_version
from maillage.bots.documents.requests import PortalClient, announce_requests
from maillage.bots.documents.webdav import WebDav, WebDavError
from maillage.bots.runtime.binding import Binding
from maillage.bots.runtime.bot import Bot, RetryLater
from maillage.bots.runtime.commands import Argument, CommandError, CommandSet
from maillage.bots.runtime.media import Attachment, CorruptAttachment, MediaUnavailable, prefetch
from maillage.config import url_host
from maillage.i18n import t

log = logging.getLogger("maillage.bots.documents")

BINDING_EVENT = EventType.find("fr.maillage.documents", t_class=EventType.Class.STATE)
MAX_FOLDER_LENGTH = 200
_SAFE_PART = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

documents_commands = CommandSet(("doc", "documents"), "les documents du salon, rangés dans son dossier partagé")
circuit_commands = CommandSet(("circuit", "circuits"),
                              "les circuits de validation (visa, avis, signature) des documents du salon")
access_commands = CommandSet(("accès", "acces", "access"),
                             "demander l’accès au salon, au dossier ou à l’agenda d’un autre service, et en décider")


def normalise_folder(raw: str) -> str:
    """A folder path inside the documents tree, or CommandError saying why not.

    Accents and spaces are normalised; ``..``, absolute paths, encoded separators
    and control characters are refused rather than cleaned, so nobody is
    surprised about where a room's documents go.
    """
    if "%" in raw or "\\" in raw or any(unicodedata.category(c) == "Cc" for c in raw):
        raise CommandError(t("doc.folder_invalid", value=raw[:60]))
    if raw.startswith("/") or len(raw) > MAX_FOLDER_LENGTH:
        raise CommandError(t("doc.folder_invalid", value=raw[:60]))
    parts = []
    for part in raw.strip().split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise CommandError(t("doc.folder_invalid", value=raw[:60]))
        slug = slugify(part)
        if not _SAFE_PART.match(slug):
            raise CommandError(t("doc.folder_invalid", value=raw[:60]))
        parts.append(slug)
    if not parts:
        raise CommandError(t("doc.folder_invalid", value=raw[:60]))
    return "/".join(parts)


def slugify(text: str) -> str:
    """Folder parts keep dots and underscores (`budget_2027`, `v1.2`)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9._]+", "-", ascii_text.lower()).strip("-")


FILE_TYPES = (MessageType.FILE, MessageType.IMAGE, MessageType.VIDEO, MessageType.AUDIO)
RETRY_DELAYS = (2,)  # then kept for later by the runtime


class DocumentsBot(Bot):
    localpart = "documents"
    displayname = "Documents"
    title = "Robot Documents — aide"
    commands: ClassVar[list[CommandSet]] = [documents_commands, circuit_commands, access_commands]
    tables = (circuits_tables,)
    direct_room_name = "circuit.direct_room"
    binding = Binding(BINDING_EVENT, "dossier", normalise_folder, messages="doc", invalid="doc.folder_invalid")

    async def setup(self) -> None:
        config, stack_secrets = self.context.config, self.context.secrets
        base = config.webdav.url or f"http://{url_host(config.reseau.adresse_ecoute)}:{config.reseau.port_webdav}/"
        self.dav = WebDav(base, config.webdav.utilisateur, stack_secrets.dav_password)
        # Documents are read for search after they are filed, one at a time, in a private folder.
        self.work_dir = config.data_dir / "bots" / "lecture"
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._reading = asyncio.Lock()
        self._pending_reads: set[asyncio.Task[None]] = set()
        self.circuits = CircuitEngine(self)
        self._circuit_rounds = asyncio.create_task(self.rounds(self.circuits.tick, "circuit messages and reminders"))
        self.portal = PortalClient(config, stack_secrets.portal_bots_token)
        self._access_rounds = asyncio.create_task(self.rounds(lambda now: announce_requests(self),
                                                              "access requests to tell"))

    async def close(self) -> None:
        for task in [*self._pending_reads, self._circuit_rounds, self._access_rounds]:
            task.cancel()
        await self.circuits.close()
        await self.portal.close()
        await self.dav.close()

    def explain(self, error: Exception) -> str | None:
        if isinstance(error, WebDavError) and error.refused:
            return t("doc.webdav_refused")
        if isinstance(error, WebDavError) and (error.status == 0 or error.status >= 500):
            return t("doc.webdav_unavailable")
        if isinstance(error, MediaUnavailable):
            return t("doc.media_unavailable")
        return None

    def round_seconds(self) -> float:
        return float(self.context.config.circuits.intervalle_secondes)

    async def send_document(self, room_id: str, about: str, path: str, size: int, *, key: str) -> None:
        """A stored document posted in a room (encrypted when the room is), streamed from WebDAV."""
        name = path.rpartition("/")[2]
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        media = await self.upload_for(room_id, self.dav.get_stream(path), size=size, filename=name, mimetype=mimetype)
        await self.post_uploaded(room_id, about, media, size=size, filename=name, mimetype=mimetype, key=key)

    async def on_reaction(self, event: ReactionEvent) -> None:
        relation = event.content.relates_to
        await self.circuits.react(event.sender, str(relation.event_id), relation.key or "", event.event_id,
                                  lambda said: self.answer(event, said))

    async def on_message(self, event: MessageEvent) -> None:
        if event.content.msgtype not in FILE_TYPES:
            return
        folder = await self.bindings.target(event.room_id)
        if folder is not None:
            await self.file_document(event, folder)

    async def file_document(self, event: MessageEvent, folder: str) -> None:
        """File a posted document, exactly once: after a crash or an outage the handler runs
        again and finds the document its earlier attempt filed (the event id is a property of
        the file) rather than filing it again as ``_v2``."""
        content = event.content
        assert isinstance(content, MediaMessageEventContent)
        original = str(content.get("filename") or content.body or "document")
        config = self.context.config
        named = stored_name(original, pattern=config.documents.modele_nom, sent_at_ms=event.timestamp,
                            service=folder.split("/")[0], timezone=config.collectivite.fuseau_horaire)
        base_name, first_version = named.name, 1
        earlier = await self._replied_document(event)
        if earlier is not None:  # a reply to a document is its next version
            folder, _, earlier_name = earlier.rpartition("/")
            base_name, first_version = base_of(earlier_name)[0], base_of(earlier_name)[1] + 1
        attachment = Attachment(url=str(content.file.url if content.file else content.url),
                                encrypted=content.file.serialize() if content.file else None)
        mimetype = (content.info.mimetype if content.info else None) or "application/octet-stream"
        temporary = f"{folder}/.maillage-{hashlib.sha256(event.event_id.encode()).hexdigest()[:32]}.partiel"
        found = await self._filed_before(event, folder, temporary) if self.is_replay(event) else None
        if found is not None:
            path, sha256, size = found
        else:
            properties = {"uploader": event.sender, "event": event.event_id, "original": original[:300]}
            try:
                path, _ = await self._with_retry(lambda: self._store(
                    folder, temporary, attachment, mimetype, base_name, first_version, properties))
            except CorruptAttachment:
                await self.reply(event, t("doc.corrupt"))
                return
            sha256, size = attachment.sha256, attachment.size
        await self.context.db.execute(
            "INSERT INTO maillage_document (event_id, room_id, path, sha256, uploader, size, stored_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
            event.event_id, event.room_id, path, sha256, event.sender, size, int(time.time() * 1000))
        version = base_of(path.rpartition("/")[2])[1]
        note = t("doc.filed_version", version=version) if version > 1 else ""
        note += t("doc.name_shortened") if named.shortened else ""
        note += t("doc.name_reserved") if named.reserved else ""
        await self.reply(event, t("doc.filed", path=path, version=note), thread_root=event.event_id)
        self.read_text_later(path, sha256, size)

    async def _filed_before(self, event: MessageEvent, folder: str, temporary: str) -> tuple[str, str, int] | None:
        """What an earlier attempt at this event filed (path, hash, size); otherwise its partial
        upload, if any, is removed."""
        row = await self.context.db.fetchrow(
            "SELECT path, sha256, size FROM maillage_document WHERE event_id=$1", event.event_id)
        if row is not None:
            return str(row["path"]), str(row["sha256"]), int(row["size"])
        try:
            entries = await self.dav.listing(folder + "/")
        except WebDavError as error:
            if not error.absent:
                raise RetryLater(t("doc.webdav_deferred")) from None
            return None
        for entry in entries:
            if entry.properties.get("event") == event.event_id and not entry.name.startswith("."):
                return entry.path, entry.properties.get("sha256", ""), entry.size
        if any(entry.path == temporary for entry in entries):
            with contextlib.suppress(WebDavError):
                await self.dav.delete(temporary)
            log.info("partial upload of %s removed before filing it again", event.event_id)
        return None

    def read_text_later(self, path: str, sha256: str, size: int) -> None:
        """Index the document's text for ``!doc cherche`` without delaying the next command."""
        if not is_indexed(path) or size > MAX_FILE:
            return
        task = asyncio.create_task(self._read_text(path, sha256))
        self._pending_reads.add(task)
        task.add_done_callback(self._pending_reads.discard)

    async def _read_text(self, path: str, sha256: str) -> None:
        async with self._reading:
            if await self.context.db.fetchval("SELECT 1 FROM maillage_document_text WHERE sha256=$1", sha256):
                return
            with tempfile.TemporaryFile(dir=self.work_dir) as copy:
                try:
                    async for chunk in self.dav.get_stream(path):
                        copy.write(chunk)
                except WebDavError as exc:
                    log.info("text of %s not read: %s", path, exc)
                    return
                copy.seek(0)
                text = await asyncio.to_thread(extract_text, path, copy)
            folded = await asyncio.to_thread(fold, text)
            await self.context.db.execute(
                "INSERT INTO maillage_document_text (sha256, text, folded) VALUES ($1, $2, $3)"
                " ON CONFLICT (sha256) DO NOTHING", sha256, text, folded)

    async def text_of(self, sha256: str) -> tuple[str, str]:
        """The indexed text of the document with this content hash, and its folded form."""
        row = await self.context.db.fetchrow(
            "SELECT text, folded FROM maillage_document_text WHERE sha256=$1", sha256)
        return (str(row["text"]), str(row["folded"])) if row else ("", "")

    async def _store(self, folder: str, temporary: str, attachment: Attachment, mimetype: str,
                     base_name: str, first_version: int, properties: dict[str, str]) -> tuple[str, int]:
        """Upload under a temporary name with its properties, then MOVE it to the first free
        version. MOVE never overwrites (``Overwrite: F`` answers 412 for a taken name), and
        properties travel with the file, so a document never shows up half-described.
        A folder on the way replaced by a symbolic link (which WsgiDAV follows, into the folder
        it points to) keeps the document for later rather than filing it there."""
        try:
            await self.dav.make_folders(folder)
            parts = folder.strip("/").split("/")
            levels = ["/".join(parts[:depth]) + "/" for depth in range(1, len(parts) + 1)]
            entries = await asyncio.gather(*(self.dav.entry(level) for level in levels))
            for level, entry in zip(levels, entries, strict=True):
                if entry is None or not entry.is_folder:
                    raise WebDavError("PROPFIND", level, 403)
        except WebDavError as error:
            if error.status != 403:
                raise
            raise RetryLater(t("doc.folder_forbidden_kept", folder=folder)) from None
        try:
            async with attachment.download(self.media) as (length, chunks):
                await self.dav.put_stream(temporary, prefetch(chunks), mimetype, length)
            if not attachment.intact:
                raise CorruptAttachment(attachment.url)
            await self.dav.set_properties(temporary, {**properties, "sha256": attachment.sha256})
        except (CorruptAttachment, MediaUnavailable, WebDavError):
            with contextlib.suppress(WebDavError):  # nothing left behind under the temporary name
                await self.dav.delete(temporary)
            raise
        return await self.move_to_free_name(temporary, folder, base_name, first_version)

    async def move_to_free_name(self, temporary: str, folder: str, name: str, first_version: int = 1
                                ) -> tuple[str, int]:
        """MOVE a finished upload to ``name`` in ``folder``, or its first free ``_vN``: MOVE never
        overwrites (``Overwrite: F`` answers 412 for a taken name)."""
        version = first_version
        while True:
            candidate = f"{folder}/{with_version(name, version)}"
            try:
                await self.dav.move(temporary, candidate)
                return candidate, version
            except WebDavError as exc:
                if exc.status != 412:
                    raise
            version += 1

    async def _with_retry(self, action: Any) -> Any:
        """A blip is tried again at once; a server away longer keeps the document for later
        (``RetryLater``: the runtime tries again with back-off and the agent is told once)."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return await action()
            except (WebDavError, MediaUnavailable) as error:
                if isinstance(error, WebDavError) and error.refused:
                    log.warning("the WebDAV server refuses the bot's credentials ([webdav] utilisateur, dav_password)")
                    raise RetryLater(t("doc.webdav_refused_kept")) from None
                if delay is None:
                    raise RetryLater(t("doc.webdav_deferred" if isinstance(error, WebDavError)
                                       else "doc.media_deferred")) from None
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _replied_document(self, event: MessageEvent) -> str | None:
        replied = event.content.get_reply_to()
        if not replied:
            return None
        path = await self.context.db.fetchval("SELECT path FROM maillage_document WHERE event_id=$1", replied)
        return str(path) if path else None

    async def prepare_folder(self, folder: str) -> None:
        """Make the folder now; refuse one the server forbids (a symbolic link: WsgiDAV would
        follow it through the paths below it, into another room's folder)."""
        try:
            await self.dav.make_folders(folder)
        except WebDavError as error:
            if error.status == 403:
                raise CommandError(t("doc.folder_forbidden", folder=folder)) from None
            # unreachable now: the folder is made with the first document


@documents_commands.subcommand("lier", "bind", help="lier ce salon à un dossier de documents",
                               example="!doc lier urbanisme/permis-de-construire",
                               arguments=(Argument("dossier", "chemin du dossier", rest=True),))
async def bind(bot: DocumentsBot, event: MessageEvent, dossier: str) -> None:
    folder = await bot.bindings.bind(event, dossier, prepare=bot.prepare_folder)
    await bot.reply(event, t("doc.bound", folder=folder))


@documents_commands.subcommand("délier", "delier", "unbind", help="ne plus ranger les documents de ce salon",
                               example="!doc délier")
async def unbind(bot: DocumentsBot, event: MessageEvent) -> None:
    await bot.bindings.unbind(event)
    await bot.reply(event, t("doc.unbound"))


@documents_commands.subcommand("dossier", "folder", help="le dossier lié à ce salon", example="!doc dossier")
async def show_folder(bot: DocumentsBot, event: MessageEvent) -> None:
    folder = await bot.bindings.target(event.room_id)
    await bot.reply(event, t("doc.current", folder=folder) if folder else t("doc.not_bound"))
