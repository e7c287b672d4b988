"""User-facing messages: French first, with an English catalogue.

Messages live in ``locales/<lang>.toml`` as ``key = "text with {placeholders}"``.
The language comes from the collectivité config (``collectivite.langue``) once it
is loaded, and before that from ``MAILLAGE_LANG``; French is the default.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from importlib import resources

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"

_current = os.environ.get("MAILLAGE_LANG", DEFAULT_LANGUAGE)


@cache
def catalogue(language: str) -> dict[str, str]:
    text = resources.files("maillage").joinpath(f"locales/{language}.toml").read_text("utf-8")
    return tomllib.loads(text)


def set_language(language: str) -> None:
    global _current
    _current = language if language in LANGUAGES else DEFAULT_LANGUAGE


def current_language() -> str:
    return _current if _current in LANGUAGES else DEFAULT_LANGUAGE


def t(key: str, /, **values: object) -> str:
    """The message ``key`` in the current language, French when it is missing."""
    messages = catalogue(current_language())
    text = messages.get(key) or catalogue(DEFAULT_LANGUAGE)[key]
    return text.format(**values)  # also without values: "{{" in a message is a brace
