"""Whatever an agent types, the bot answers in French or does what was asked: never a crash.

Property tests (hypothesis) over the command parser and over the whole dispatch of
@documents, from the message text to the answer, with the servers replaced by in-memory
fakes (``tests/bots/offline.py``): an exception escaping ``_dispatch`` is what the agent
would read as « la commande a échoué » and the log as a traceback.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from maillage.bots.documents.bot import DocumentsBot, documents_commands
from maillage.bots.runtime.commands import CommandError, help_message
from tests.bots.offline import dispatch, offline_bot
from tests.messages import assert_french

SETTINGS = settings(max_examples=400, deadline=None)

SUBCOMMAND_WORDS = sorted({name for sub in documents_commands.subcommands for name in sub.names}
                          | {"aide", "help", "AIDE", "Liste", "inconnue", ""})
SEPARATORS = st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", "\u3000", "\u2028", ""])
NASTY = st.sampled_from([
    "..", "../x", "a/../../b", "%2e%2e", "%2e%2e%2f", "\\..\\", "\x00", "／..", "．．", "．．／x",
    "\u202e..", "\u200f", "\u200b", "{name}", "{0}", "{{", "}", "«", "Traceback", "/etc/passwd",
    "plan.pdf", "sous/annexe.pdf", "sous", ".corbeille/ancien.pdf", "ancien.pdf", "x" * 5000,
])
ARGUMENTS = st.lists(st.one_of(st.text(max_size=40), NASTY), max_size=4).map(" ".join)


@st.composite
def commands(draw: st.DrawFn) -> str:
    """Mostly ``!doc <subcommand> <arguments>``, sometimes anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=300))
    root = draw(st.sampled_from(["!doc", "!documents", "!DOC", "!Doc", "!aide", "!help"]))
    word = draw(st.one_of(st.sampled_from(SUBCOMMAND_WORDS), st.text(max_size=20)))
    return root + draw(SEPARATORS) + word + draw(SEPARATORS) + draw(ARGUMENTS)


pytestmark = pytest.mark.usefixtures("in_french")


def _help_texts() -> set[str]:
    return {help_message(DocumentsBot.title, DocumentsBot.commands)[0], documents_commands.help_for(None)}


KNOWN_CASES = [
    "", "!doc", "!doc ", "!doc\x00", "!doc lier ..", "!doc lier ../x", "!doc lier a/../../b", "!doc lier %2e%2e",
    "!doc lier \\..\\", "!doc lier \x00", "!doc lier ／..", "!doc lier ．．", "!doc infos ../plan.pdf",
    "!doc infos ／..", "!doc infos ．．", "!doc envoie %2e%2e%2fdirection/confidentiel.pdf",
    "!doc liste ../../direction", "!doc liste \u202e..", "!doc renomme plan.pdf ..",
    "!doc renomme plan.pdf ../../x.pdf", "!doc renomme ../autre-salon/secret.pdf x",
    "!doc restaure ../../direction/confidentiel.pdf", "!doc supprime " + "a" * 10_000, "!doc " + "é" * 10_000,
    "!doc {root}", "!doc aide {name}", "!doc aide", "!doc help lier", "!doc aide inconnue", "!DOC LISTE",
    "!doc cherche \x00", "!doc cherche {0}", "!doc cherche " + "mot " * 2000, "!aide", "!help moi",
]


@SETTINGS
@given(body=commands())
@example(body="!doc \u3000lier\u3000..")
def test_the_parser_gives_a_call_or_a_french_error(body: str) -> None:
    if not documents_commands.matches(body):
        return
    try:
        sub, arguments = documents_commands.parse(body)
    except CommandError as error:
        assert_french(str(error), "bot.", typed=body)
        return
    assert sub in documents_commands.subcommands
    names = {argument.name for argument in sub.arguments}
    assert set(arguments) <= names
    assert all(a.name in arguments for a in sub.arguments if a.required)
    assert all(value.strip() for value in arguments.values())


@pytest.mark.parametrize("body", KNOWN_CASES)
def test_known_hostile_commands_get_a_french_answer(body: str) -> None:
    _check_dispatch(body)


@SETTINGS
@given(body=commands())
def test_any_message_gets_a_french_answer_or_is_done(body: str) -> None:
    _check_dispatch(body)


@SETTINGS
@given(word=st.one_of(st.text(max_size=60), NASTY))
def test_help_for_any_word_is_french(word: str) -> None:
    try:
        text = documents_commands.help_for(word)
    except CommandError as error:
        assert_french(str(error), "bot.", typed=word)
        return
    if text not in _help_texts():
        assert_french(text, "bot.", typed=word)


def _check_dispatch(body: str) -> None:
    bot = offline_bot()
    replies = dispatch(bot, body)  # raises if anything but a French answer would reach the agent
    helps = _help_texts()
    for reply in replies:
        if reply not in helps:
            assert_french(reply, "bot.", "doc.", "links.", typed=body, trailing_lines=True)
    first = body.split(maxsplit=1)[0].lower() if body.split() else ""
    if documents_commands.matches(body) or first in ("!aide", "!help"):
        assert replies or bot.sent, f"no answer to {body!r}"
