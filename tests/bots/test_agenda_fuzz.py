"""Whatever an agent types to @agenda, the answer is French or the thing is done: never a crash.

Property tests (hypothesis) over the whole dispatch, from the message text to the answer, on a
real SQLite database with the servers replaced by in-memory fakes (``offline_agenda.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from maillage.bots.agenda.bot import AgendaBot, agenda_commands
from maillage.bots.runtime.commands import help_message
from tests.bots.offline_agenda import OfflineAgenda
from tests.messages import assert_french

pytestmark = pytest.mark.usefixtures("in_french")

SUBCOMMANDS = sorted({name for sub in agenda_commands.subcommands for name in sub.names} | {"aide", "inconnue"})
WORDS = st.sampled_from([
    "1", "2", "99", "0", "-1", "n°1", "#2", "1e9", "demain", "9h", "25h", "le", "31", "février", "3/12/2027",
    "2027-03-28", "2h30", "tous", "les", "lundis", "jusqu'au", "pendant", "toute", "la", "journée", "série",
    "visio", "avec", "@bob:localhost", "@x", "semaine", "prochaine", "aucun", "15min", "veille17h", "8h",
    "..", "../x", "{0}", "{name}", "\x00", "\u202e", "é" * 300, "mois", "tout", "hier",
])
ARGUMENTS = st.lists(st.one_of(WORDS, st.text(max_size=20)), max_size=8).map(" ".join)
COMMANDS = st.builds(lambda root, word, rest: f"{root} {word} {rest}",
                     st.sampled_from(["!agenda", "!calendar", "!AGENDA"]), st.sampled_from(SUBCOMMANDS), ARGUMENTS)
HELP = {help_message(AgendaBot.title, AgendaBot.commands)[0], agenda_commands.help_for(None)}
_FOLDER = Path(tempfile.mkdtemp(prefix="agenda-fuzz-"))
AGENDA = OfflineAgenda(_FOLDER)


def _check(body: str) -> None:
    replies = AGENDA.dispatch("!agenda ajoute Base le 3/3/2027 10h", body)
    assert (replies and replies[0].startswith(("Ajouté", "Aucun"))) or replies, body
    for reply in replies[1:]:
        if reply in HELP or reply == "[fichier]" or reply.startswith("n°"):
            continue
        assert_french(reply, "agenda.", "bot.", typed=body, trailing_lines=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=COMMANDS)
@example(body="!agenda ajoute Réunion le 31 février 10h")
@example(body="!agenda déplace 1 à tous les lundis")
@example(body="!agenda annule 1 le 30 février")
@example(body="!agenda réserve 1")
@example(body="!agenda créneau 25h avec @x semaine prochaine")
@example(body="!agenda importe")
@example(body="!agenda export tout")
@example(body="!agenda rappels 0min")
@example(body="!agenda lier ../../autre")
@example(body="!agenda perso ")
def test_any_agenda_command_gets_a_french_answer_or_is_done(body: str) -> None:
    _check(body)
