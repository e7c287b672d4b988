"""A small async WebDAV client: streaming PUT and GET, folders, properties, MOVE.

Works with any RFC 4918 server (WsgiDAV embedded, Nextcloud, SOGo…). Paths are
always relative to the configured base URL and built from validated parts, so
nothing here can address a file outside the documents tree.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import httpx

DAV = "DAV:"
MAILLAGE_NS = "urn:x-maillage:documents"
# ``commande``: the event id of the command that last moved the document (found again on a replay).
PROPERTIES = ("uploader", "event", "sha256", "original", "commande", "circuit")


class WebDavError(Exception):
    """The WebDAV server refused or is unreachable; ``status`` 0 when unreachable."""

    def __init__(self, method: str, path: str, status: int) -> None:
        super().__init__(f"{method} {path} → {status or 'unreachable'}")
        self.status = status

    @property
    def refused(self) -> bool:
        """The server refuses the bot's credentials: a configuration to fix, not an outage."""
        return self.status == 401

    @property
    def absent(self) -> bool:
        """Nothing the room may reach there: missing, or forbidden for this path (a symbolic
        link, which WsgiDAV does not follow)."""
        return self.status in (403, 404)


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the base, no leading slash
    is_folder: bool
    size: int
    modified: str
    properties: dict[str, str]
    etag: str = ""  # changes whenever the content does

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


class WebDav:
    def __init__(self, base_url: str, user: str, password: str) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._base_path = urlsplit(self.base_url).path
        self.http = httpx.AsyncClient(auth=(user, password), timeout=httpx.Timeout(60, read=300))
        # Uploads are the hot path: aiohttp moved 100 MB about 15 % faster than httpx here.
        self._uploads = aiohttp.ClientSession(
            headers={"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=300))
        self._known_folders: set[str] = set()

    async def close(self) -> None:
        await self.http.aclose()
        await self._uploads.close()

    def url(self, path: str) -> str:
        return self.base_url + quote(path.lstrip("/"))

    async def _request(self, method: str, path: str, ok: tuple[int, ...], **kwargs: object) -> httpx.Response:
        try:
            response = await self.http.request(method, self.url(path), **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError:
            raise WebDavError(method, path, 0) from None
        if response.status_code not in ok:
            if response.status_code == 409:  # a parent folder vanished: ask again next time
                self._known_folders.clear()
            raise WebDavError(method, path, response.status_code)
        return response

    async def exists(self, path: str) -> bool:
        try:
            await self._request("PROPFIND", path, (207,), headers={"Depth": "0"})
        except WebDavError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def make_folders(self, path: str) -> None:
        """Create ``path`` and its parents; folders seen once are not asked about again."""
        current = ""
        for part in path.strip("/").split("/"):
            current = f"{current}{part}/"
            if current in self._known_folders:
                continue
            if not await self.exists(current):
                await self._request("MKCOL", current, (201, 405))
            self._known_folders.add(current)

    async def put_stream(self, path: str, chunks: AsyncIterator[bytes], content_type: str,
                         length: int | None = None) -> None:
        """Chunked transfer when ``length`` is unknown."""
        headers = {"Content-Type": content_type}
        if length is not None:
            headers["Content-Length"] = str(length)
        source_failed: list[BaseException] = []

        async def watched() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            except BaseException as exc:  # aiohttp would report it as a connection error
                source_failed.append(exc)
                raise

        try:
            async with self._uploads.put(self.url(path), data=watched(), headers=headers) as response:
                status = response.status
        except aiohttp.ClientError:
            if source_failed:
                raise source_failed[0] from None  # the source's own failure (corrupt media…)
            raise WebDavError("PUT", path, 0) from None
        if source_failed:
            raise source_failed[0]
        if status == 409:  # a parent folder vanished: ask again next time
            self._known_folders.clear()
        if status not in (200, 201, 204):
            raise WebDavError("PUT", path, status)

    async def get_stream(self, path: str) -> AsyncIterator[bytes]:
        request = self.http.build_request("GET", self.url(path))
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TransportError:
            raise WebDavError("GET", path, 0) from None
        if response.status_code != 200:
            await response.aclose()
            raise WebDavError("GET", path, response.status_code)
        try:
            async for chunk in response.aiter_bytes(1 << 16):
                yield chunk
        finally:
            await response.aclose()

    async def move(self, source: str, destination: str) -> None:
        """Never overwrites: a taken destination answers 412."""
        await self._request("MOVE", source, (201, 204),
                            headers={"Destination": self.url(destination), "Overwrite": "F"})

    async def delete(self, path: str) -> None:
        await self._request("DELETE", path, (200, 204))

    async def set_properties(self, path: str, values: dict[str, str]) -> None:
        ET.register_namespace("m", MAILLAGE_NS)
        update = ET.Element(f"{{{DAV}}}propertyupdate")
        prop = ET.SubElement(ET.SubElement(update, f"{{{DAV}}}set"), f"{{{DAV}}}prop")
        for name, value in values.items():
            # XML 1.0 cannot carry control characters: a hostile file name must not break filing.
            ET.SubElement(prop, f"{{{MAILLAGE_NS}}}{name}").text = "".join(
                c for c in value if c >= " " or c in "\t\n")
        body = ET.tostring(update, xml_declaration=True, encoding="utf-8")
        await self._request("PROPPATCH", path, (207,), content=body,
                            headers={"Content-Type": "application/xml; charset=utf-8"})

    async def listing(self, path: str, depth: str = "1") -> list[Entry]:
        response = await self._request("PROPFIND", path, (207,), headers={"Depth": depth},
                                       content=_PROPFIND_BODY)
        return self._parse(response.content)

    async def entry(self, path: str) -> Entry | None:
        try:
            entries = await self.listing(path, depth="0")
        except WebDavError as exc:
            if exc.absent:
                return None
            raise
        return entries[0] if entries else None

    def _parse(self, body: bytes) -> list[Entry]:
        entries = []
        for response in ET.fromstring(body).iter(f"{{{DAV}}}response"):
            href = unquote(response.findtext(f"{{{DAV}}}href", ""))
            href = urlsplit(href).path
            relative = href[len(self._base_path):] if href.startswith(self._base_path) else href.lstrip("/")
            props: dict[str, str] = {}
            is_folder, size, modified, etag = False, 0, "", ""
            for propstat in response.iter(f"{{{DAV}}}propstat"):
                if "200" not in propstat.findtext(f"{{{DAV}}}status", ""):
                    continue
                prop = propstat.find(f"{{{DAV}}}prop")
                if prop is None:
                    continue
                is_folder = is_folder or prop.find(f"{{{DAV}}}resourcetype/{{{DAV}}}collection") is not None
                size = int(prop.findtext(f"{{{DAV}}}getcontentlength") or size or 0)
                modified = prop.findtext(f"{{{DAV}}}getlastmodified") or modified
                etag = prop.findtext(f"{{{DAV}}}getetag") or etag
                for name in PROPERTIES:
                    value = prop.findtext(f"{{{MAILLAGE_NS}}}{name}")
                    if value is not None:
                        props[name] = value
            entries.append(Entry(relative, is_folder, size, modified, props, etag))
        return entries


_PROPFIND_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:m="' + MAILLAGE_NS + '"><d:prop>'
    "<d:resourcetype/><d:getcontentlength/><d:getlastmodified/><d:getetag/>"
    + "".join(f"<m:{name}/>" for name in PROPERTIES)
    + "</d:prop></d:propfind>"
).encode()
