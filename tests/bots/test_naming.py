"""The naming convention: what agents will see in the shared folder."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maillage.bots.documents.bot import normalise_folder
from maillage.bots.documents.naming import base_of, stored_name, with_version
from maillage.bots.runtime.commands import CommandError

PATTERN = "{date}_{service}_{nom}"


def _ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("Europe/Paris")).timestamp() * 1000)


def name(original: str, when: int = _ms(2026, 11, 22, 10, 0)) -> str:
    return stored_name(original, pattern=PATTERN, sent_at_ms=when, service="Urbanisme",
                       timezone="Europe/Paris").name


def test_the_default_convention() -> None:
    assert name("Permis Construire Dupont.PDF") == "2026-11-22_urbanisme_permis-construire-dupont.pdf"
    assert name("Délibération n°12 — école.odt") == "2026-11-22_urbanisme_deliberation-n12-ecole.odt"


def test_the_date_is_the_day_in_paris() -> None:
    # 23:30 in Paris on 22 November is already 22:30 UTC; 00:30 on the 23rd is 23:30 UTC on the 22nd
    assert name("a.pdf", _ms(2026, 11, 23, 0, 30)).startswith("2026-11-23_")
    assert name("a.pdf", _ms(2026, 7, 14, 23, 30)).startswith("2026-07-14_")


def test_control_characters_reserved_and_overlong_names_are_handled() -> None:
    assert name("plan\x07\x1b.pdf") == "2026-11-22_urbanisme_plan.pdf"
    reserved = stored_name("CON.txt", pattern=PATTERN, sent_at_ms=_ms(2026, 11, 22), service="u",
                           timezone="Europe/Paris")
    assert reserved.reserved and reserved.name.endswith("_con-document.txt")
    long = stored_name("x" * 300 + ".pdf", pattern=PATTERN, sent_at_ms=_ms(2026, 11, 22), service="u",
                       timezone="Europe/Paris")
    assert long.shortened and len(long.name) < 120
    assert name("....") == "2026-11-22_urbanisme_document"
    assert name("../../etc/passwd") == "2026-11-22_urbanisme_passwd"


def test_versions() -> None:
    assert with_version("a.pdf", 1) == "a.pdf"
    assert with_version("a.pdf", 3) == "a_v3.pdf"
    assert base_of("a_v3.pdf") == ("a.pdf", 3)
    assert base_of("a.pdf") == ("a.pdf", 1)
    assert with_version("notes", 2) == "notes_v2"


@given(st.text(min_size=1, max_size=400))
def test_any_original_name_gives_a_safe_single_file_name(original: str) -> None:
    result = name(original)
    assert "/" not in result and "\\" not in result and ".." not in result.replace("...", "")
    assert result.isascii() and len(result) < 140
    assert all(c.isalnum() or c in "-_." for c in result)


@pytest.mark.parametrize("folder", ["../x", "/etc", "a/../../b", "a%2Fb", "a\\b", "", "x" * 201, "a/\x00b"])
def test_folders_outside_the_tree_are_refused(folder: str) -> None:
    with pytest.raises(CommandError):
        normalise_folder(folder)


def test_folders_are_normalised() -> None:
    assert normalise_folder("Urbanisme/Permis de Construire/") == "urbanisme/permis-de-construire"
    assert normalise_folder("./budget_2027") == "budget_2027"
