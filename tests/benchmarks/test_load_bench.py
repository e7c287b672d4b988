"""A load of scripted agents (issue 14): 200 matrix-nio agents in 50 encrypted rooms (4 each),
the @documents bot in 10 of them answering ``!aide`` (one message in ten there), the offered
rate raised step by step; for each step the messages a second delivered, the p95 latency
from send to each other member's sync, the bot's reply time — single profile and scaled
profile, each on its own stack, on the same machine.

    ./maillage bench -k load_of_200 -s

Two kinds of agents. **E2EE agents** (``load_of_200_agents``): matrix-nio clients in
encrypted rooms, as in every end-to-end test. On this machine their decryption and nio's
checking of every event cost more CPU than the stack itself (docs/benchmarks.md), so a
second variant, **light agents** (``load_of_200_light``), puts the same load on the server
through plain HTTP clients in unencrypted rooms — a filtered, lazy-loading long-poll sync
and a ``PUT …/send`` each, what an Element tab asks of Synapse — to find where the *server*
saturates. The bot answers ``!aide`` in both.

Where a profile saturates: the first step where fewer than 95 % of the offered messages
reach every member within the step (plus a grace of ``GRACE_SECONDS``), or where the p95
latency passes one second. The agents run in ``PROCESSES`` processes of their own (their
encryption would otherwise be the bottleneck); on this 2-core machine they share the
cores with the stack, as a test machine's clients do — the figures compare the profiles,
they are not a server's capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import secrets
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import pytest

from maillage.config import Config
from maillage.deploy.provisioning import ensure_admin_token
from maillage.homeserver.access_policy import ACCESS_EVENT_TYPE, AccessKind
from maillage.secretstore import ensure_secrets
from maillage.synapse_admin import SynapseAdmin
from tests.benchmarks.report import percentile, record
from tests.benchmarks.test_scale_bench import profile_stack
from tests.deploy.test_launcher import maillage
from tests.harness.matrix import Agent, Received, login_agent, reply_target

pytestmark = pytest.mark.benchmark

AGENTS, ROOMS, BOT_ROOMS, PROCESSES = 200, 50, 10, 4
STEPS = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)  # messages a second offered, in total
STEP_SECONDS, GRACE_SECONDS = 30.0, 15.0
HELP_EVERY = 10  # in the bot's rooms, one message in ten is « !aide »
SATURATED_DELIVERY, SATURATED_P95_S = 0.95, 1.0


async def provision(config: Config, admin_token: str, bot: str, *,
                    encrypted: bool) -> list[list[tuple[str, str, str, bool]]]:
    """The accounts and rooms (made once per stack): per process, its (user id, password, room,
    whether the bot is in the room)."""
    server = config.collectivite.nom_serveur
    password = f"Charge-{secrets.token_hex(8)}-A1"
    members: list[list[tuple[str, str, str, bool]]] = [[] for _ in range(PROCESSES)]
    encryption = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
    public = {"type": ACCESS_EVENT_TYPE, "state_key": "", "content": {"acces": AccessKind.PUBLIC.value}}
    async with SynapseAdmin(config.synapse_url, admin_token) as admin:
        for index in range(AGENTS):
            user_id = f"@charge{index:03d}:{server}"
            await admin.put_user(user_id, password=password, displayname=f"Agent {index:03d}")
            await admin.override_ratelimit(user_id)
        per_room = AGENTS // ROOMS
        for room_index in range(ROOMS):
            # Maillage's access rules encrypt every room from its creation but a « public » one
            # (homeserver-config/access_rules.py), and Synapse every invite-only one (the
            # rendered config): the light agents' rooms are of the public kind, open to join.
            room = await admin.create_room({"name": f"Charge {room_index:02d}",
                                            "preset": "private_chat" if encrypted else "public_chat",
                                            "initial_state": [encryption if encrypted else public]})
            users = [f"@charge{room_index * per_room + k:03d}:{server}" for k in range(per_room)]
            with_bot = room_index < BOT_ROOMS
            for user_id in users + [bot] * with_bot:
                await admin.force_join(room, user_id)
            # a room's members live in one process: a message and its readers share a clock
            members[room_index % PROCESSES] += [(user_id, password, room, with_bot) for user_id in users]
    return members


class LightAgent:
    """An agent as the server sees an Element tab, without the client's own cost: plain HTTP,
    a long-poll sync filtered as Element's (lazy-loaded members, no presence), a ``PUT`` per
    message. Unencrypted rooms only."""

    SYNC_FILTER = json.dumps({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 20}},
                              "presence": {"not_types": ["*"]}})

    def __init__(self, http: httpx.AsyncClient, user_id: str) -> None:
        self.http, self.user_id = http, user_id
        self.received: list[Received] = []
        self._sync_task: asyncio.Task[None] | None = None

    @classmethod
    async def login(cls, homeserver: str, user_id: str, password: str, local_address: str) -> LightAgent:
        http = httpx.AsyncClient(base_url=homeserver, timeout=120,
                                 transport=httpx.AsyncHTTPTransport(local_address=local_address))
        response = await http.post("/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password})
        response.raise_for_status()
        http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        agent = cls(http, user_id)
        since = (await agent._sync(None, 0))["next_batch"]  # what came before is not this load's
        agent._sync_task = asyncio.create_task(agent._sync_forever(since))
        return agent

    async def _sync(self, since: str | None, timeout_ms: int) -> dict[str, Any]:
        params = {"filter": self.SYNC_FILTER, "timeout": str(timeout_ms), **({"since": since} if since else {})}
        response = await self.http.get("/_matrix/client/v3/sync", params=params)
        response.raise_for_status()
        return dict(response.json())

    async def _sync_forever(self, since: str) -> None:
        while True:
            body = await self._sync(since, 30_000)
            arrived = time.perf_counter()
            for room_id, room in body.get("rooms", {}).get("join", {}).items():
                for event in room.get("timeline", {}).get("events", []):
                    content = event.get("content", {})
                    if event.get("type") == "m.room.message" and "body" in content:
                        self.received.append(Received(
                            room_id=room_id, sender=event["sender"], body=content["body"], encrypted=False,
                            event_id=event["event_id"], server_timestamp=event.get("origin_server_ts", 0),
                            arrived=arrived, reply_to=reply_target(content)))
            since = body["next_batch"]

    async def send_text(self, room_id: str, body: str) -> str:
        response = await self.http.put(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{secrets.token_hex(8)}",
            json={"msgtype": "m.text", "body": body})
        response.raise_for_status()
        return str(response.json()["event_id"])

    async def close(self) -> None:
        if self._sync_task:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
        await self.http.aclose()


def _agents_process(homeserver: str, bot: str, accounts: list[tuple[str, str, str, bool]], stores: str,
                    light: bool, conn: Connection) -> None:
    asyncio.run(_agents(homeserver, bot, accounts, Path(stores), light, conn))


async def _agents(homeserver: str, bot: str, accounts: list[tuple[str, str, str, bool]], stores: Path,
                  light: bool, conn: Connection) -> None:
    agents: list[tuple[Agent | LightAgent, str, bool]] = []
    try:
        for user_id, password, room, with_bot in accounts:
            address = loopback_address(user_id)
            agent = (await LightAgent.login(homeserver, user_id, password, address) if light else
                     await login_agent(homeserver, user_id, password, stores / user_id[1:].split(":")[0],
                                       local_address=address))
            agents.append((agent, room, with_bot))
        # a first message each: in encrypted rooms each room's key reaches its members (and the bot) now
        for agent, room, _ in agents:
            await agent.send_text(room, "Bonjour")
        await asyncio.sleep(5)
        conn.send("prêt")
        while (order := await asyncio.to_thread(conn.recv)) != "fin":
            rate, seconds = order
            conn.send(await _step(agents, bot, rate, seconds))
    finally:
        for agent, _, _ in agents:
            await agent.close()


def loopback_address(user_id: str) -> str:
    """An agent's own loopback address: 200 people log in from 200 machines, and Synapse's
    login limit (per address, 0.15/s in the rendered config) would otherwise spread this
    benchmark's logins over 20 minutes."""
    number = int(user_id[len("@charge"):].split(":")[0])
    return f"127.0.{1 + number // 250}.{1 + number % 250}"


