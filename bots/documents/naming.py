"""The collectivité's naming convention for filed documents, and their versions."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

MAX_STEM = 80
# Names Windows (and so many agents' file managers) cannot open.
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_VERSION = re.compile(r"^(?P<stem>.+)_v(?P<number>\d+)$")


def slugify(text: str) -> str:
    """Lower case ASCII, words joined by dashes: `Permis de Construire` → `permis-de-construire`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


@dataclass(frozen=True)
class StoredName:
    name: str
    shortened: bool = False
    reserved: bool = False


def split_extension(original: str) -> tuple[str, str]:
    base = original.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c) != "Cc")
    stem, dot, extension = base.rpartition(".")
    if not dot or not stem:
        return base, ""
    extension = re.sub(r"[^a-z0-9]", "", extension.lower())[:10]
    return stem, extension


def stored_name(original: str, *, pattern: str, sent_at_ms: int, service: str, timezone: str) -> StoredName:
    """The name under the convention, e.g. `2026-11-22_urbanisme_permis-construire-dupont.pdf`."""
    stem, extension = split_extension(original)
    slug = slugify(stem) or "document"
    shortened = len(slug) > MAX_STEM
    slug = slug[:MAX_STEM].rstrip("-")
    reserved = slug in RESERVED
    if reserved:
        slug = f"{slug}-document"
    day = datetime.fromtimestamp(sent_at_ms / 1000, ZoneInfo(timezone)).strftime("%Y-%m-%d")
    name = pattern.format(date=day, service=slugify(service) or "documents", nom=slug)
    return StoredName(f"{name}.{extension}" if extension else name, shortened, reserved)


def with_version(name: str, version: int) -> str:
    """`a.pdf` → `a_v2.pdf`; version 1 is the name itself."""
    if version <= 1:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    return f"{stem}_v{version}" + (f".{extension}" if extension else "")


def base_of(name: str) -> tuple[str, int]:
    """`a_v3.pdf` → (`a.pdf`, 3); a name without a version is version 1."""
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    match = _VERSION.match(stem)
    if not match:
        return name, 1
    base = match["stem"] + (f".{extension}" if extension else "")
    return base, int(match["number"])
