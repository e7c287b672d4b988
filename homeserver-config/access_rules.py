"""Synapse module enforcing Maillage's room access kinds and external accounts.

Loaded through Synapse's ``modules:`` config and written against the public
``ModuleApi`` only. What it can prevent, it prevents (events made on this
server: invites, joins, knocks, third-party invites, power levels, access kind
changes and redactions, and any event from an account of this server that no
longer qualifies for the room; the join and knock events this server makes for
a remote server, ``make_join`` and ``make_knock``; knocks arriving over
federation). A join crafted without ``make_join`` and invites made by another
server have no module hook before they are accepted: for rooms whose home
server is this one, such a member who does not qualify is removed at once
(``on_new_event``). See docs/acces.md.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from synapse.api.errors import Codes, SynapseError
from synapse.module_api import NOT_SPAM, ModuleApi
from synapse.module_api.errors import ConfigError

from maillage.homeserver.access_policy import (
    ACCESS_EVENT_TYPE,
    EXTERNAL_USER_TYPE,
    AccessKind,
    InvalidAccessKind,
    Member,
    Refusal,
    expiry_timestamp_ms,
    is_room_admin,
    kind_of_state_content,
    may_be_member_seen_from,
    parse_access_content,
    server_of,
)
from maillage.i18n import set_language, t

if TYPE_CHECKING:
    from synapse.events import EventBase
    from synapse.module_api import UserProfile
    from synapse.types import StateMap

logger = logging.getLogger(__name__)

MEMBERSHIPS_TO_CHECK = ("invite", "join", "knock")
SpamVerdict = Literal["NOT_SPAM"] | tuple[Codes, dict[str, Any]]


@dataclass(frozen=True)
class AccessRulesConfig:
    partners: frozenset[str] = frozenset()
    default_kind: AccessKind = AccessKind.INTERNE
    # External accounts named in maillage.toml, with their expiry (ms since epoch).
    externals: dict[str, int] = field(default_factory=dict)
    language: str = "fr"
    # The ones the portal makes: {user ID: last day}, a file it rewrites whole.
    externals_file: str = ""


class PublishedExternals:
    """The portal's external accounts, read again when the file changes (a stat at most once a
    second): making or closing one needs no restart. A file that cannot be read keeps what
    was read before, and says so in the log."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.known: dict[str, int] = {}
        self._signature: tuple[int, int] | None = None
        self._checked = float("-inf")

    def current(self) -> dict[str, int]:
        if self.path is None or time.monotonic() - self._checked < 1.0:
            return self.known
        self._checked = time.monotonic()
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self.known, self._signature = {}, None
            return self.known
        if (info.st_mtime_ns, info.st_size) != self._signature:
            try:
                read = json.loads(self.path.read_text("utf-8"))
                self.known = {str(user_id): expiry_timestamp_ms(date.fromisoformat(str(day)))
                              for user_id, day in read.items()}
                self._signature = (info.st_mtime_ns, info.st_size)
            except (OSError, ValueError, AttributeError):
                logger.warning("external accounts file %s unreadable; the previous list is kept", self.path)
        return self.known


