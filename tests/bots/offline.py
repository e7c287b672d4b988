"""@documents with its servers replaced by small in-memory fakes, for property tests.

The bot's own code runs unchanged from the message text to its answer (``Bot._dispatch``):
only the ports are fakes — the WebDAV tree (which records every path the bot asks for),
the room state (the folder binding), the room's power levels and the bot's database.
Thousands of commands a second, with no server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from mautrix.types import EventID, EventType, MessageEvent, MessageType, RoomID, TextMessageEventContent, UserID

from maillage.bots.documents.bot import DocumentsBot
from maillage.bots.documents.webdav import Entry, WebDavError
from maillage.bots.runtime.binding import RoomBindings
from maillage.bots.runtime.bot import BotContext
from maillage.bots.runtime.metrics import Metrics
from maillage.config import parse_config
from maillage.i18n import t

ROOM = "!salle:localhost"
AGENT = "@claire.martin:localhost"
FOLDER = "urbanisme/permis"
# What the WebDAV tree holds before each command: the room's folder, and folders around it
# that no command of this room may reach.
TREE = (
    "urbanisme/permis/plan.pdf",
    "urbanisme/permis/note_v2.odt",
    "urbanisme/permis/sous/annexe.pdf",
    "urbanisme/permis/.corbeille/ancien.pdf",
    "urbanisme/autre-salon/secret.pdf",
    "direction/confidentiel.pdf",
    "racine.txt",
)


class FakeDav:
    """A WebDAV tree in memory, with the ``WebDav`` methods the handlers use."""

    def __init__(self, files: tuple[str, ...] = TREE) -> None:
        self.files: dict[str, dict[str, str]] = {path: {} for path in files}
        self.folders: set[str] = {""}
        for path in files:
            self._add_parents(path)
        self.asked: list[tuple[str, str]] = []  # (method, path) of every request the bot made, in order

    def _add_parents(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            self.folders.add("/".join(parts[:depth]))

    def _ask(self, method: str, path: str) -> str:
        self.asked.append((method, path))
        return path.strip("/")

    def _entry(self, path: str) -> Entry | None:
        if path in self.folders:
            return Entry(path + "/", True, 0, "", {})
        if path in self.files:
            return Entry(path, False, 1234, "Sun, 22 Nov 2026 10:00:00 GMT", dict(self.files[path]))
        return None

    async def entry(self, path: str) -> Entry | None:
        return self._entry(self._ask("entry", path))

    async def exists(self, path: str) -> bool:
        return self._entry(self._ask("exists", path)) is not None

    async def listing(self, path: str, depth: str = "1") -> list[Entry]:
        folder = self._ask("listing", path)
        if folder not in self.folders:
            raise WebDavError("PROPFIND", path, 404)
        prefix = folder + "/" if folder else ""
        below = [p for p in sorted(self.folders | set(self.files)) if p.startswith(prefix) and p != folder]
        if depth != "infinity":
            below = [p for p in below if "/" not in p[len(prefix):]]
        return [entry for p in [folder, *below] if (entry := self._entry(p)) is not None]

    async def make_folders(self, path: str) -> None:
        folder = self._ask("make_folders", path)
        self._add_parents(folder + "/x")

    async def set_properties(self, path: str, values: dict[str, str]) -> None:
        name = self._ask("set_properties", path)
        if name not in self.files:
            raise WebDavError("PROPPATCH", path, 404)
        self.files[name].update(values)

    async def move(self, source: str, destination: str) -> None:
        old, new = self._ask("move", source), self._ask("move", destination)
        if old not in self.files:
            raise WebDavError("MOVE", source, 404)
        if new in self.files or new in self.folders:
            raise WebDavError("MOVE", source, 412)
        self._add_parents(new)
        self.files[new] = self.files.pop(old)

    async def delete(self, path: str) -> None:
        self.files.pop(self._ask("delete", path), None)

    async def get_stream(self, path: str) -> AsyncIterator[bytes]:
        if self._ask("get", path) not in self.files:
            raise WebDavError("GET", path, 404)
        yield b"%PDF-1.7 contenu"


class FakeMedia:
    async def upload(self, chunks: AsyncIterator[bytes], **kwargs: object) -> str:
        async for _ in chunks:
            pass
        return "mxc://localhost/media"


@dataclass
class FakeStateStore:
    async def is_encrypted(self, room_id: str) -> bool:
        return False


@dataclass
class FakeClient:
    """Room state: the folder binding (any content, as any client may send)."""

    binding: Any = None
    state_store: FakeStateStore = field(default_factory=FakeStateStore)
    sent_state: list[Any] = field(default_factory=list)

    async def get_state_event(self, room_id: RoomID, event_type: EventType) -> Any:
        return self.binding

    async def send_state_event(self, room_id: RoomID, event_type: EventType, content: Any) -> None:
        self.sent_state.append(content)
        self.binding = content


class OfflineBindings(RoomBindings):
    """No other room is bound; the bindings cache (a database table) is not kept."""

    async def bound_elsewhere(self, room_id: str, value: str) -> str | None:
        return None

    async def remember(self, room_id: str, value: str | None) -> None:
        pass


class FakePortal:
    """The portal's API for the bots as it answers a bot that asks for share links."""

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        if method == "POST" and path == "/liens":
            assert body is not None
            return 201, {"numero": 1, "url": "http://localhost:8100/partage/jeton", "nom": body["chemin"],
                         "expire": 1_795_000_000_000}
        if method == "GET" and path.startswith("/liens"):
            return 200, []
        number = path.split("/")[2] if path.count("/") >= 2 else "?"
        return 404, {"detail": t("links.unknown", number=number)}


