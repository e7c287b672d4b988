"""A small async CalDAV client: calendars, items by UID, time-range queries, change sync.

Calendars are addressed by their id, one path segment under the calendar home
(``http://…/maillage/`` on the embedded Radicale, ``…/remote.php/dav/calendars/<user>/``
on Nextcloud); items by the href the server gives. Ids are checked here, so
nothing a room types can reach outside the home.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx

from maillage.config import Config, url_host

DAV, CALDAV = "DAV:", "urn:ietf:params:xml:ns:caldav"
CALENDAR_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MULTIGET = 200  # items asked for in one calendar-multiget
MAX_ITEM_BYTES = 1_000_000  # an event or task larger than this is not read (a hostile server)


class CalDavError(Exception):
    """The CalDAV server refused or is unreachable; ``status`` 0 when unreachable."""

    def __init__(self, method: str, path: str, status: int) -> None:
        super().__init__(f"{method} {path} → {status or 'unreachable'}")
        self.status = status

    @property
    def refused(self) -> bool:
        """The bot's credentials or rights are refused: a configuration to fix, not an outage."""
        return self.status in (401, 403)

    @property
    def unavailable(self) -> bool:
        return self.status == 0 or self.status >= 500


@dataclass(frozen=True)
class Calendar:
    id: str
    name: str  # display name, or the id
    components: frozenset[str]  # VEVENT, VTODO


@dataclass(frozen=True)
class Item:
    """One calendar object resource: its href (path on the server), ETag and iCalendar text."""

    href: str
    etag: str
    data: str


@dataclass(frozen=True)
class Changes:
    """What changed in a calendar since a sync token: items changed (href, etag) and removed."""

    token: str
    changed: list[tuple[str, str]]
    removed: list[str]


def normal_href(href: str) -> str:
    """The path of an item, encoded one way: servers differ in what they percent-encode."""
    return quote(unquote(urlsplit(href).path))


def check_calendar_id(calendar_id: str) -> str:
    if not CALENDAR_ID.match(calendar_id):
        raise ValueError(f"invalid calendar id {calendar_id[:70]!r}")
    return calendar_id


def calendar_home(config: Config) -> str:
    """Where the bots' calendars live: ``[caldav] url``, or the embedded Radicale's home of the
    bots' account."""
    if config.caldav.url:
        return config.caldav.url
    host = url_host(config.reseau.adresse_ecoute)
    return f"http://{host}:{config.reseau.port_caldav}/{config.caldav.utilisateur}/"


