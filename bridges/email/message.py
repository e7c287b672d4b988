"""An email as the room shows it: read whatever arrives (malformed MIME, unknown charsets,
broken encoded words, deep nesting), sanitised HTML with a plain-text body, quoted history
folded, attachments set apart, automatic messages (auto-replies, bounces, lists, loops)
recognised.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parseaddr

import nh3

from maillage.i18n import t

MAX_DEPTH = 8  # deeper multiparts (a bomb's way to exhaust the parser) are not followed
MAX_PARTS = 100
MAX_TEXT = 200_000  # characters of body kept in the room; the rest is said to be cut
LOOP_HEADER = "X-Maillage-Passerelle"

# Matrix's HTML subset (client-server spec, m.room.message), without images: an <img> in an
# email is a tracking pixel or a remote image, never an mxc: URL.
ALLOWED_TAGS = {"font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup",
                "sub", "li", "b", "i", "u", "strong", "em", "s", "code", "hr", "br", "div", "table", "thead",
                "tbody", "tr", "th", "td", "caption", "pre", "span", "details", "summary"}
ALLOWED_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}, "code": {"class"}, "span": {"data-mx-color"},
                      "font": {"data-mx-color"}}
_QUOTE_INTRO = re.compile(r"^(Le .+ a écrit\s*:|On .+ wrote:|-----\s*(Original Message|Message d.origine)\s*-----)\s*$",
                          re.IGNORECASE)
_SUBJECT_PREFIX = re.compile(r"^\s*((re|tr|fwd?|réf|aw|wg)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class Attachment:
    name: str
    mimetype: str
    data: bytes


@dataclass
class MailMessage:
    message_id: str
    references: list[str]  # In-Reply-To, then References, oldest first
    subject: str
    sender_address: str
    sender_name: str
    text: str
    html: str | None
    attachments: list[Attachment] = field(default_factory=list)
    automatic: str = ""  # why it is an automatic message (never answered automatically), else empty
    truncated: bool = False

    @property
    def thread_subject(self) -> str:
        """The subject without « Re: », « TR: », « Fwd: »… (a reply's thread)."""
        return _SUBJECT_PREFIX.sub("", self.subject).strip().lower()


def parse(raw: bytes, envelope_sender: str, own_domain: str) -> MailMessage:
    """Whatever the bytes are, a message to show (the parser never raises here)."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    name, address = parseaddr(_header(parsed, "From"))
    address = (address or envelope_sender or "inconnu@invalide").strip().lower()
    texts: list[str] = []
    htmls: list[str] = []
    attachments: list[Attachment] = []
    _walk(parsed, 0, texts, htmls, attachments, [0])
    text = "\n\n".join(texts).strip()
    rich = "".join(htmls).strip()
    if not text and rich:
        text = _text_of_html(rich)
    truncated = len(text) > MAX_TEXT
    text = text[:MAX_TEXT]
    shown_text, history = fold_history(text)
    message = MailMessage(
        message_id=_message_id(_header(parsed, "Message-ID")) or "",
        references=_ids(_header(parsed, "References")) + _ids(_header(parsed, "In-Reply-To"))
        + _reported(parsed),
        subject=" ".join(_header(parsed, "Subject").split())[:300],
        sender_address=address,
        sender_name=" ".join((name or "").split())[:100],
        text=shown_text + (f"\n\n[{t('mail.history_folded', lines=history)}]" if history else ""),
        html=_html(rich, shown_text, history),
        attachments=attachments,
        truncated=truncated,
    )
    message.automatic = automatic_reason(parsed, envelope_sender, own_domain)
    return message


def _header(message: Message, name: str) -> str:
    """A header as text, even with a broken encoded word or charset (kept as it came)."""
    try:
        value = message.get(name)
    except Exception:  # the email package raises several kinds on broken headers
        raw = message.get_all(name, failobj=[]) if hasattr(message, "get_all") else []
        value = raw[0] if raw else ""
    return str(value or "").replace("\r", " ").replace("\n", " ")


def _walk(part: Message, depth: int, texts: list[str], htmls: list[str], attachments: list[Attachment],
          count: list[int]) -> None:
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_PARTS:
        return
    if part.is_multipart():
        payload = part.get_payload()
        children = [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []
        if part.get_content_subtype() == "alternative":
            # The richest alternative a client would show: the HTML one, with its text kept too.
            plain = [c for c in children if c.get_content_type() == "text/plain"]
            rich = [c for c in children if c.get_content_type() == "text/html"]
            if plain:
                texts.append(_decoded(plain[0]))
            if rich:
                htmls.append(_decoded(rich[0]))
            for child in children:
                if child.get_content_type() not in ("text/plain", "text/html"):
                    _walk(child, depth + 1, texts, htmls, attachments, count)
            return
        for child in children:
            _walk(child, depth + 1, texts, htmls, attachments, count)
        return
    content_type = part.get_content_type()
    if content_type == "message/rfc822":  # a forwarded message, or ours come back in a report
        inner = part.get_payload()
        data = inner[0].as_bytes() if isinstance(inner, list) and inner and isinstance(inner[0], Message) else b""
        if data:
            attachments.append(Attachment(t("mail.forwarded_name"), "message/rfc822", data))
        return
    if content_type == "text/rfc822-headers":
        return
    disposition = (part.get_content_disposition() or "").lower()
    filename = _filename(part)
    if (disposition != "attachment" and not filename and content_type == "text/plain") \
            or part.get_content_maintype() == "multipart":  # a multipart whose boundary never comes: its text
        texts.append(_decoded(part))
    elif disposition != "attachment" and not filename and content_type == "text/html":
        htmls.append(_decoded(part))
    else:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and payload:
            attachments.append(Attachment(filename or t("mail.attachment_unnamed"), content_type, payload))


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or ""
    except Exception:
        name = ""
    name = re.sub(r"[\x00-\x1f/\\]", "_", str(name)).strip(". ")
    return name[:150]


def _decoded(part: Message) -> str:
    """The part's text: its declared charset, else UTF-8, else Latin-1 (never an error)."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return str(part.get_payload() or "")
    charset = part.get_content_charset() or "utf-8"
    for candidate in (charset, "utf-8", "latin-1"):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("utf-8", errors="replace")


def _reported(message: Message) -> list[str]:
    """A delivery report's original message (ours, that did not arrive): its thread is the report's."""
    if message.get_content_type() != "multipart/report":
        return []
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return _ids(_header(inner[0], "Message-ID"))
        if part.get_content_type() == "text/rfc822-headers":
            headers = email.message_from_string(_decoded(part), policy=email.policy.default)
            return _ids(_header(headers, "Message-ID"))
    return []


def _message_id(value: str) -> str:
    found = re.search(r"<([^<>\s]{1,250})>", value)
    return found.group(1) if found else value.strip()[:250]


def _ids(value: str) -> list[str]:
    return re.findall(r"<([^<>\s]{1,250})>", value)[-30:]


def fold_history(text: str) -> tuple[str, int]:
    """(the new part, how many lines of quoted history follow it)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if _QUOTE_INTRO.match(line.strip()):
            return "\n".join(lines[:index]).rstrip(), len(lines) - index
    kept = len(lines)
    while kept and (lines[kept - 1].startswith(">") or not lines[kept - 1].strip()):
        kept -= 1
    quoted = sum(1 for line in lines[kept:] if line.startswith(">"))
    return ("\n".join(lines[:kept]).rstrip(), quoted) if quoted else (text, 0)


def sanitised(rich: str) -> str:
    """Matrix-safe HTML: no script, style, iframe, form, image or event handler; links http(s)
    or mailto only, opening no context of ours."""
    return nh3.clean(rich, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     clean_content_tags={"script", "style", "title", "head"}, strip_comments=True,
                     link_rel="noopener noreferrer nofollow")


def _html(rich: str, shown_text: str, history: int) -> str | None:
    if not rich:
        return None
    clean = sanitised(rich)
    if history:
        # The quoted history is folded in the text; in HTML, the whole body under a summary
        # would hide the new part too: show the text's new part, and the original folded.
        return (f"<p>{html.escape(shown_text).replace(chr(10), '<br>')}</p>"
                f"<details><summary>{html.escape(t('mail.original_html'))}</summary>{clean}</details>")
    return clean


def _text_of_html(rich: str) -> str:
    stripped = nh3.clean(re.sub(r"<(br|/p|/div|/li|/tr)\b[^>]*>", "\n", rich, flags=re.IGNORECASE), tags=set(),
                         clean_content_tags={"script", "style", "title", "head"})
    return html.unescape(re.sub(r"\n{3,}", "\n\n", stripped)).strip()


def automatic_reason(message: Message, envelope_sender: str, own_domain: str) -> str:
    """Why this is an automatic message, never to be answered by a machine: an auto-reply, a
    bounce (empty envelope sender, a delivery report), a list, or our own mail come back."""
    auto = _header(message, "Auto-Submitted").lower()
    if auto and auto != "no":
        return "reponse_auto"
    if any(_header(message, name) for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")):
        return "reponse_auto"
    if _header(message, "Precedence").lower() in ("bulk", "junk", "list", "auto_reply"):
        return "liste"
    if not envelope_sender or message.get_content_type() == "multipart/report":
        return "non_remise"
    if _header(message, LOOP_HEADER) or (_header(message, "List-Id") and own_domain in _header(message, "List-Id")):
        return "boucle"
    return ""