class OfflineDocumentsBot(DocumentsBot):
    """The documents bot, answering into ``replies``; its database and the room's power levels
    are a few fields (the agent is a room admin, so commands go as far as they can)."""

    replies: list[str]
    sent: list[dict[str, Any]]
    fake_dav: FakeDav  # the same objects as ``dav`` and ``client``, with their fakes' types
    fake_client: FakeClient

    async def reply(self, event: MessageEvent, body: str, formatted: str | None = None, *,
                    thread_root: str | None = None, key: str = "reponse") -> EventID:
        self.replies.append(body)
        return EventID(f"$reponse{len(self.replies)}")

    async def send_about(self, room_id: str, about: str, content: dict[str, Any], *, key: str,
                         event_type: EventType = EventType.ROOM_MESSAGE) -> EventID:
        self.sent.append(content)
        return EventID(f"$envoi{len(self.sent)}")

    async def is_room_admin(self, room_id: str, user_id: str, event_type: EventType | None = None) -> bool:
        return True

    async def text_of(self, sha256: str) -> tuple[str, str]:
        return "", ""


_CONFIG = parse_config({"collectivite": {"nom": "Mairie de Test", "nom_serveur": "localhost"}},
                       source=Path("maillage.toml"))


def offline_bot(binding: Any = None) -> OfflineDocumentsBot:
    """A bot whose room is bound to ``FOLDER`` (``binding``: the room state's content instead)."""
    context = BotContext(config=_CONFIG, secrets=cast(Any, None), db=cast(Any, None), metrics=Metrics())
    bot = OfflineDocumentsBot(context)
    bot.replies, bot.sent = [], []
    bot.fake_client = FakeClient({"dossier": FOLDER} if binding is None else binding)
    bot.fake_dav = FakeDav()
    bot.client, bot.dav = cast(Any, bot.fake_client), cast(Any, bot.fake_dav)
    bot.media = cast(Any, FakeMedia())
    bot.bindings = OfflineBindings(bot, DocumentsBot.binding)
    bot.portal = cast(Any, FakePortal())
    return bot


def message(body: str, number: int = 1) -> MessageEvent:
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body=body)
    return MessageEvent(type=EventType.ROOM_MESSAGE, room_id=RoomID(ROOM), event_id=EventID(f"$commande{number}"),
                        sender=UserID(AGENT), timestamp=1_795_000_000_000, content=content)


def dispatch(bot: OfflineDocumentsBot, body: str) -> list[str]:
    """What the bot answers to ``body``; any exception is one the runtime would have to catch
    (the agent would only read « la commande a échoué »)."""
    asyncio.run(bot._dispatch(message(body)))
    return bot.replies
