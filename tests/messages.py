"""What a message shown to a person must be: a template of the French catalogue, fully rendered.

Used by the property tests: whatever was typed, the answer is one of the catalogue's messages
with its placeholders filled in (no ``{placeholder}`` left over, no traceback, nothing in
English slipped in by a library).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import cache

from maillage.i18n import catalogue

_LEFT_OVER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_.]*(?:[!:][^{}]*)?\}")


@dataclass(frozen=True)
class Rendered:
    key: str
    values: dict[str, str]  # placeholder → the text found in its place (first occurrence)


@cache
def _literal_braces(prefixes: tuple[str, ...]) -> frozenset[str]:
    """``{nom}`` written as ``{{nom}}`` in a message: a brace meant to be shown."""
    literal_texts = ("".join(literal + ("\x00" if field is not None else "")
                             for literal, field, _, _ in string.Formatter().parse(text))
                     for key, text in catalogue("fr").items() if key.startswith(prefixes))
    return frozenset(brace for text in literal_texts for brace in _LEFT_OVER.findall(text))


@cache
def _templates(prefixes: tuple[str, ...]) -> list[tuple[str, list[str], re.Pattern[str]]]:
    templates = []
    for key, text in catalogue("fr").items():
        if not key.startswith(prefixes):
            continue
        regex, fields = "", []
        for literal, field, _, _ in string.Formatter().parse(text):
            regex += re.escape(literal)
            if field is not None:
                regex += "(.*?)"
                fields.append(field)
        templates.append((key, fields, re.compile(regex, re.DOTALL)))
    return templates


def rendered_from(message: str, *prefixes: str) -> Rendered | None:
    """The catalogue message (among keys starting with ``prefixes``) that ``message`` renders."""
    for key, fields, pattern in _templates(prefixes):
        match = pattern.fullmatch(message)
        if match:
            values: dict[str, str] = {}
            for field, value in zip(fields, match.groups(), strict=True):
                values.setdefault(field, value)
            return Rendered(key, values)
    return None


def assert_french(message: str, *prefixes: str, typed: str = "", trailing_lines: bool = False) -> Rendered:
    """``message`` is a French catalogue message under ``prefixes``, rendered; ``typed`` is what
    the person wrote (a ``{…}`` there may be quoted back); ``trailing_lines``: lines may follow
    the message (a listing)."""
    assert message.strip(), "empty message"
    assert "Traceback" not in message or "Traceback" in typed, message
    for left in _LEFT_OVER.findall(message):
        assert left in typed or left in _literal_braces(prefixes), f"placeholder {left} left unformatted in {message!r}"
    found = rendered_from(message, *prefixes)
    if found is None and trailing_lines:
        head = message
        while found is None and "\n" in head:
            head = head.rpartition("\n")[0]
            found = rendered_from(head, *prefixes)
    assert found is not None, f"not a French message of the catalogue ({', '.join(prefixes)}): {message!r}"
    return found