class RoomAccessRules:
    def __init__(self, config: AccessRulesConfig, api: ModuleApi) -> None:
        self.config = config
        self.api = api
        self.server_name = api.server_name
        self.published = PublishedExternals(config.externals_file)
        set_language(config.language)
        api.register_third_party_rules_callbacks(
            check_event_allowed=self.check_event_allowed,
            on_create_room=self.on_create_room,
            check_threepid_can_be_invited=self.check_threepid_can_be_invited,
        )
        # Synapse calls on_new_event in every process (each worker fetches the event and the
        # room's state for it): the removals it makes, and their notice, are made by one process.
        if api.should_run_background_tasks():
            api.register_third_party_rules_callbacks(on_new_event=self.on_new_event)
        api.register_spam_checker_callbacks(
            user_may_create_room=self.user_may_create_room,
            check_username_for_spam=self.check_username_for_spam,
            check_login_for_spam=self.check_login_for_spam,
        )
        api.register_account_validity_callbacks(is_user_expired=self.is_user_expired)

    @staticmethod
    def parse_config(config: dict[str, Any]) -> AccessRulesConfig:
        partners = config.get("partenaires", [])
        if not isinstance(partners, list) or not all(isinstance(p, str) for p in partners):
            raise ConfigError("partenaires: a list of server names is expected")
        try:
            default_kind = AccessKind(config.get("acces_par_defaut", "interne"))
        except ValueError:
            raise ConfigError("acces_par_defaut: one of interne, partenaires, public") from None
        externals: dict[str, int] = {}
        for user_id, last_day in (config.get("externes") or {}).items():
            try:
                externals[user_id] = expiry_timestamp_ms(date.fromisoformat(str(last_day)))
            except ValueError:
                raise ConfigError(f"externes.{user_id}: a date YYYY-MM-DD is expected") from None
        return AccessRulesConfig(partners=frozenset(partners), default_kind=default_kind,
                                 externals=externals, language=str(config.get("langue", "fr")),
                                 externals_file=str(config.get("externes_fichier", "")))

    # --- who is who ------------------------------------------------------------

    async def is_external(self, user_id: str) -> bool:
        if not self.api.is_mine(user_id):
            return False
        if user_id in self.config.externals or user_id in self.published.current():
            return True
        info = await self.api.get_userinfo_by_id(user_id)
        return info is not None and info.user_type == EXTERNAL_USER_TYPE

    def is_expired(self, user_id: str) -> bool:
        expiry = self.config.externals.get(user_id, self.published.current().get(user_id))
        return expiry is not None and time.time() * 1000 >= expiry

    async def member(self, user_id: str) -> Member:
        return Member(user_id, external=await self.is_external(user_id), expired=self.is_expired(user_id))

    # --- room state ------------------------------------------------------------

    def room_kind(self, state: StateMap[EventBase]) -> AccessKind:
        """A redacted access event means ``interne``. A room of another server without
        one (a plain Synapse partner's) follows that server's rules: seen from here it is
        shared with partners, and only if its home server is one of ours."""
        event = state.get((ACCESS_EVENT_TYPE, ""))
        if event is None:
            home = self.home_server(state)
            return self.config.default_kind if home == self.server_name else AccessKind.PARTENAIRES
        return kind_of_state_content(event.content)

    @staticmethod
    def redacts_access_kind(event: EventBase, state: StateMap[EventBase]) -> bool:
        current = state.get((ACCESS_EVENT_TYPE, ""))
        return event.type == "m.room.redaction" and current is not None and event.redacts == current.event_id

    @staticmethod
    def creators(state: StateMap[EventBase]) -> set[str]:
        create = state.get(("m.room.create", ""))
        if create is None:
            return set()
        extra = create.content.get("additional_creators") or []
        return {create.sender, *[c for c in extra if isinstance(c, str)]}

    def home_server(self, state: StateMap[EventBase]) -> str:
        creators = self.creators(state)
        create = state.get(("m.room.create", ""))
        return server_of(create.sender) if create is not None else (
            server_of(next(iter(creators))) if creators else self.server_name)

    async def refusal(self, user_id: str, state: StateMap[EventBase],
                      kind: AccessKind | None = None) -> Refusal | None:
        """Why ``user_id`` may not be in the room (of ``kind``, by default its current one)."""
        return may_be_member_seen_from(await self.member(user_id), kind or self.room_kind(state),
                                       self.home_server(state), self.server_name, self.config.partners)

    async def sender_refusal(self, event: EventBase, state: StateMap[EventBase]) -> Refusal | None:
        """An account of this server acts in a room only while it qualifies for it: a member
        who no longer does (expired, turned external, the room closed and nobody left to
        remove them) cannot send, invite, change state or redact. Leaving is always possible;
        a join or knock is checked as such."""
        if not self.api.is_mine(event.sender) or event.type == "m.room.create":
            return None
        if event.type == "m.room.member" and event.state_key == event.sender:
            return None
        return await self.refusal(event.sender, state)

    # --- third-party rules callbacks --------------------------------------------

    async def check_event_allowed(self, event: EventBase,
                                  state: StateMap[EventBase]) -> tuple[bool, dict[str, Any] | None]:
        sender_refusal = await self.sender_refusal(event, state)
        if sender_refusal:
            raise SynapseError(403, t("acces.refus.expediteur", user=event.sender,
                                      reason=t(sender_refusal.key, **sender_refusal.values)), Codes.FORBIDDEN)
        if event.type == ACCESS_EVENT_TYPE:
            if event.get_state_key() != "":
                raise SynapseError(400, t("acces.cle_etat"), Codes.INVALID_PARAM)
            self._check_kind_change(event, state)
        elif self.redacts_access_kind(event, state):
            self._check_kind_change(event, state, AccessKind.INTERNE)  # a redacted kind means interne
        elif event.type == "m.room.member" and event.membership in MEMBERSHIPS_TO_CHECK:
            refusal = await self.refusal(event.state_key, state)
            if refusal:
                raise SynapseError(403, t(refusal.key, **refusal.values), Codes.FORBIDDEN)
        elif event.type == "m.room.third_party_invite":
            if self.room_kind(state) is AccessKind.INTERNE:
                raise SynapseError(403, t("acces.refus.invitation_tierce"), Codes.FORBIDDEN)
        elif event.type == "m.room.power_levels":
            await self._check_power_levels(event)
        return True, None

    def _check_kind_change(self, event: EventBase, state: StateMap[EventBase],
                           new_kind: AccessKind | None = None) -> None:
        """Opening a room further takes an admin of the room from its home server; a room
        must be encrypted for any kind but ``public``."""
        if new_kind is None:
            try:
                new_kind = parse_access_content(event.content)
            except InvalidAccessKind as exc:
                raise SynapseError(400, t("acces.type_invalide", value=str(exc)), Codes.INVALID_PARAM) from None
        current = state.get((ACCESS_EVENT_TYPE, ""))
        old_kind = self.room_kind(state) if current is not None else AccessKind.INTERNE
        if new_kind.openness > old_kind.openness:
            power = state.get(("m.room.power_levels", ""))
            levels = power.content if power is not None else {}
            if not is_room_admin(event.sender, self.creators(state), levels):
                raise SynapseError(403, t("acces.ouverture_reservee", kind=new_kind.value), Codes.FORBIDDEN)
            home = self.home_server(state)
            if server_of(event.sender) != home:
                raise SynapseError(403, t("acces.ouverture_origine", kind=new_kind.value, server=home),
                                   Codes.FORBIDDEN)
        if new_kind is not AccessKind.PUBLIC and ("m.room.encryption", "") not in state \
                and current is not None:
            raise SynapseError(400, t("acces.chiffrement_requis", kind=new_kind.value), Codes.FORBIDDEN)

    async def _check_power_levels(self, event: EventBase) -> None:
        for user_id, level in (event.content.get("users") or {}).items():
            if isinstance(level, int) and level > 0 and await self.is_external(user_id):
                raise SynapseError(403, t("acces.refus.pouvoir_externe", user=user_id), Codes.FORBIDDEN)

    async def on_create_room(self, requester: Any, request: dict[str, Any], is_admin: bool) -> None:
        """Every room gets an explicit kind; every non-public room is encrypted from creation."""
        initial_state: list[dict[str, Any]] = list(request.get("initial_state") or [])
        given = [e for e in initial_state if e.get("type") == ACCESS_EVENT_TYPE and e.get("state_key", "") == ""]
        if given:
            try:
                kind = parse_access_content(given[-1].get("content"))
            except InvalidAccessKind as exc:
                raise SynapseError(400, t("acces.type_invalide", value=str(exc)), Codes.INVALID_PARAM) from None
        else:
            kind = self.config.default_kind
        others = [e for e in initial_state if e not in given]
        encrypted = any(e.get("type") == "m.room.encryption" for e in others)
        if kind is not AccessKind.PUBLIC and not encrypted:
            others.insert(0, {"type": "m.room.encryption", "state_key": "",
                              "content": {"algorithm": "m.megolm.v1.aes-sha2"}})
        others.append({"type": ACCESS_EVENT_TYPE, "state_key": "", "content": {"acces": kind.value}})
        request["initial_state"] = others

    async def check_threepid_can_be_invited(self, medium: str, address: str,
                                            state: StateMap[EventBase]) -> bool:
        return self.room_kind(state) is not AccessKind.INTERNE

    async def on_new_event(self, event: EventBase, state: StateMap[EventBase]) -> None:
        """Remove members who do not qualify, in rooms whose home server is this one."""
        if self.home_server(state) != self.server_name:
            return
        redaction = self.redacts_access_kind(event, state)
        kind = AccessKind.INTERNE if redaction else None  # a redacted kind means interne
        if event.type == "m.room.member" and event.membership in MEMBERSHIPS_TO_CHECK:
            candidates = [event.state_key]
        elif (event.type == ACCESS_EVENT_TYPE and event.get_state_key() == "") or redaction:
            candidates = [key for (type_, key), member in state.items()
                          if type_ == "m.room.member" and member.membership in MEMBERSHIPS_TO_CHECK]
        else:
            return
        removed = []
        for user_id in candidates:
            refusal = await self.refusal(user_id, state, kind)
            if refusal is not None:
                await self._remove(event.room_id, user_id, state, t(refusal.key, **refusal.values))
                removed.append(user_id)
        if removed and kind is AccessKind.INTERNE:
            await self._notice(event.room_id, state, t("acces.avis_efface", users=", ".join(removed)))
        elif removed and event.type == ACCESS_EVENT_TYPE:
            await self._notice(event.room_id, state, t("acces.avis_retrait", kind=self.room_kind(state).value,
                                                       users=", ".join(removed)))

    def _local_admin(self, state: StateMap[EventBase]) -> str | None:
        power = state.get(("m.room.power_levels", ""))
        levels = power.content if power is not None else {}
        joined = [key for (kind, key), member in state.items()
                  if kind == "m.room.member" and member.membership == "join" and self.api.is_mine(key)]
        admins = [u for u in joined if is_room_admin(u, self.creators(state), levels)]
        return admins[0] if admins else None

    async def _remove(self, room_id: str, user_id: str, state: StateMap[EventBase], reason: str) -> None:
        sender = self._local_admin(state)
        if sender is None:
            logger.warning("No local admin in %s to remove %s", room_id, user_id)
            return
        try:
            await self.api.update_room_membership(sender, user_id, room_id, "leave", {"reason": reason})
        except Exception:  # a background removal must never break event handling
            logger.exception("Could not remove %s from %s", user_id, room_id)

    async def _notice(self, room_id: str, state: StateMap[EventBase], body: str) -> None:
        sender = self._local_admin(state)
        if sender is None:
            return
        try:
            await self.api.create_and_send_event_into_room({
                "type": "m.room.message", "room_id": room_id, "sender": sender,
                "content": {"msgtype": "m.notice", "body": body},
            })
        except Exception:
            logger.exception("Could not post the access notice in %s", room_id)

    # --- spam checker and account validity callbacks -----------------------------

    async def user_may_create_room(self, user_id: str) -> SpamVerdict:
        if await self.is_external(user_id):
            return Codes.FORBIDDEN, {"error": t("acces.refus.creation_externe")}
        return NOT_SPAM

    async def check_username_for_spam(self, profile: UserProfile, requester_id: str) -> bool:
        """An external account finds only the people it shares a room with."""
        if not await self.is_external(requester_id):
            return False
        return not await self._share_a_room(requester_id, profile["user_id"])

    async def _share_a_room(self, first: str, second: str) -> bool:
        def query(txn: Any) -> bool:
            txn.execute(
                "SELECT 1 FROM current_state_events AS a JOIN current_state_events AS b"
                " ON a.room_id = b.room_id"
                " WHERE a.type = 'm.room.member' AND a.state_key = ? AND a.membership = 'join'"
                " AND b.type = 'm.room.member' AND b.state_key = ? AND b.membership = 'join' LIMIT 1",
                (first, second),
            )
            return txn.fetchone() is not None

        return bool(await self.api.run_db_interaction("maillage_share_a_room", query))

    async def check_login_for_spam(self, user_id: str, *args: Any) -> SpamVerdict:
        if self.is_expired(user_id):
            return Codes.FORBIDDEN, {"error": t("acces.refus.connexion_expiree")}
        return NOT_SPAM

    async def is_user_expired(self, user_id: str) -> bool | None:
        return True if self.is_expired(user_id) else None