class CalDav:
    @classmethod
    def for_stack(cls, config: Config, password: str, counted: Callable[[str], None] | None = None) -> CalDav:
        return cls(calendar_home(config), config.caldav.utilisateur, password, counted)

    def __init__(self, home_url: str, user: str, password: str, counted: Callable[[str], None] | None = None) -> None:
        self.home_url = home_url if home_url.endswith("/") else home_url + "/"
        self.http = httpx.AsyncClient(auth=(user, password), timeout=httpx.Timeout(30, read=120))
        self.counted = counted or (lambda method: None)  # each request, by method (metrics)

    async def close(self) -> None:
        await self.http.aclose()

    def calendar_url(self, calendar_id: str) -> str:
        return self.home_url + quote(check_calendar_id(calendar_id)) + "/"

    def item_url(self, href: str) -> str:
        """An item's URL from its href, only inside the home (a server answer is not trusted)."""
        url = urljoin(self.home_url, href)
        if not url.startswith(self.home_url):
            raise CalDavError("GET", href[:80], 403)
        return url

    def href_of(self, calendar_id: str, uid: str) -> str:
        """Where the bot puts a new item: the UID, made safe for a path, as its file name."""
        name = re.sub(r"[^A-Za-z0-9@._-]", "_", uid)[:120]
        return normal_href(urlsplit(self.calendar_url(calendar_id)).path + name + ".ics")

    async def _request(self, method: str, url: str, ok: tuple[int, ...], **kwargs: object) -> httpx.Response:
        self.counted(method)
        try:
            response = await self.http.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError:
            raise CalDavError(method, urlsplit(url).path, 0) from None
        if response.status_code not in ok:
            raise CalDavError(method, urlsplit(url).path, response.status_code)
        return response

    # --- calendars ------------------------------------------------------------------

    async def calendars(self) -> list[Calendar]:
        response = await self._request("PROPFIND", self.home_url, (207,), headers={"Depth": "1"},
                                       content=_CALENDAR_PROPS)
        found = []
        for href, prop in _multistatus(response.content):
            calendar_id = unquote(urlsplit(href).path).rstrip("/").rsplit("/", 1)[-1]
            calendar = _calendar(calendar_id, prop)
            if calendar is not None and CALENDAR_ID.match(calendar_id):
                found.append(calendar)
        return sorted(found, key=lambda c: c.id)

    async def calendar(self, calendar_id: str) -> Calendar | None:
        try:
            response = await self._request("PROPFIND", self.calendar_url(calendar_id), (207,),
                                           headers={"Depth": "0"}, content=_CALENDAR_PROPS)
        except CalDavError as error:
            if error.status == 404:
                return None
            raise
        answers = _multistatus(response.content)
        return _calendar(calendar_id, answers[0][1]) if answers else None

    async def make_calendar(self, calendar_id: str, name: str, component: str = "VEVENT") -> None:
        """MKCALENDAR; an id already taken answers 405 (raised: the caller says so)."""
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<c:mkcalendar xmlns:d="{DAV}" xmlns:c="{CALDAV}"><d:set><d:prop>'
            f"<d:displayname>{_xml_text(name)}</d:displayname>"
            f'<c:supported-calendar-component-set><c:comp name="{component}"/></c:supported-calendar-component-set>'
            "</d:prop></d:set></c:mkcalendar>"
        ).encode()
        await self._request("MKCALENDAR", self.calendar_url(calendar_id), (201,), content=body,
                            headers={"Content-Type": "application/xml; charset=utf-8"})

    # --- items ----------------------------------------------------------------------

    async def put(self, href: str, data: str, etag: str | None = None) -> str:
        """Create (``etag`` None: never overwrites) or update (only the version read): 412 when
        someone else changed it meanwhile. Returns the new ETag ("" if the server gives none)."""
        headers = {"Content-Type": "text/calendar; charset=utf-8"}
        headers["If-Match" if etag else "If-None-Match"] = etag or "*"
        response = await self._request("PUT", self.item_url(href), (200, 201, 204), content=data.encode(),
                                       headers=headers)
        return str(response.headers.get("ETag", ""))

    async def get(self, href: str) -> Item | None:
        try:
            response = await self._request("GET", self.item_url(href), (200,))
        except CalDavError as error:
            if error.status in (404, 410):
                return None
            raise
        if len(response.content) > MAX_ITEM_BYTES:
            raise CalDavError("GET", href[:80], 413)
        return Item(href, response.headers.get("ETag", ""), response.text)

    async def delete(self, href: str, etag: str | None = None) -> None:
        headers = {"If-Match": etag} if etag else {}
        try:
            await self._request("DELETE", self.item_url(href), (200, 204), headers=headers)
        except CalDavError as error:
            if error.status not in (404, 410):  # already gone: what was asked
                raise

    async def between(self, calendar_id: str, start: datetime, end: datetime,
                      component: str = "VEVENT") -> list[Item]:
        """Items with an occurrence in [start, end) (the server expands recurrences to choose)."""
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<c:calendar-query xmlns:d="{DAV}" xmlns:c="{CALDAV}">'
            "<d:prop><d:getetag/><c:calendar-data/></d:prop>"
            f'<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="{component}">'
            f'<c:time-range start="{_utc(start)}" end="{_utc(end)}"/>'
            "</c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"
        ).encode()
        return await self._report(calendar_id, body)

    async def everything(self, calendar_id: str, component: str = "VEVENT") -> list[Item]:
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<c:calendar-query xmlns:d="{DAV}" xmlns:c="{CALDAV}">'
            "<d:prop><d:getetag/><c:calendar-data/></d:prop>"
            f'<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="{component}"/>'
            "</c:comp-filter></c:filter></c:calendar-query>"
        ).encode()
        return await self._report(calendar_id, body)

    async def several(self, calendar_id: str, hrefs: list[str]) -> list[Item]:
        """The items at ``hrefs`` (RFC 4791 calendar-multiget), ``MULTIGET`` to a request:
        what changed in a batch is read without reading the whole calendar."""
        items = []
        for start in range(0, len(hrefs), MULTIGET):
            wanted = "".join(f"<d:href>{_xml_text(href)}</d:href>" for href in hrefs[start:start + MULTIGET])
            body = (
                '<?xml version="1.0" encoding="utf-8"?>'
                f'<c:calendar-multiget xmlns:d="{DAV}" xmlns:c="{CALDAV}">'
                f"<d:prop><d:getetag/><c:calendar-data/></d:prop>{wanted}</c:calendar-multiget>"
            ).encode()
            items += await self._report(calendar_id, body)
        return items

    async def _report(self, calendar_id: str, body: bytes) -> list[Item]:
        response = await self._request("REPORT", self.calendar_url(calendar_id), (207,), content=body,
                                       headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
        items = []
        for href, prop in _multistatus(response.content):
            data = prop.findtext(f"{{{CALDAV}}}calendar-data")
            if data and len(data) <= MAX_ITEM_BYTES:
                items.append(Item(normal_href(href), prop.findtext(f"{{{DAV}}}getetag") or "", data))
        return items

    async def etags(self, calendar_id: str) -> dict[str, str]:
        """Every item's ETag (the fallback where sync-collection is not offered)."""
        response = await self._request("PROPFIND", self.calendar_url(calendar_id), (207,), headers={"Depth": "1"},
                                       content=_ETAG_PROPS)
        return {normal_href(href): prop.findtext(f"{{{DAV}}}getetag") or ""
                for href, prop in _multistatus(response.content) if not href.endswith("/")}

    async def changes(self, calendar_id: str, token: str) -> Changes:
        """RFC 6578 sync-collection since ``token`` ("" for the first time: every item)."""
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<d:sync-collection xmlns:d="{DAV}"><d:sync-token>{_xml_text(token)}</d:sync-token>'
            "<d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"
        ).encode()
        response = await self._request("REPORT", self.calendar_url(calendar_id), (207,), content=body,
                                       headers={"Content-Type": "application/xml; charset=utf-8"})
        root = ET.fromstring(response.content)
        changed, removed = [], []
        for answer in root.iter(f"{{{DAV}}}response"):
            href = normal_href(answer.findtext(f"{{{DAV}}}href", ""))
            if href.endswith("/"):
                continue
            status = answer.findtext(f"{{{DAV}}}status", "")
            if "404" in status:
                removed.append(href)
                continue
            etag = answer.findtext(f"{{{DAV}}}propstat/{{{DAV}}}prop/{{{DAV}}}getetag") or ""
            changed.append((href, etag))
        return Changes(root.findtext(f"{{{DAV}}}sync-token", ""), changed, removed)


