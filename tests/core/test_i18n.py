"""French first, with a complete English catalogue."""

from __future__ import annotations

import string

import pytest

from maillage.i18n import LANGUAGES, catalogue, set_language, t


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_message_exists_in_every_language_with_the_same_placeholders() -> None:
    french = catalogue("fr")
    for language in LANGUAGES:
        other = catalogue(language)
        assert set(other) == set(french), f"keys differ in {language}.toml"
        for key, text in french.items():
            assert _placeholders(other[key]) == _placeholders(text), f"{language}: {key}"


def test_messages_follow_the_language_setting() -> None:
    set_language("en")
    try:
        assert t("up.ready") == "Maillage is ready."
    finally:
        set_language("fr")
    assert t("up.ready") == "Maillage est prêt."


def test_an_unknown_language_falls_back_to_french() -> None:
    set_language("de")
    assert t("up.ready") == "Maillage est prêt."


def test_an_unknown_key_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        t("n.existe.pas")
