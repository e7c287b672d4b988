"""The text of office documents, so ``!doc cherche`` finds words inside them.

PDF (pypdf), OpenDocument (ODT, ODS, ODP: ``content.xml``), Office Open XML
(DOCX: ``word/document.xml``) and plain text. Documents come from anyone in a
room, so every reader is bounded: the file's size, the pages read, the XML
inflated from a zip (a zip bomb stops at the bound) and the text kept.
A document that cannot be read has no text; it is still filed and found by name.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import zipfile
from pathlib import Path
from typing import BinaryIO
from xml.etree import ElementTree as ET

log = logging.getLogger("maillage.bots.extract")

MAX_FILE = 30 * 1000 * 1000  # larger documents are found by name only
MAX_PAGES = 300
MAX_XML = 20 * 1000 * 1000
MAX_TEXT = 200_000

_ZIP_MEMBERS = {".odt": "content.xml", ".ods": "content.xml", ".odp": "content.xml",
                ".docx": "word/document.xml"}
_PLAIN = (".txt", ".md", ".csv")
INDEXED = (".pdf", *_ZIP_MEMBERS, *_PLAIN)


def is_indexed(name: str) -> bool:
    return name.lower().endswith(INDEXED)


def extract_text(name: str, file: BinaryIO) -> str:
    """The document's text, whitespace collapsed, at most MAX_TEXT characters; "" if unreadable."""
    extension = Path(name.lower()).suffix
    try:
        if extension == ".pdf":
            text = _pdf_text(file)
        elif extension in _ZIP_MEMBERS:
            text = _zipped_xml_text(file, _ZIP_MEMBERS[extension])
        elif extension in _PLAIN:
            text = file.read(MAX_TEXT * 4).decode("utf-8", errors="replace")
        else:
            return ""
    except Exception as exc:  # a damaged or hostile document: found by its name only
        log.info("text of %s not read: %s", name, type(exc).__name__)
        return ""
    return re.sub(r"\s+", " ", text).strip()[:MAX_TEXT]


def _pdf_text(file: BinaryIO) -> str:
    from pypdf import PdfReader  # imported when needed: most bots never read a PDF

    reader = PdfReader(file)
    parts, length = [], 0
    for page in reader.pages[:MAX_PAGES]:
        part = page.extract_text() or ""
        parts.append(part)
        length += len(part)
        if length >= MAX_TEXT:
            break
    return " ".join(parts)


def _zipped_xml_text(file: BinaryIO, member: str) -> str:
    with zipfile.ZipFile(file) as archive, archive.open(member) as xml:
        body = xml.read(MAX_XML + 1)
    if len(body) > MAX_XML:
        raise ValueError("XML too large")
    root = ET.fromstring(body)
    # Paragraph-like elements end with a space, so words of two paragraphs do not run together.
    return " ".join(" ".join(element.itertext()) for element in root.iter() if _is_paragraph(element.tag))


def _is_paragraph(tag: str) -> bool:
    local = tag.rsplit("}", 1)[-1]
    return local in ("p", "h") and ("opendocument" in tag or "wordprocessingml" in tag)


def fold(text: str) -> str:
    """Lower case, accents removed, anything but letters and digits a space; same length as
    ``text``, so a position found in the folded text is the same in the original."""
    return "".join(_fold_char(c) for c in text)


def _fold_char(char: str) -> str:
    base = unicodedata.normalize("NFKD", char)[:1].lower()
    return base if char.isalnum() and len(base) == 1 else " "