async def _step(agents: list[tuple[Agent | LightAgent, str, bool]], bot: str, rate: float,
                seconds: float) -> dict[str, Any]:
    """Open-loop load: a message every 1/rate s round-robin over the agents (each send its own
    task, so a slow server does not slow the offer); then each (message, other member) pair's
    latency, and the bot's replies."""
    marks = {id(agent): len(agent.received) for agent, _, _ in agents}
    sent: dict[str, tuple[float, str, str]] = {}  # body → (when, room, sender)
    helps: dict[str, tuple[float, str]] = {}  # the command's event id → when it was sent, by whom
    failures = 0
    bot_rooms = {room for _, room, with_bot in agents if with_bot}

    async def send(agent: Agent | LightAgent, room: str, body: str, is_help: bool) -> None:
        nonlocal failures
        before = time.perf_counter()
        try:
            event_id = await agent.send_text(room, "!aide" if is_help else body)
        except Exception:  # a refused or timed-out send: counted, the load goes on
            failures += 1
            return
        if is_help:
            helps[event_id] = (before, agent.user_id)
        else:
            sent[body] = (before, room, agent.user_id)

    tasks = []
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        agent, room, _ = agents[count % len(agents)]
        is_help = room in bot_rooms and count % HELP_EVERY == 0
        tasks.append(asyncio.create_task(send(agent, room, f"Charge {id(agents)}-{count}", is_help)))
        count += 1
        await asyncio.sleep(max(0.0, started + count / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    await asyncio.sleep(GRACE_SECONDS)
    latencies, delivered_to = [], dict.fromkeys(sent, 0)
    replies = []
    for agent, _, _ in agents:
        for message in agent.received[marks[id(agent)]:]:
            if message.body in sent and message.sender != agent.user_id:
                latencies.append(message.arrived - sent[message.body][0])
                delivered_to[message.body] += 1
            elif message.sender == bot and message.reply_to in helps:  # as its sender saw it
                when, by = helps[message.reply_to]
                if by == agent.user_id:
                    replies.append(message.arrived - when)
    readers = {room: sum(1 for _, r, _ in agents if r == room) - 1 for _, room, _ in agents}
    fully = sum(1 for body, n in delivered_to.items() if n >= readers[sent[body][1]])
    return {"offered": count, "sent": len(sent) + len(helps), "failures": failures, "fully_delivered": fully,
            "latencies": latencies, "help_commands": len(helps), "help_replies": replies}


def service_processes(config: Config) -> dict[str, list[psutil.Process]]:
    """Each service of the running stack, with its children (nginx's workers), from ``status``."""
    report = json.loads(maillage(config.data_dir, "status", "--json").stdout)
    found = {}
    for service in report["services"]:
        with contextlib.suppress(psutil.Error, TypeError, ValueError):
            process = psutil.Process(int(service["pid"]))
            found[service["nom"]] = [process, *process.children(recursive=True)]
    return found


def machine_servers() -> dict[str, list[psutil.Process]]:
    """The machine's PostgreSQL and Redis (every process of each, looked up again at each step:
    PostgreSQL starts a backend per connection), which nothing else uses during the run."""
    found: dict[str, list[psutil.Process]] = {"postgresql": [], "redis": []}
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("postgres", "postmaster"):
            found["postgresql"].append(process)
        elif process.info["name"] == "redis-server":
            found["redis"].append(process)
    return found


def cpu_seconds(processes: dict[str, list[psutil.Process]]) -> dict[str, float]:
    times = {}
    for name, members in processes.items():
        times[name] = 0.0
        for process in members:
            with contextlib.suppress(psutil.Error):  # gone since: its time is lost, not the service's
                times[name] += sum(process.cpu_times()[:2])
    return times


def rss_mb(processes: dict[str, list[psutil.Process]]) -> dict[str, float]:
    sizes = {}
    for name, members in processes.items():
        sizes[name] = 0.0
        for process in members:
            with contextlib.suppress(psutil.Error):
                sizes[name] += process.memory_info().rss / 1e6
    return sizes


def summarise(rate: float, parts: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [t for part in parts for t in part["latencies"]]
    replies = [t for part in parts for t in part["help_replies"]]
    offered = sum(p["offered"] for p in parts)
    plain = offered - sum(p["help_commands"] for p in parts) - sum(p["failures"] for p in parts)
    fully = sum(p["fully_delivered"] for p in parts)
    step = {
        "offered_per_s": rate, "offered": offered, "failures": sum(p["failures"] for p in parts),
        "delivered_per_s": fully / STEP_SECONDS, "delivery_ratio": fully / max(1, plain),
        "latency_ms": {"median": 1000 * statistics.median(latencies), "p95": 1000 * percentile(latencies, 0.95),
                       "n": len(latencies)} if latencies else None,
        "aide": {"commands": sum(p["help_commands"] for p in parts), "answered": len(replies),
                 "median_ms": 1000 * statistics.median(replies) if replies else None,
                 "p95_ms": 1000 * percentile(replies, 0.95) if replies else None},
    }
    step["saturated"] = (step["delivery_ratio"] < SATURATED_DELIVERY
                         or not latencies or percentile(latencies, 0.95) > SATURATED_P95_S)
    return step


@pytest.mark.parametrize("profile", ["simple", "reparti"])
async def test_load_of_200_agents_in_50_rooms(profile: str, tmp_path: Path) -> None:
    await run_load(profile, tmp_path, light=False)


@pytest.mark.parametrize("profile", ["simple", "reparti"])
async def test_load_of_200_light_agents_in_50_rooms(profile: str, tmp_path: Path) -> None:
    await run_load(profile, tmp_path, light=True)


async def run_load(profile: str, tmp_path: Path, *, light: bool) -> None:
    kind = "light" if light else "e2ee"
    async with profile_stack(profile, f"charge-{kind}-{profile}", fresh=True) as config:
        admin_token = await ensure_admin_token(config, ensure_secrets(config.data_dir))
        bot = f"@documents:{config.collectivite.nom_serveur}"
        started = time.perf_counter()
        members = await provision(config, admin_token, bot, encrypted=not light)
        setup_s = time.perf_counter() - started
        spawn = multiprocessing.get_context("spawn")
        pipes, processes = [], []
        for index, accounts in enumerate(members):
            conn, child_end = spawn.Pipe()
            process = spawn.Process(target=_agents_process, daemon=True, args=(
                config.synapse_url, bot, accounts, str(tmp_path / f"p{index}"), light, child_end))
            process.start()
            pipes.append(conn)
            processes.append(process)
        steps = []
        try:
            for conn in pipes:
                assert await asyncio.to_thread(conn.poll, 900), "the agents did not log in within 15 min"
                conn.recv()
            services = service_processes(config)
            # the scripted agents too: on 2 cores they compete with the stack
            services[f"agents ({'http' if light else 'nio'})"] = [psutil.Process(p.pid) for p in processes
                                                                   if p.pid is not None]
            for rate in STEPS:
                services |= machine_servers()
                cpu_before, started = cpu_seconds(services), time.perf_counter()
                for conn in pipes:
                    conn.send((rate / PROCESSES, STEP_SECONDS))
                parts = []
                for conn in pipes:
                    assert await asyncio.to_thread(conn.poll, STEP_SECONDS * 4 + 120), "a step never ended"
                    parts.append(conn.recv())
                elapsed, cpu_after = time.perf_counter() - started, cpu_seconds(services)
                steps.append(summarise(rate, parts) | {
                    "cpu_share_by_service": {name: (cpu_after[name] - cpu_before[name]) / elapsed
                                             for name in cpu_after if name in cpu_before},
                    # PostgreSQL's backends share its buffers: their RSS summed would count them many times
                    "rss_mb_by_service": rss_mb({k: v for k, v in services.items() if k != "postgresql"})})
                print(f"  {kind} {profile} {rate:g}/s: {steps[-1]['delivered_per_s']:.1f}/s delivered,"
                      f" p95 {steps[-1]['latency_ms'] and round(steps[-1]['latency_ms']['p95'])} ms", flush=True)
                if steps[-1]["saturated"] and len(steps) > 1 and steps[-2]["saturated"]:
                    break  # two saturated steps: the rest would only say it louder
            for conn in pipes:
                conn.send("fin")
        finally:
            for process in processes:
                process.join(timeout=60)
                with contextlib.suppress(Exception):
                    process.kill()
    sustained = [s for s in steps if not s["saturated"]]
    agents = ("light HTTP agents (plain sync and send) in {} unencrypted" if light
              else "matrix-nio agents in {} encrypted").format(ROOMS)
    record(f"load_200_{'light_' if light else ''}agents_{profile}", {
        "what": f"{AGENTS} {agents} rooms ({AGENTS // ROOMS} each), the @documents"
                f" bot in {BOT_ROOMS} of them answering !aide (one message in {HELP_EVERY} there); the offered rate"
                f" raised by steps of {STEP_SECONDS:g} s; profile « {profile} »",
        "profile": profile, "agents": kind, "setup_s": setup_s, "steps": steps,
        "sustained_per_s": max((s["delivered_per_s"] for s in sustained), default=0.0),
        "saturates_at_offered_per_s": next((s["offered_per_s"] for s in steps if s["saturated"]), None),
    })
