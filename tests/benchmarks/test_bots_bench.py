"""Bot benchmarks as ratios measured in the same run (issue 4).

- `!aide` reply time ÷ the encrypted ping-pong floor, with the bot in 1 room, then in 1,000;
- the bots' start time with 1,000 joined rooms;
- a 100 MB file: post → stored, ÷ a plain script downloading it from Synapse and PUTting it
  to WebDAV; and how much the bot process's memory grows meanwhile.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from maillage.synapse_admin import SynapseAdmin
from tests.benchmarks.report import record, summary
from tests.benchmarks.test_floor import ping_pong_series
from tests.bots.test_documents import bound_room, today
from tests.bots.test_runtime import documents_id
from tests.conftest import BotProcess, ServerStack
from tests.harness.matrix import Agent, AgentFactory, create_encrypted_room

pytestmark = pytest.mark.benchmark

ROUNDS, SERIES, FILLER_ROOMS = 40, 5, 1000
SETTLE_SECONDS = 60  # after 1,000 joins Synapse still updates its directory and statistics
LARGE_FILE_RUNS = 9


async def help_round_trips(agent: Agent, room: str, bot: str, rounds: int) -> list[float]:
    timings = []
    for _ in range(rounds):
        since = len(agent.received)
        started = time.perf_counter()
        await agent.send_text(room, "!aide")
        answer = await agent.wait_for_text(room, lambda m: m.sender == bot, since=since, timeout=60)
        timings.append(answer.arrived - started)
    return timings


async def ratio_run(agent: Agent, help_room: str, bot: str, ping: Agent, pong: Agent, floor_room: str) -> dict[
        str, object]:
    helps, floors = [], []
    for _ in range(SERIES):  # interleaved, so both see the same machine load
        helps.append(statistics.median(await help_round_trips(agent, help_room, bot, ROUNDS)) * 1000)
        floors.append(statistics.median(await ping_pong_series(ping, pong, floor_room, ROUNDS)) * 1000)
    return {"aide_median_ms": statistics.median(helps), "floor_median_ms": statistics.median(floors),
            "ratio": statistics.median(helps) / statistics.median(floors), "aide_runs_ms": helps,
            "floor_runs_ms": floors}


async def fill_rooms(stack: ServerStack, admin_token: str, bot: str, count: int) -> None:
    """Rooms with the bot invited at creation, a few at a time (Synapse on SQLite writes alone)."""
    limit = asyncio.Semaphore(4)

    async def one(admin: SynapseAdmin, index: int) -> None:
        async with limit:
            await admin.create_room({"name": f"Salon {index}", "preset": "private_chat", "invite": [bot]})

    async with SynapseAdmin(stack.homeserver, admin_token) as admin:
        await asyncio.gather(*(one(admin, index) for index in range(count)))


async def wait_joined(stack: ServerStack, token: str, count: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.homeserver) as http:
        while time.monotonic() < deadline:
            joined = (await http.get("/_matrix/client/v3/joined_rooms",
                                     headers={"Authorization": f"Bearer {token}"})).json()["joined_rooms"]
            if len(joined) >= count:
                return
            await asyncio.sleep(2)
    raise AssertionError(f"the bot joined fewer than {count} rooms")


def bot_token(stack: ServerStack) -> str:
    import sqlite3

    with sqlite3.connect(stack.config.data_dir / "bots" / "bots.db") as db:
        return str(db.execute("SELECT access_token FROM maillage_bot_account").fetchone()[0])


async def test_help_reply_over_the_floor_with_1_and_1000_rooms_and_start_time(
    synapse: ServerStack, admin_token: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    bot = documents_id(synapse)
    claire = await agents("claire")
    help_room = await create_encrypted_room(claire, name="Banc d’essai")
    await claire.client.room_invite(help_room, bot)
    await claire.wait_for_members_including(help_room, bot)
    ping, pong = await agents("ping"), await agents("pong")
    floor_room = await create_encrypted_room(ping, pong, name="Plancher")
    await help_round_trips(claire, help_room, bot, 5)
    await ping_pong_series(ping, pong, floor_room, 5)

    one_room = await ratio_run(claire, help_room, bot, ping, pong, floor_room)

    started = time.perf_counter()
    await fill_rooms(synapse, admin_token, bot, FILLER_ROOMS)
    await wait_joined(synapse, bot_token(synapse), FILLER_ROOMS)
    filling = time.perf_counter() - started
    await asyncio.sleep(SETTLE_SECONDS)
    await help_round_trips(claire, help_room, bot, 5)
    many_rooms = await ratio_run(claire, help_room, bot, ping, pong, floor_room)

    starts, first_answers = [], []
    for _ in range(SERIES):
        bot_process.stop()
        before = time.perf_counter()
        bot_process.start()  # returns once /sante answers
        starts.append(time.perf_counter() - before)
        await help_round_trips(claire, help_room, bot, 1)
        first_answers.append(time.perf_counter() - before)
    record("bots_help", {
        "what": "!aide reply (ms) over the encrypted ping-pong floor, same run; bot start with 1000 rooms (s)",
        "rounds_per_run": ROUNDS, "runs": SERIES,
        "one_room": one_room, "thousand_rooms": many_rooms, "seconds_to_join_1000_rooms": filling,
        "start_until_healthy_s": summary(starts), "start_until_first_answer_s": summary(first_answers),
    })
    assert one_room["ratio"] and many_rooms["ratio"]


def _peak_rss(pid: int, stop: threading.Event, peaks: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        peaks.append(process.memory_info().rss)
        time.sleep(0.02)


def _watch_stored(folder: Path, name_start: str, stop: threading.Event, seen: list[float]) -> None:
    """When the document shows up under its final name in WsgiDAV's folder on disk: an observer
    independent of the bot (the temporary upload is a hidden `.maillage-….partiel` file, and the
    properties are set before the rename)."""
    while not stop.is_set():
        if folder.is_dir() and any(entry.name.startswith(name_start) for entry in os.scandir(folder)):
            seen.append(time.perf_counter())
            return
        time.sleep(0.002)


@pytest.mark.parametrize("encrypted", [True, False], ids=["chiffre", "en-clair"])
async def test_a_100_mb_file_over_a_plain_download_and_put(
    encrypted: bool, synapse: ServerStack, webdav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    """Encrypted attachment: the bot also checks the ciphertext's hash and decrypts, which the
    plain script does not; in clear, both do the same transfer."""
    owner, room = await bound_room(agents, synapse, f"gros/{'chiffres' if encrypted else 'en-clair'}")
    data = os.urandom(100 * 1000 * 1000)
    assert bot_process.process is not None
    stored_times, confirmed_times, plain_times, growth = [], [], [], []
    for run in range(LARGE_FILE_RUNS):
        response, keys = await owner.client.upload(
            io.BytesIO(data), content_type="application/pdf", filename=f"plan-{run}.pdf",
            encrypt=encrypted, filesize=len(data))
        content: dict[str, object] = {"msgtype": "m.file", "body": f"Plan {run}.pdf",
                                      "info": {"mimetype": "application/pdf", "size": len(data)}}
        if encrypted:
            content["file"] = {"url": response.content_uri, **keys}
        else:
            content["url"] = response.content_uri
        folder = "chiffres" if encrypted else "en-clair"
        copy = f"gros/{folder}/copie-{run}"
        if run % 2:  # every other run the plain copy goes first: neither always finds warmer caches
            plain_times.append(await _plain_copy(synapse, owner, response.content_uri, copy))
        stored, confirmed, grown = await _filed_by_bot(synapse, owner, room, content, folder,
                                                       f"{today()}_gros_plan-{run}", bot_process.process.pid)
        stored_times.append(stored)
        confirmed_times.append(confirmed)
        growth.append(grown)
        if not run % 2:
            plain_times.append(await _plain_copy(synapse, owner, response.content_uri, copy))
    plain = statistics.median(plain_times)
    record("bots_large_file" if encrypted else "bots_large_file_in_clear", {
        "what": f"100 MB {'encrypted' if encrypted else 'unencrypted'} file: post → stored under its final name (s),"
                " and → confirmation seen by the agent (s), over a plain download+PUT script (s)",
        "stored_s": summary(stored_times), "confirmed_s": summary(confirmed_times),
        "plain_script_s": summary(plain_times),
        "ratio_stored": statistics.median(stored_times) / plain,
        "ratio_confirmed": statistics.median(confirmed_times) / plain,
        "per_run_ratio_stored": [b / p for b, p in zip(stored_times, plain_times, strict=True)],
        "bot_rss_growth_mb": summary(growth),
    })
    assert len(stored_times) == LARGE_FILE_RUNS
    del data


async def _filed_by_bot(stack: ServerStack, owner: Agent, room: str, content: dict[str, object], subfolder: str,
                        name_start: str, pid: int) -> tuple[float, float, float]:
    """Post the file: seconds until stored, until the confirmation is seen, and the bot's RSS growth (MB)."""
    folder = stack.config.data_dir / "webdav" / "fichiers" / "gros" / subfolder  # WsgiDAV's root
    baseline_rss = psutil.Process(pid).memory_info().rss
    stop, peaks, stored = threading.Event(), list[int](), list[float]()
    sampler = threading.Thread(target=_peak_rss, args=(pid, stop, peaks))
    watcher = threading.Thread(target=_watch_stored, args=(folder, name_start, stop, stored))
    sampler.start()
    watcher.start()
    since = len(owner.received)
    started = time.perf_counter()
    await owner.client.room_send(room, "m.room.message", content, ignore_unverified_devices=True)
    await owner.wait_for_text(room, lambda m: m.sender == documents_id(stack) and "Rangé" in m.body,
                              since=since, timeout=600)
    confirmed = time.perf_counter() - started
    stop.set()
    sampler.join()
    watcher.join()
    assert stored, "the watcher never saw the document under its final name"
    return stored[0] - started, confirmed, (max(peaks) - baseline_rss) / 2**20


async def _plain_copy(stack: ServerStack, agent: Agent, mxc: str, path: str) -> float:
    """What a competent script would do: stream the media into the PUT, with its length."""
    server, _, media_id = mxc.removeprefix("mxc://").partition("/")
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=stack.homeserver, timeout=600,
                                 headers={"Authorization": f"Bearer {agent.client.access_token}"}) as matrix, \
            httpx.AsyncClient(auth=("maillage", stack.secrets.dav_password), timeout=600) as dav, \
            matrix.stream("GET", f"/_matrix/client/v1/media/download/{server}/{media_id}") as download:
        put = await dav.put(f"{stack.config.synapse_url.rsplit(':', 1)[0]}:{stack.config.reseau.port_webdav}/{path}",
                            content=download.aiter_bytes(1 << 16),
                            headers={"Content-Length": download.headers["content-length"]})
        assert put.status_code in (201, 204)
    return time.perf_counter() - started
