"""Declarative bot commands, French first with English aliases.

A bot declares its root command (``!doc`` / ``!documents``) and subcommands with
their arguments; the ``help`` strings are the user documentation shown by
``!aide``. Parsing gives either a call or a short French error that says what
was expected, with an example.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from maillage.i18n import t

PREFIX = "!"


class CommandError(Exception):
    """A message for the person who typed the command (already translated)."""


_PILL = re.compile(r"""<a\s[^>]*href=["']https://matrix\.to/#/((?:@|%40)[^"'?/]+)[^"']*["'][^>]*>.*?</a>""",
                   re.S | re.I)
_REPLY_FALLBACK = re.compile(r"<mx-reply>.*?</mx-reply>", re.S | re.I)


def command_text(body: str, formatted: str | None) -> str:
    """What a command says. Element writes a mention as a pill: the plain body then holds the
    person's display name, the HTML body a matrix.to link with their id — the id is meant."""
    if not formatted or not re.search(r"matrix\.to/#/(@|%40)", formatted):
        return body
    text = _PILL.sub(lambda pill: unquote(pill.group(1)), _REPLY_FALLBACK.sub("", formatted))
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def user_id_of(word: str, server_name: str, invalid: str = "bot.user_invalid") -> str:
    """``@alice`` (an agent of this homeserver) or ``@alice:agglo.fr`` as a Matrix user id;
    CommandError with the message ``invalid`` when the word is not one."""
    user_id = word.rstrip(",;.:")
    if ":" not in user_id:
        user_id = f"{user_id}:{server_name}"
    localpart, _, server = user_id[1:].partition(":")
    if not user_id.startswith("@") or not localpart or not server or any(c.isspace() for c in user_id) \
            or len(user_id) > 255:
        raise CommandError(t(invalid, value=word[:60]))
    return user_id


@dataclass(frozen=True)
class Argument:
    name: str
    help: str
    required: bool = True
    rest: bool = False  # takes the rest of the line (names with spaces)
    # Turns the text into the handler's value, or raises CommandError saying what is expected.
    parse: Callable[[str], Any] | None = None


Handler = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Subcommand:
    names: tuple[str, ...]
    help: str
    example: str
    handler: Handler
    arguments: tuple[Argument, ...] = ()
    admin: bool = False  # only the room's admins may run it

    def usage(self, root: str) -> str:
        args = " ".join(f"<{a.name}>" if a.required else f"[{a.name}]" for a in self.arguments)
        return " ".join(part for part in (f"{PREFIX}{root}", *self.names[:1], args) if part)


@dataclass
class CommandSet:
    names: tuple[str, ...]  # French name first, then aliases
    help: str
    subcommands: list[Subcommand] = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.names[0]

    def subcommand(self, *names: str, help: str, example: str, arguments: tuple[Argument, ...] = (),
                   admin: bool = False) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.subcommands.append(Subcommand(names, help, example, handler, arguments, admin))
            return handler
        return register

    def matches(self, body: str) -> bool:
        word = body.strip().split(maxsplit=1)[0] if body.strip() else ""
        return word.startswith(PREFIX) and word[1:].lower() in self.names

    def command(self, *, help: str, example: str, arguments: tuple[Argument, ...] = (),
                admin: bool = False) -> Callable[[Handler], Handler]:
        """A command without subcommands (``!mes-tâches``): what follows its name is its arguments."""
        def register(handler: Handler) -> Handler:
            self.subcommands.append(Subcommand((), help, example, handler, arguments, admin))
            return handler
        return register

    @property
    def single(self) -> Subcommand | None:
        return self.subcommands[0] if len(self.subcommands) == 1 and not self.subcommands[0].names else None

    def parse(self, body: str) -> tuple[Subcommand, dict[str, Any]]:
        if self.single is not None:
            rest = body.strip().split(maxsplit=1)
            return self.single, self._arguments(self.single, rest[1] if len(rest) > 1 else "")
        words = body.strip().split(maxsplit=2)
        if len(words) < 2:
            raise CommandError(t("bot.missing_subcommand", root=self.root, choices=self._choices()))
        wanted = words[1].lower()
        sub = next((s for s in self.subcommands if wanted in s.names), None)
        if sub is None:
            raise CommandError(t("bot.unknown_subcommand", root=self.root, word=words[1][:40],
                                 choices=self._choices()))
        return sub, self._arguments(sub, words[2] if len(words) > 2 else "")

    def _arguments(self, sub: Subcommand, text: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        remaining = text.strip()
        for argument in sub.arguments:
            if argument.rest:
                value, remaining = remaining, ""
            else:
                value, _, remaining = remaining.partition(" ")
                remaining = remaining.strip()
            if not value and argument.required:
                raise CommandError(t("bot.missing_argument", name=argument.name, usage=sub.usage(self.root),
                                     example=sub.example))
            if value:
                values[argument.name] = argument.parse(value) if argument.parse else value
        if remaining:
            raise CommandError(t("bot.too_many_arguments", usage=sub.usage(self.root), example=sub.example))
        return values

    def _choices(self) -> str:
        return ", ".join(s.names[0] for s in self.subcommands)

    def help_for(self, word: str | None) -> str:
        """``!doc aide``: this command's help; ``!doc aide lier``: one subcommand's, with an example."""
        if self.single is not None:
            return t("bot.subcommand_help", usage=self.single.usage(self.root), help=self.single.help,
                     example=self.single.example, aliases=", ".join(PREFIX + name for name in self.names))
        if word:
            sub = next((s for s in self.subcommands if word.lower() in s.names), None)
            if sub is None:
                raise CommandError(t("bot.unknown_subcommand", root=self.root, word=word[:40],
                                     choices=self._choices()))
            aliases = ", ".join(sub.names)
            return t("bot.subcommand_help", usage=sub.usage(self.root), help=sub.help, example=sub.example,
                     aliases=aliases)
        lines = [f"{PREFIX}{self.root} — {self.help}"]
        lines += [f"  {usage} : {text}" for usage, text in self.help_lines()]
        return "\n".join(lines)

    def help_lines(self) -> list[tuple[str, str]]:
        return [(s.usage(self.root), s.help) for s in self.subcommands]


def help_message(title: str, sets: list[CommandSet]) -> tuple[str, str]:
    """Plain text and HTML versions of a bot's help."""
    plain = [title, ""]
    rich = [f"<p><strong>{html.escape(title)}</strong></p>"]
    for command_set in sets:
        aliases = ", ".join(PREFIX + name for name in command_set.names)
        plain.append(f"{aliases} — {command_set.help}")
        rich.append(f"<p><code>{html.escape(aliases)}</code> — {html.escape(command_set.help)}</p><ul>")
        for usage, text in command_set.help_lines():
            plain.append(f"  {usage} : {text}")
            rich.append(f"<li><code>{html.escape(usage)}</code> : {html.escape(text)}</li>")
        rich.append("</ul>")
    return "\n".join(plain), "".join(rich)


def reply_content(body: str, formatted: str | None, *, to_event: str,
                  thread_root: str | None) -> dict[str, Any]:
    """An m.notice answering ``to_event``: in its thread when it came in one."""
    content: dict[str, Any] = {"msgtype": "m.notice", "body": body}
    if formatted is not None:
        content |= {"format": "org.matrix.custom.html", "formatted_body": formatted}
    if thread_root:
        content["m.relates_to"] = {"rel_type": "m.thread", "event_id": thread_root, "is_falling_back": False,
                                   "m.in_reply_to": {"event_id": to_event}}
    else:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": to_event}}
    return content
