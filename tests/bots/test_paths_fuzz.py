"""@documents never reaches outside the room's folder, whatever is typed or put in room state.

Property tests (hypothesis) over folder normalisation (``!doc lier``), name resolution (every
name a command takes), the URL the WebDAV client builds from it, the names documents are
filed under, and the whole dispatch of a command with the servers replaced by in-memory fakes
(``tests/bots/offline.py``): every path the bot asks the WebDAV server about is inside the
room's folder (only its parent folders are looked at, one level each, to refuse a symbolic
link on the way), and nothing outside it changes.
"""

from __future__ import annotations

import posixpath
import unicodedata
from typing import Any, cast
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from maillage.bots.documents.bot import normalise_folder
from maillage.bots.documents.library import resolve
from maillage.bots.documents.naming import stored_name
from maillage.bots.documents.webdav import WebDav
from maillage.bots.runtime.commands import CommandError
from tests.bots.offline import FOLDER, dispatch, offline_bot
from tests.messages import assert_french

SETTINGS = settings(max_examples=400, deadline=None)

HOSTILE = [
    "..", "../x", "a/../../b", "%2e%2e", "%2e%2e/x", "%2E%2E%2F", "%252e%252e", "\\..\\", "..\\x", "\x00",
    "a\x00b", "／..", "．．", "．．／．．／x", "a/．．/b", "\u2025", "\u202e..", "..\u200f", "\u200b..", "\u202e",
    "/etc/passwd", "//x", "./../x", "a/./b", "...", "a" * 5000, "é" * 300, "a/" * 150 + "b", "~", "~/x",
    "C:\\x", "a\nb", "a\rb", "\u2028", "\ufeff..", "\U0001f4c4.pdf", ".corbeille", ".corbeille/ancien.pdf",
]
PATHS = st.one_of(
    st.text(max_size=120),
    st.sampled_from(HOSTILE),
    st.lists(st.one_of(st.sampled_from(["..", ".", "", "a", "%2e%2e", "．．", "\\..", "plan.pdf"]),
                       st.text(max_size=8)), max_size=6).map("/".join),
)


pytestmark = pytest.mark.usefixtures("in_french")


def assert_plain_relative(path: str) -> None:
    """A relative path of plain parts: nothing a server, a URL parser or a file system could
    read as a way up or elsewhere, even after decoding or Unicode normalisation."""
    assert path and not path.startswith("/"), path
    for form in {path, unquote(path), unicodedata.normalize("NFKC", path), unicodedata.normalize("NFKD", path)}:
        assert "\\" not in form and "%" not in form, path
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in form), path
        parts = form.rstrip("/").split("/")
        assert all(part not in ("", ".", "..") for part in parts), path
    assert posixpath.normpath(path) == path.rstrip("/"), path


def assert_inside(path: str, folder: str) -> None:
    assert_plain_relative(path)
    assert path.rstrip("/") == folder or path.startswith(folder + "/"), f"{path} is outside {folder}"


@SETTINGS
@given(raw=PATHS)
@example(raw="a/../../b")
@example(raw="．．")
@example(raw="Urbanisme/Permis de Construire")
def test_a_folder_is_normalised_inside_the_tree_or_refused(raw: str) -> None:
    try:
        folder = normalise_folder(raw)
    except CommandError as error:
        assert assert_french(str(error), "doc.", typed=raw).key == "doc.folder_invalid"
        return
    assert_plain_relative(folder)
    assert normalise_folder(folder) == folder
    assert all(part.isascii() and part[0].isalnum() for part in folder.split("/")), folder


@SETTINGS
@given(name=PATHS)
@example(name="sous/annexe.pdf")
def test_a_name_resolves_inside_the_room_folder_or_is_refused(name: str) -> None:
    try:
        path = resolve(FOLDER, name)
    except CommandError as error:
        assert assert_french(str(error), "doc.", typed=name).key == "doc.name_invalid"
        return
    assert_inside(path, FOLDER)
    assert path != FOLDER
    # and the URL the WebDAV client requests stays there once the HTTP client normalised it
    client = cast(Any, type("Client", (), {"base_url": "https://cloud.example.fr/remote.php/dav/files/maillage/"}))
    url = httpx.URL(WebDav.url(client, path))
    assert url.host == "cloud.example.fr"
    assert unquote(url.path).startswith(f"/remote.php/dav/files/maillage/{FOLDER}/"), url


@SETTINGS
@given(original=st.one_of(st.text(max_size=200), st.sampled_from(HOSTILE)),
       service=st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE)))
