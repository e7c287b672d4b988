"""What ``!circuit lance`` says: the steps of a circuit, from the command or from a model.

``visa: @chef.urbanisme, avis: @juridique @finances (un), signature: @maire`` is three
steps run in order; the actors of one step act in parallel and the step is done when
all of them have acted (``tous``, the default) or any one (``un``). The same text
describes a model in the config (``[[circuits.modeles]]``), so what an agent types
and what an admin writes read alike.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from maillage.bots.runtime.commands import CommandError, user_id_of
from maillage.i18n import t

# The kinds of step, and the word that acts on each (✅ on its notice does the same).
KINDS = {"visa": "visa", "review": "visa", "avis": "avis", "opinion": "avis", "signature": "signature",
         "sign": "signature"}
ACTION_OF_KIND = {"visa": "vise", "avis": "vise", "signature": "signe"}
MODES = {"tous": "tous", "all": "tous", "un": "un", "une": "un", "any": "un", "one": "un"}
OPTIONS = {"modele": "modele", "model": "modele", "echeance": "echeance", "deadline": "echeance"}
MAX_STEPS, MAX_ACTORS = 10, 20

_CLAUSE = re.compile(r"(?<![\w@.])([^\W\d_]+)\s*:", re.UNICODE)


@dataclass(frozen=True)
class Step:
    kind: str  # visa, avis, signature
    actors: tuple[str, ...]
    mode: str = "tous"  # tous: every actor; un: the first one to act

    def spoken(self) -> str:
        """« avis (un) : @juridique:…, @finances:… »."""
        mode = f" ({self.mode})" if len(self.actors) > 1 else ""
        return f"{self.kind}{mode} : {', '.join(self.actors)}"


@dataclass(frozen=True)
class Request:
    document: str
    steps: tuple[Step, ...]
    model: str | None
    deadline: str | None  # as typed; read by the caller, which knows today's date


def fold(word: str) -> str:
    return unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode().lower()


def clauses(text: str) -> list[tuple[str, str]]:
    """``visa: @a, avis: @b`` as [("visa", "@a"), ("avis", "@b")]; a word before the first
    clause, or an unknown clause word, is an error naming it."""
    found = [match for match in _CLAUSE.finditer(text) if fold(match.group(1)) in KINDS | OPTIONS]
    if not found or text[:found[0].start()].strip(" ,;"):
        raise CommandError(t("circuit.steps_syntax"))
    parts = []
    for match, following in zip(found, [*found[1:], None], strict=True):
        end = following.start() if following else len(text)
        parts.append((fold(match.group(1)), text[match.end():end].strip(" ,;")))
    return parts


def read_step(kind: str, value: str, server_name: str) -> Step:
    words = value.replace(",", " ").split()
    mode = "tous"
    if words and fold(words[-1].strip("()")) in MODES:
        mode = MODES[fold(words.pop().strip("()"))]
    if not words:
        raise CommandError(t("circuit.step_without_actor", kind=KINDS[kind]))
    actors: list[str] = []
    for word in words:
        if not word.startswith("@"):
            raise CommandError(t("circuit.actor_invalid", value=word[:60]))
        user_id = user_id_of(word, server_name, "circuit.actor_invalid")
        if user_id not in actors:
            actors.append(user_id)
    if len(actors) > MAX_ACTORS:
        raise CommandError(t("circuit.too_many_actors", count=MAX_ACTORS))
    return Step(KINDS[kind], tuple(actors), mode)


def read_steps(text: str, server_name: str) -> tuple[Step, ...]:
    """The steps alone (a model in the config): no document, no option."""
    steps = []
    for word, value in clauses(text):
        if word not in KINDS:
            raise CommandError(t("circuit.steps_syntax"))
        steps.append(read_step(word, value, server_name))
    return _checked(steps)


def read_request(text: str, server_name: str) -> Request:
    """``<document> <steps or modèle: x> [échéance: <date>]``."""
    document, _, rest = text.strip().partition(" ")
    if not document or (document.endswith(":") and fold(document[:-1]) in KINDS | OPTIONS):
        raise CommandError(t("circuit.document_missing"))
    steps: list[Step] = []
    options: dict[str, str] = {}
    for word, value in clauses(rest):
        if word in KINDS:
            steps.append(read_step(word, value, server_name))
        elif word in options or not value:
            raise CommandError(t("circuit.option_once", option=word))
        else:
            options[OPTIONS[word]] = value
    if "modele" in options and steps:
        raise CommandError(t("circuit.model_or_steps"))
    if "modele" not in options:
        _checked(steps)
    return Request(document, tuple(steps), options.get("modele"), options.get("echeance"))


def _checked(steps: list[Step]) -> tuple[Step, ...]:
    if not steps:
        raise CommandError(t("circuit.steps_syntax"))
    if len(steps) > MAX_STEPS:
        raise CommandError(t("circuit.too_many_steps", count=MAX_STEPS))
    return tuple(steps)
