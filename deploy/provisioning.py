"""The stack's own admin account, and the demo collectivité seeded on first start."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from icalendar import Todo

from maillage.bots.caldav.client import CalDav, CalDavError
from maillage.bots.documents.naming import slugify
from maillage.bots.projets.tasks import as_calendar, set_assignee, touch
from maillage.config import Config
from maillage.portal.idp_dev import first_password
from maillage.portal.organisation import bind_room
from maillage.secretstore import Secrets, load_secrets, update_secrets, write_private
from maillage.synapse_admin import (
    AdminApiError,
    SynapseAdmin,
    register_with_shared_secret,
)

ADMIN_LOCALPART = "maillage-admin"


async def ensure_admin_token(config: Config, stack_secrets: Secrets) -> str:
    """A working access token for the stack's admin account, creating the account once."""
    base = config.synapse_url
    if stack_secrets.admin_access_token:
        try:
            async with SynapseAdmin(base, stack_secrets.admin_access_token) as admin:
                await admin.whoami()
            return stack_secrets.admin_access_token
        except AdminApiError:
            pass  # token revoked: log in again below
    try:
        result = await register_with_shared_secret(
            base, stack_secrets.registration_shared_secret, ADMIN_LOCALPART,
            stack_secrets.admin_password, admin=True, displayname="Maillage (administration)",
        )
        token = str(result["access_token"])
    except AdminApiError as exc:
        if exc.errcode != "M_USER_IN_USE":
            raise
        token = await _password_login(base, ADMIN_LOCALPART, stack_secrets.admin_password)
    async with SynapseAdmin(base, token) as admin:
        # Provisioning creates rooms and accounts in bursts: never rate-limit it.
        await admin.override_ratelimit(await admin.whoami())
    update_secrets(config.data_dir, admin_access_token=token)
    return token


async def _password_login(base_url: str, localpart: str, password: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        response = await http.post("/_matrix/client/v3/login", json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
            "initial_device_display_name": "Maillage (provisionnement)",
        })
    if not response.is_success:
        raise AdminApiError("POST", "/_matrix/client/v3/login", response.status_code,
                            response.json().get("errcode", ""), "login refused")
    return str(response.json()["access_token"])


# --- the demo collectivité -----------------------------------------------------


@dataclass(frozen=True)
class DemoAgent:
    localpart: str
    displayname: str
    service: str
    head_of_service: bool = False


@dataclass(frozen=True)
class DemoService:
    key: str
    name: str
    rooms: tuple[str, ...]


@dataclass(frozen=True)
class DemoModel:
    services: tuple[DemoService, ...]
    agents: tuple[DemoAgent, ...]
    all_agents_room: str


DEMO_MODELS = {
    "commune": DemoModel(
        services=(
            DemoService("dg", "Direction générale", ("Direction générale — équipe", "Comité de direction")),
            DemoService("urbanisme", "Urbanisme", ("Urbanisme — équipe", "Urbanisme — permis de construire")),
            DemoService("st", "Services techniques",
                        ("Services techniques — équipe", "Services techniques — interventions voirie")),
        ),
        agents=(
            DemoAgent("claire.martin", "Claire Martin (DGS)", "dg", head_of_service=True),
            DemoAgent("thomas.bernard", "Thomas Bernard", "dg"),
            DemoAgent("karim.benali", "Karim Benali", "urbanisme", head_of_service=True),
            DemoAgent("sophie.durand", "Sophie Durand", "urbanisme"),
            DemoAgent("julien.moreau", "Julien Moreau", "st", head_of_service=True),
            DemoAgent("nadia.petit", "Nadia Petit", "st"),
        ),
        all_agents_room="Mairie — tous les agents",
    ),
    "intercommunalite": DemoModel(
        services=(
            DemoService("dg", "Direction générale", ("Direction générale — équipe",)),
            DemoService("mobilites", "Mobilités", ("Mobilités — équipe", "Mobilités — voirie intercommunale")),
        ),
        agents=(
            DemoAgent("helene.roux", "Hélène Roux (DGS)", "dg", head_of_service=True),
            DemoAgent("marc.lefebvre", "Marc Lefebvre", "mobilites", head_of_service=True),
            DemoAgent("ines.garnier", "Inès Garnier", "mobilites"),
        ),
        all_agents_room="Agglomération — tous les agents",
    ),
}
DEMO_AGENTS = DEMO_MODELS["commune"].agents


