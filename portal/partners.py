"""Partners from the portal: the partner homeservers (federation allowlist) and the external
accounts (partners' staff, citizens) with their last day.

The allowlist lives in ``maillage.toml``, as the ``maillage partenaire`` command keeps it:
the portal edits it the same way (comments kept, the whole file validated before it is
written) and asks the launcher to apply it (Synapse restarts with it, a few seconds).

External accounts are Synapse accounts of type ``externe`` (the access-rules module limits
them: no room creation, no power, only partner and public rooms, only the people they share a
room with). Their last days are published to a file the module reads again when it changes,
so making or closing one needs no restart; after its last day (Paris) the account can
neither sign in nor act.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select

from maillage.config import Config, ConfigError, ServerName, load_config
from maillage.i18n import t
from maillage.portal.db import Database, ExternalAccount, audit
from maillage.portal.errors import OrganisationError
from maillage.portal.idp_dev import first_password
from maillage.secretstore import write_private
from maillage.synapse_admin import AdminApiError, SynapseAdmin

EXTERNAL_TYPE = "externe"
KINDS = ("partenaire", "administre")
LONGEST_ACCESS_DAYS = 366  # an external account is renewed at least once a year
LOCALPART = re.compile(r"[a-z0-9][a-z0-9._-]{1,60}")


def published_externals(data_dir: Path) -> Path:
    """The file the homeserver's access-rules module reads: {user ID: last day}."""
    return data_dir / "acces-externes" / "externes.json"


@dataclass(frozen=True)
class NewExternal:
    localpart: str
    display_name: str
    email: str
    organisation: str
    kind: str
    last_day: str  # as typed: checked here


@dataclass(frozen=True)
class Applied:
    """What became of a change of the allowlist: applied now, at the next start, or refused."""

    message: str
    failed: bool = False