def _multistatus(body: bytes) -> list[tuple[str, ET.Element]]:
    """(href, the properties found) of each response of a 207 answer."""
    answers = []
    for answer in ET.fromstring(body).iter(f"{{{DAV}}}response"):
        found = ET.Element("prop")
        for propstat in answer.iter(f"{{{DAV}}}propstat"):
            prop = propstat.find(f"{{{DAV}}}prop")
            if "200" in propstat.findtext(f"{{{DAV}}}status", "") and prop is not None:
                found.extend(list(prop))
        answers.append((answer.findtext(f"{{{DAV}}}href", ""), found))
    return answers


def _calendar(calendar_id: str, prop: ET.Element) -> Calendar | None:
    if prop.find(f"{{{DAV}}}resourcetype/{{{CALDAV}}}calendar") is None:
        return None
    components = frozenset(comp.get("name", "") for comp in prop.iter(f"{{{CALDAV}}}comp")) or frozenset(
        {"VEVENT", "VTODO"})
    return Calendar(calendar_id, prop.findtext(f"{{{DAV}}}displayname") or calendar_id, components)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _xml_text(text: str) -> str:
    cleaned = "".join(c for c in text if c >= " " or c in "\t\n")
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_CALENDAR_PROPS = (
    f'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="{DAV}" xmlns:c="{CALDAV}"><d:prop>'
    "<d:resourcetype/><d:displayname/><c:supported-calendar-component-set/></d:prop></d:propfind>"
).encode()

_ETAG_PROPS = (
    f'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="{DAV}"><d:prop><d:getetag/></d:prop></d:propfind>'
).encode()