def demo_dir(config: Config) -> Path:
    return config.data_dir / "demo"


def demo_password() -> str:
    """Readable, and accepted by the homeserver's password policy."""
    return first_password()


def user_id(config: Config, localpart: str) -> str:
    return f"@{localpart}:{config.collectivite.nom_serveur}"


class DemoProgress:
    """What is done already: seeding is resumed, never repeated, after a failure."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        write_private(self.path, json.dumps(self.data, indent=2, ensure_ascii=False))


def demo_seeded(config: Config) -> bool:
    progress = DemoProgress(demo_dir(config) / "etat.json")
    return bool(progress.get("termine") and progress.get("agendas") and progress.get("projet"))


def demo_accounts(config: Config) -> list[dict[str, str]]:
    path = demo_dir(config) / "comptes.json"
    return list(json.loads(path.read_text())) if path.exists() else []


async def seed_demo(config: Config, admin_token: str) -> None:
    progress = DemoProgress(demo_dir(config) / "etat.json")
    model = DEMO_MODELS[config.demo.modele]
    if not progress.get("termine"):
        await _seed_rooms(config, model, progress, admin_token)
    if not progress.get("agendas"):  # added later: a collectivité seeded before gets them too
        await _seed_calendars(config, model, progress, admin_token)
    if not progress.get("projet"):  # the same
        await _seed_project(config, model, progress, admin_token)
    if config.courriel.active and not progress.get("courriel"):  # the same
        await _seed_mailbox(config, model, progress, admin_token)


async def _seed_mailbox(config: Config, model: DemoModel, progress: DemoProgress, admin_token: str) -> None:
    """The first service after the direction gets an address in its team room (« urbanisme@… »
    in the commune), so an email can be sent to it from the first minute."""
    service = next(s for s in model.services if s.key != "dg") if len(model.services) > 1 else model.services[0]
    room_id = str(progress.get(f"room:{service.key}:0"))
    async with SynapseAdmin(config.synapse_url, admin_token) as admin:
        await _bind_room(config, admin, progress, room_id, "courriel", "fr.maillage.courriel",
                         {"adresses": [service.key]})
    progress.set("courriel", True)


async def _seed_rooms(config: Config, model: DemoModel, progress: DemoProgress, admin_token: str) -> None:
    async with SynapseAdmin(config.synapse_url, admin_token) as admin:
        await _seed_agents(config, model, admin)
        all_agents = await _room(admin, progress, "room:tous", model.all_agents_room, None)
        for service in model.services:
            head = next(a for a in model.agents if a.service == service.key and a.head_of_service)
            space = await _room(admin, progress, f"space:{service.key}", service.name,
                                user_id(config, head.localpart), space=True)
            children = [await _room(admin, progress, f"room:{service.key}:{i}", name,
                                    user_id(config, head.localpart))
                        for i, name in enumerate(service.rooms)]
            for child in [*children, all_agents]:
                await admin.send_state(space, "m.space.child", child,
                                       {"via": [config.collectivite.nom_serveur]})
            for room_id, name in zip(children, service.rooms, strict=True):
                await _bind_room(config, admin, progress, room_id, "documents", "fr.maillage.documents",
                                 {"dossier": f"{service.key}/{_room_slug(name)}"})
            # The DGS is in every service's rooms: she signs what their circuits bring her.
            members = [a for a in model.agents if a.service == service.key or (a.service == "dg" and a.head_of_service)]
            for agent in members:
                for room in (space, *children):
                    await admin.force_join(room, user_id(config, agent.localpart))
        for agent in model.agents:
            await admin.force_join(all_agents, user_id(config, agent.localpart))
    progress.set("termine", True)


def _room_slug(name: str) -> str:
    return slugify(name.split("—")[-1]) or "documents"


async def _seed_calendars(config: Config, model: DemoModel, progress: DemoProgress, admin_token: str) -> None:
    """A calendar per service on the CalDAV server, bound to the service's team room."""
    caldav = CalDav.for_stack(config, load_secrets(config.data_dir).dav_password)
    try:
        async with SynapseAdmin(config.synapse_url, admin_token) as admin:
            for service in model.services:
                room_id = str(progress.get(f"room:{service.key}:0"))
                if await caldav.calendar(service.key) is None:
                    await caldav.make_calendar(service.key, service.name)
                await _bind_room(config, admin, progress, room_id, "agenda", "fr.maillage.agenda",
                                 {"calendrier": service.key})
    finally:
        await caldav.close()
    progress.set("agendas", True)