@example(original="../../etc/passwd", service="..")
@example(original="．．", service="．．")
def test_a_filed_document_gets_one_plain_name(original: str, service: str) -> None:
    named = stored_name(original, pattern="{date}_{service}_{nom}", sent_at_ms=1_795_000_000_000,
                        service=service, timezone="Europe/Paris").name
    assert "/" not in named
    assert_plain_relative(named)
    assert not named.startswith(".")


SUBCOMMANDS = ["liste", "infos", "versions", "envoie", "supprime", "restaure", "cherche", "lier", "dossier", "lien",
               "délier"]
_OUTSIDE = {"urbanisme/autre-salon/secret.pdf", "direction/confidentiel.pdf", "racine.txt"}


@st.composite
def commands(draw: st.DrawFn) -> str:
    sub = draw(st.sampled_from([*SUBCOMMANDS, "renomme"]))
    arguments = draw(st.lists(PATHS, min_size=1, max_size=2 if sub == "renomme" else 1))
    return f"!doc {sub} " + " ".join(arguments)


def _plain_folder(state: Any) -> str | None:
    """The folder of a binding's content as ``!doc lier`` would have written it, if it could."""
    folder = state.get("dossier") if isinstance(state, dict) else None
    if not isinstance(folder, str) or not folder:
        return None
    try:
        return normalise_folder(folder)
    except CommandError:
        return None


def _check_command(body: str, binding: Any = None) -> None:
    bot = offline_bot(binding)
    before = {path: dict(props) for path, props in bot.fake_dav.files.items() if path in _OUTSIDE}
    state_before = bot.fake_client.binding
    dispatch(bot, body)
    roots = [folder for state in (state_before, bot.fake_client.binding) if (folder := _plain_folder(state))]
    for method, path in bot.fake_dav.asked:
        ancestor = any(root.startswith(path.rstrip("/") + "/") for root in roots)
        if method == "entry" and ancestor:  # a folder above: is it a symbolic link?
            continue
        assert any(path.rstrip("/") == root or path.startswith(root + "/") for root in roots), \
            f"{body!r} (folder {binding!r}) made the bot ask for {method} {path!r}"
        assert_plain_relative(path)
    assert {path: props for path, props in bot.fake_dav.files.items() if path in _OUTSIDE} == before


@SETTINGS
@given(body=commands())
@example(body="!doc infos ../autre-salon/secret.pdf")
@example(body="!doc renomme ../autre-salon/secret.pdf secret")
@example(body="!doc envoie ．．/．．/direction/confidentiel.pdf")
@example(body="!doc restaure ../../../direction/confidentiel.pdf")
@example(body="!doc lier ../../direction")
def test_a_command_only_reaches_the_room_folder(body: str) -> None:
    _check_command(body)


BINDINGS = st.one_of(
    st.none(),
    st.fixed_dictionaries({"dossier": st.one_of(PATHS, st.integers(), st.lists(st.text(max_size=5)), st.none())}),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    st.text(max_size=10),
)


@SETTINGS
@given(binding=BINDINGS, body=commands())
@example(binding={"dossier": "urbanisme/permis/../../direction"}, body="!doc envoie confidentiel.pdf")
@example(binding={"dossier": "../.."}, body="!doc liste")
@example(binding={"dossier": "/direction"}, body="!doc infos confidentiel.pdf")
@example(binding={"dossier": "urbanisme/permis/"}, body="!doc liste")
def test_a_folder_put_in_room_state_by_hand_is_normalised_or_not_used(binding: Any, body: str) -> None:
    """Room state can be sent by any client, bypassing ``!doc lier``: a bound folder is used as
    ``!doc lier`` would have normalised it, or not at all."""
    _check_command(body, binding if binding is not None else {})


@pytest.mark.parametrize("folder", ["urbanisme/permis/../../direction", "../..", "/direction", "a\\..\\b",
                                    "%2e%2e/direction", "．．/direction", "urbanisme\x00"])
def test_a_folder_with_a_way_up_put_in_room_state_is_not_used(folder: str) -> None:
    bot = offline_bot({"dossier": folder})
    replies = dispatch(bot, "!doc liste")
    assert bot.fake_dav.asked == []
    assert assert_french(replies[0], "doc.").key == "doc.not_bound"


def test_a_folder_put_in_room_state_by_hand_is_used_normalised() -> None:
    bot = offline_bot({"dossier": "Urbanisme//Permis/"})
    dispatch(bot, "!doc infos plan.pdf")
    assert ("entry", "urbanisme/permis/plan.pdf") in bot.fake_dav.asked