class Partners:
    def __init__(self, config: Config, database: Database,
                 synapse: Callable[[], AbstractAsyncContextManager[SynapseAdmin]]) -> None:
        self.config, self.database, self.synapse = config, database, synapse
        self.zone = ZoneInfo(config.collectivite.fuseau_horaire)
        self._config_lock = asyncio.Lock()

    def today(self) -> date:
        return datetime.now(self.zone).date()

    # --- partner homeservers -------------------------------------------------------------

    def servers(self) -> tuple[list[str], bool]:
        """(the partner servers, whether federation is open to all), as the file says now."""
        current = load_config(self.config.source).federation
        return list(current.partenaires), current.ouverte

    async def change_server(self, actor: str, server: str, *, add: bool) -> Applied:
        from maillage.deploy import launcher
        from maillage.deploy.partners import PartnerError, change_partners

        server = server.strip().lower()
        try:
            TypeAdapter(ServerName).validate_python(server)
        except ValidationError:
            raise OrganisationError(t("portal.partner_invalid"), "serveur") from None
        if add and server == self.config.collectivite.nom_serveur:
            raise OrganisationError(t("portal.partner_is_us"), "serveur")
        async with self._config_lock:
            before, _ = self.servers()
            try:
                updated = await asyncio.to_thread(change_partners, self.config.source,
                                                  add=server if add else None, remove=None if add else server)
            except PartnerError as exc:
                raise OrganisationError(str(exc), "serveur") from None
            except ConfigError as exc:  # what else the file lacks for it (a TLS certificate): said
                raise OrganisationError(t("portal.partner_config_refused", detail=" ".join(exc.problems)),
                                        "serveur") from None
            async with self.database.session() as session:
                audit(session, actor, "partenaire.ajout" if add else "partenaire.retrait", server,
                      before={"partenaires": before}, after={"partenaires": list(updated.federation.partenaires)})
                await session.commit()
            said = io.StringIO()
            if not launcher.is_running(updated):
                return Applied(t("portal.partner_next_start"))
            code = await asyncio.to_thread(launcher.reload, updated, out=said)
        told = said.getvalue().strip().splitlines()
        if code != launcher.EXIT_OK:
            return Applied(t("portal.partner_reload_failed", detail=told[-1] if told else "?"), failed=True)
        return Applied(told[-1] if told else t("portal.partner_next_start"))

    # --- external accounts ---------------------------------------------------------------

    async def externals(self) -> list[ExternalAccount]:
        async with self.database.session() as session:
            return list((await session.execute(select(ExternalAccount).order_by(ExternalAccount.last_day.desc(),
                                                                                ExternalAccount.id))).scalars())

    def last_day(self, typed: str, field: str = "fin") -> date:
        try:
            day = date.fromisoformat(typed.strip())
        except ValueError:
            raise OrganisationError(t("portal.external_day_invalid"), field) from None
        if day < self.today():
            raise OrganisationError(t("portal.external_day_past"), field)
        if day > self.today() + timedelta(days=LONGEST_ACCESS_DAYS):
            raise OrganisationError(t("portal.external_day_too_far", days=LONGEST_ACCESS_DAYS), field)
        return day

    def checked(self, new: NewExternal) -> tuple[NewExternal, date]:
        localpart = new.localpart.strip().lower()
        if not LOCALPART.fullmatch(localpart):
            raise OrganisationError(t("portal.external_localpart_invalid"), "identifiant")
        name = " ".join(new.display_name.split())
        if not 2 <= len(name) <= 100:
            raise OrganisationError(t("portal.external_name_invalid"), "nom")
        email = new.email.strip().lower()
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise OrganisationError(t("portal.external_email_invalid"), "email")
        if new.kind not in KINDS:
            raise OrganisationError(t("portal.external_kind_invalid"), "type")
        organisation = " ".join(new.organisation.split())[:200]
        return NewExternal(localpart, name, email, organisation, new.kind, new.last_day), self.last_day(new.last_day)

    async def create_external(self, actor: str, new: NewExternal) -> tuple[str, str]:
        """(the account, its first password, shown once)."""
        new, last_day = self.checked(new)
        user_id = f"@{new.localpart}:{self.config.collectivite.nom_serveur}"
        password = first_password()
        try:
            async with self.synapse() as admin:
                await self._make_external(admin, actor, user_id, new, last_day, password)
        except AdminApiError:
            raise OrganisationError(t("portal.external_failed")) from None
        return user_id, password

    async def _make_external(self, admin: SynapseAdmin, actor: str, user_id: str, new: NewExternal,
                             last_day: date, password: str) -> None:
        if await admin.user(user_id) is not None:
            raise OrganisationError(t("portal.external_taken", user_id=user_id), "identifiant")
        # Its last day published before the account exists: never a moment without its limit. A
        # row whose account was never made (Synapse away, a crash) is taken over by the retry.
        async with self.database.session() as session:
            row = (await session.execute(select(ExternalAccount).where(ExternalAccount.user_id == user_id))
                   ).scalar_one_or_none()
            if row is None:
                row = ExternalAccount(user_id=user_id, created_by=actor)
                session.add(row)
            row.display_name, row.email, row.organisation = new.display_name, new.email, new.organisation
            row.kind, row.last_day = new.kind, last_day.isoformat()
            audit(session, actor, "externe.creation", user_id,
                  after={"nom": new.display_name, "organisme": new.organisation, "type": new.kind,
                         "dernier_jour": last_day.isoformat()})
            await session.commit()
        await self.publish()
        await admin.put_user(user_id, password=password, displayname=new.display_name, user_type=EXTERNAL_TYPE,
                             threepids=[{"medium": "email", "address": new.email}] if new.email else None)

    async def set_last_day(self, actor: str, user_id: str, typed: str | None) -> None:
        """A new last day (``typed``), or closed now (``None``: yesterday was the last)."""
        day = self.today() - timedelta(days=1) if typed is None else self.last_day(typed)
        async with self.database.session() as session:
            account = (await session.execute(select(ExternalAccount).where(ExternalAccount.user_id == user_id))
                       ).scalar_one_or_none()
            if account is None:
                raise OrganisationError(t("portal.external_unknown"))
            before = account.last_day
            account.last_day = day.isoformat()
            audit(session, actor, "externe.cloture" if typed is None else "externe.echeance", user_id,
                  before={"dernier_jour": before}, after={"dernier_jour": day.isoformat()})
            await session.commit()
        await self.publish()

    async def publish(self) -> None:
        """Every external account's last day, for the homeserver (rewritten whole, atomically)."""
        async with self.database.session() as session:
            rows = (await session.execute(select(ExternalAccount.user_id, ExternalAccount.last_day))).all()
        path = published_externals(self.config.data_dir)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        await asyncio.to_thread(write_private, path, json.dumps({user_id: day for user_id, day in rows}, indent=1))
