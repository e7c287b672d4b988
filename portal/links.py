"""Share links: a document of a room's folder, for someone without an account (another
collectivité's agent without Matrix, a citizen), served by the portal until its end.

@documents asks for a link on behalf of the member who typed ``!doc lien``; the portal keeps
it (the token's hash, never the token), serves the file under ``/partage/<token>`` — no
folder, no service, only the document's own name — records every download (when, from
which network, the address cut to its /24 or /48), and answers an expired, revoked or
vanished document with a page saying so. A request carries the command's event id: asked
again after a crash, the same link comes back (its token is derived from that id with a
secret of the portal), never a second one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from sqlalchemy import select

from maillage.bots.documents.webdav import WebDav, WebDavError
from maillage.config import Config
from maillage.i18n import t
from maillage.portal.db import Database, ShareDownload, ShareLink, audit, now_ms
from maillage.portal.errors import OrganisationError

LONGEST_DAYS = 30
DAY_MS = 86_400_000


class LinkGone(Exception):
    """The link cannot give the document; the message (French) says why, ``status`` the HTTP code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LinkAsked:
    key: str  # the command's event id
    path: str  # in the WebDAV tree, as the bot resolved it in the room's folder
    room_id: str
    author: str
    days: int


@dataclass(frozen=True)
class Download:
    name: str
    size: int
    chunks: AsyncIterator[bytes]


def masked(address: str) -> str:
    """The downloader's network, not their address: IPv4 to /24, IPv6 to /48."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "?"
    prefix = 24 if parsed.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def checked_path(path: str) -> str:
    parts = path.split("/")
    if (not path or path.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
            or len(parts) < 2 or any(unicodedata.category(c) == "Cc" for c in path) or len(path) > 1000):
        raise OrganisationError(t("links.path_invalid"), "chemin")
    return path


class ShareLinks:
    def __init__(self, config: Config, database: Database, secret: str, webdav: Callable[[], WebDav]) -> None:
        self.config, self.database, self.webdav = config, database, webdav
        self._secret = hashlib.sha256(b"maillage-liens|" + secret.encode()).digest()

    def token_for(self, key: str) -> str:
        mac = hmac.new(self._secret, key.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def url(self, token: str) -> str:
        return f"{self.config.portal_url}/partage/{token}"

    async def make(self, asked: LinkAsked) -> tuple[ShareLink, str]:
        """The link (made, or the one this same request made before) and its address."""
        if not 1 <= asked.days <= LONGEST_DAYS:
            raise OrganisationError(t("links.days_invalid", longest=LONGEST_DAYS), "jours")
        path = checked_path(asked.path)
        token = self.token_for(asked.key)
        async with self.database.session() as session:
            known = (await session.execute(select(ShareLink).where(ShareLink.request_key == asked.key))
                     ).scalar_one_or_none()
            if known is not None:
                return known, self.url(token)
            link = ShareLink(request_key=asked.key, token_hash=_hash(token), path=path, name=path.rpartition("/")[2],
                             room_id=asked.room_id, created_by=asked.author,
                             expires_at=now_ms() + asked.days * DAY_MS)
            session.add(link)
            audit(session, asked.author, "lien.creation", link.name,
                  after={"salon": asked.room_id, "jours": asked.days})
            await session.commit()
            return link, self.url(token)

    async def of_room(self, room_id: str) -> list[ShareLink]:
        """The room's links still open, oldest first."""
        async with self.database.session() as session:
            return list((await session.execute(select(ShareLink).where(
                ShareLink.room_id == room_id, ShareLink.revoked_at.is_(None), ShareLink.expires_at > now_ms())
                .order_by(ShareLink.id))).scalars())

    async def revoke(self, number: int, room_id: str, by: str) -> ShareLink:
        async with self.database.session() as session:
            link = await session.get(ShareLink, number)
            if link is None or link.room_id != room_id:
                raise OrganisationError(t("links.unknown", number=number))
            if link.revoked_at is None:
                link.revoked_at, link.revoked_by = now_ms(), by
                audit(session, by, "lien.retrait", link.name, before={"salon": room_id})
                await session.commit()
            return link

    async def open(self, token: str, address: str) -> Download:
        """The document behind the link, its download recorded; else LinkGone."""
        async with self.database.session() as session:
            link = (await session.execute(select(ShareLink).where(ShareLink.token_hash == _hash(token)))
                    ).scalar_one_or_none()
            if link is None:
                raise LinkGone(t("links.gone_unknown"), 404)
            if link.revoked_at is not None:
                raise LinkGone(t("links.gone_revoked"), 410)
            if link.expires_at <= now_ms():
                raise LinkGone(t("links.gone_expired"), 410)
            dav = self.webdav()
            try:
                entry = await dav.entry(link.path)
            except WebDavError:
                await dav.close()
                raise LinkGone(t("links.gone_unreachable"), 503) from None
            if entry is None or entry.is_folder:
                await dav.close()
                raise LinkGone(t("links.gone_document"), 410)
            link.downloads += 1
            session.add(ShareDownload(link_id=link.id, address=masked(address)))
            await session.commit()
            return Download(link.name, entry.size, _streamed(dav, link.path))


async def _streamed(dav: WebDav, path: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in dav.get_stream(path):
            yield chunk
    finally:
        await dav.close()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
