"""Agents' access to the DAV servers: rights by role, app passwords, published to the servers.

The portal's database is the truth; ``publish`` writes what Radicale and WsgiDAV need
(``maillage.deploy.dav_access``) after every change and at every start, so a change cut
short by a crash (committed, not yet published) is published at the next start.

Rights by role, on the agent's own service and on the others:

==========  ==========================  ===========================  ==========
role        own folder, calendar, tasks  other services               Archives
==========  ==========================  ===========================  ==========
agent       read and write              —                            —
chef        read and write              —                            —
élu         read                        —                            —
direction   read and write              read                         read
admin       read and write              read and write               read
==========  ==========================  ===========================  ==========
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select

from maillage.config import Config
from maillage.deploy.dav_access import Account, Right, digest, publish_agents, strongest
from maillage.i18n import t
from maillage.portal.db import AccessRequest, Agent, AppPassword, Database, Service, audit, now_ms
from maillage.portal.errors import OrganisationError

ARCHIVES = "Archives"
# role: (own service, other services, archives)
RIGHTS_OF_ROLE: dict[str, tuple[Right, Right, Right]] = {
    "agent": ("rw", "", ""),
    "chef": ("rw", "", ""),
    "elu": ("r", "", ""),
    "direction": ("rw", "r", "r"),
    "admin": ("rw", "rw", "r"),
}
MAX_APP_PASSWORDS = 20
# No 0/O, 1/l/I: read aloud or copied from a phone's screen without mistakes.
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def dav_login(user_id: str) -> str:
    """An agent's login on the DAV servers: their Matrix localpart (« marie.dupont »)."""
    return user_id[1:].split(":", 1)[0]


def new_app_password() -> str:
    """Five groups of five (125 bits), like the app passwords of Nextcloud or Google."""
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(5)) for _ in range(5))


def account_rights(role: str, service_key: str | None) -> tuple[dict[str, Right], dict[str, Right]]:
    """(folders, calendars) an agent of ``role`` in ``service_key`` reads or writes."""
    own, others, archives = RIGHTS_OF_ROLE.get(role, ("", "", ""))
    folders: dict[str, Right] = {}
    calendars: dict[str, Right] = {}
    if others:
        folders["*"] = calendars["*"] = others
    if archives:
        folders[ARCHIVES] = archives
    if service_key and own:
        folders[service_key] = own
        calendars[service_key] = calendars[f"{service_key}-taches"] = own
    return folders, calendars


@dataclass(frozen=True)
class MadePassword:
    name: str
    secret: str  # shown once, never stored


class DavAccess:
    def __init__(self, config: Config, database: Database) -> None:
        self.config, self.database = config, database
        self._publishing = asyncio.Lock()

    async def publish(self) -> None:
        """Every active agent with an app password, with their rights, to the DAV servers."""
        async with self._publishing:
            accounts = await self.accounts()
            await asyncio.to_thread(publish_agents, self.config.data_dir, accounts)

    async def accounts(self) -> dict[str, Account]:
        """What the DAV servers should know: each agent's app passwords and rights."""
        async with self.database.session() as session:
            rows = (await session.execute(
                select(Agent, Service.key, AppPassword.token_hash)
                .join(AppPassword, AppPassword.agent_id == Agent.id)
                .outerjoin(Service, (Service.id == Agent.service_id) & Service.archived.is_(False))
                .where(Agent.active.is_(True), AppPassword.revoked_at.is_(None)))).all()
            accounts: dict[str, Account] = {}
            for agent, service_key, token_hash in rows:
                login = dav_login(agent.user_id)
                known = accounts.get(login)
                if known is None:
                    folders, calendars = account_rights(agent.role, service_key)
                    accounts[login] = Account((token_hash,), folders, calendars)
                else:
                    accounts[login] = Account((*known.digests, token_hash), known.folders, known.calendars)
            grants = (await session.execute(
                select(Agent.user_id, Service.key, AccessRequest.resource, AccessRequest.right)
                .join(Agent, Agent.id == AccessRequest.agent_id).join(Service, Service.id == AccessRequest.service_id)
                .where(AccessRequest.state == "accordee", AccessRequest.resource.in_(("dossier", "agenda")),
                       Agent.active.is_(True), Service.archived.is_(False)))).tuples().all()
            for user_id, key, resource, right in grants:  # access requests granted, until they end
                account = accounts.get(dav_login(user_id))
                if account is None:
                    continue
                names = [key] if resource == "dossier" else [key, f"{key}-taches"]
                rights = account.folders if resource == "dossier" else account.calendars
                for name in names:
                    rights[name] = strongest(rights.get(name, ""), right)  # type: ignore[arg-type]
        return accounts

    async def passwords(self, agent: Agent) -> list[AppPassword]:
        async with self.database.session() as session:
            return list((await session.execute(
                select(AppPassword).where(AppPassword.agent_id == agent.id, AppPassword.revoked_at.is_(None))
                .order_by(AppPassword.created_at))).scalars())

    async def make_password(self, agent: Agent, name: str) -> MadePassword:
        name = " ".join(name.split())
        if not 2 <= len(name) <= 60:
            raise OrganisationError(t("portal.app_password_name_invalid"), "nom")
        secret = new_app_password()
        async with self.database.session() as session:
            active = await session.scalar(select(func.count()).select_from(AppPassword).where(
                AppPassword.agent_id == agent.id, AppPassword.revoked_at.is_(None)))
            if (active or 0) >= MAX_APP_PASSWORDS:
                raise OrganisationError(t("portal.app_password_too_many", limit=MAX_APP_PASSWORDS), "nom")
            session.add(AppPassword(agent_id=agent.id, name=name, token_hash=digest(secret)))
            audit(session, agent.email, "mot_de_passe_application.creation", agent.user_id, after={"nom": name})
            await session.commit()
        await self.publish()
        return MadePassword(name, secret)

    async def revoke_password(self, agent: Agent, password_id: int) -> bool:
        """False if there is no such password of this agent's still valid."""
        async with self.database.session() as session:
            found = await session.get(AppPassword, password_id)
            if found is None or found.agent_id != agent.id or found.revoked_at is not None:
                return False
            found.revoked_at = now_ms()
            audit(session, agent.email, "mot_de_passe_application.revocation", agent.user_id,
                  before={"nom": found.name})
            await session.commit()
        await self.publish()
        return True