DEMO_PROJECT = "renovation-ecole"
DEMO_TASKS = (  # title, assignee, due in days from the seeding, priority (1 high, 5 normal)
    ("Valider le programme des travaux", "claire.martin", 7, 1),
    ("Déposer la déclaration préalable de travaux", "karim.benali", 21, 5),
    ("Consulter trois entreprises de menuiserie", "julien.moreau", 30, 5),
    ("Prévoir l’accueil des élèves pendant le chantier", "thomas.bernard", 45, 5),
)


async def _seed_project(config: Config, model: DemoModel, progress: DemoProgress, admin_token: str) -> None:
    """A project across services (direction générale, urbanisme, services techniques): its room,
    with their agents in it, bound to a task list holding a few tasks."""
    caldav = CalDav.for_stack(config, load_secrets(config.data_dir).dav_password)
    try:
        async with SynapseAdmin(config.synapse_url, admin_token) as admin:
            head = next(a for a in model.agents if a.service == "dg" and a.head_of_service)
            room_id = await _room(admin, progress, "room:projet", "Projet — rénovation de l’école",
                                  user_id(config, head.localpart))
            for agent in model.agents:
                if agent.service in ("dg", "urbanisme", "st"):
                    await admin.force_join(room_id, user_id(config, agent.localpart))
            if await caldav.calendar(DEMO_PROJECT) is None:
                await caldav.make_calendar(DEMO_PROJECT, "Rénovation de l’école", "VTODO")
            today = datetime.now(ZoneInfo(config.collectivite.fuseau_horaire)).date()
            for index, (title, assignee, days, priority) in enumerate(DEMO_TASKS):
                uid = f"demo-{index}@{DEMO_PROJECT}"
                todo = Todo()
                todo.add("uid", uid)
                todo.add("summary", title)
                todo["status"] = "NEEDS-ACTION"
                todo.add("due", today + timedelta(days=days))
                todo.add("priority", priority)
                set_assignee(todo, user_id(config, assignee))
                touch(todo, datetime.now(UTC))
                with contextlib.suppress(CalDavError):  # 412: there from an earlier, interrupted seeding
                    await caldav.put(caldav.href_of(DEMO_PROJECT, uid), as_calendar(todo), None)
            await _bind_room(config, admin, progress, room_id, "projets", "fr.maillage.projet",
                             {"liste": DEMO_PROJECT})
    finally:
        await caldav.close()
    progress.set("projet", True)


async def _bind_room(config: Config, admin: SynapseAdmin, progress: DemoProgress, room_id: str, bot_name: str,
                     event_type: str, content: dict[str, Any]) -> None:
    """The bot in the room, with the power to keep its binding, and the room bound by its state."""
    key = f"{bot_name}:{room_id}"
    if progress.get(key):
        return
    await bind_room(admin, room_id, user_id(config, bot_name), event_type, content)
    progress.set(key, str(next(iter(content.values()))))


async def _seed_agents(config: Config, model: DemoModel, admin: SynapseAdmin) -> None:
    accounts = demo_accounts(config)
    known = {account["user_id"] for account in accounts}
    service_names = {service.key: service.name for service in model.services}
    for agent in model.agents:
        agent_id = user_id(config, agent.localpart)
        if agent_id in known:
            continue
        password = demo_password()
        await admin.put_user(agent_id, password=password, displayname=agent.displayname)
        accounts.append({"user_id": agent_id, "password": password,
                         "displayname": agent.displayname, "service": service_names[agent.service]})
        # Saved after each account: a crash never leaves an account whose password is lost.
        write_private(demo_dir(config) / "comptes.json",
                      json.dumps(accounts, indent=2, ensure_ascii=False))


async def _room(
    admin: SynapseAdmin, progress: DemoProgress, key: str, name: str,
    moderator: str | None, *, space: bool = False,
) -> str:
    existing = progress.get(key)
    if existing:
        return str(existing)
    # Room versions from 12 on give the creator unlimited power: it is not listed.
    users = {moderator: 50} if moderator else {}
    body: dict[str, Any] = {
        "name": name,
        "preset": "private_chat",
        "visibility": "private",
        "power_level_content_override": {"users": users},
    }
    if space:
        body["creation_content"] = {"type": "m.space"}
    room_id = await admin.create_room(body)
    progress.set(key, room_id)
    return room_id
