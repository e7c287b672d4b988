"""Cross-server latency as a ratio to the same-server floor, and how fast a new partner works.

Both ping-pongs run in the same session on the same machine, interleaved series
by series (each side going first every other series), so that the ratio does not
depend on how busy the machine is. One benchmark alone: ``-k cross_server`` or
``-k new_partner``. Neither has a goal: the figures describe federation's cost.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
from nio import JoinError, RoomInviteError

from maillage.config import load_config
from tests.benchmarks.report import record, summary
from tests.benchmarks.test_floor import ROUNDS, SERIES, WARMUP, ping_pong_series
from tests.harness.federation import Federation, Homeserver
from tests.harness.matrix import AgentFactory, create_encrypted_room
from tests.harness.servers import toml_dump
from tests.homeserver.test_access_rules import _document_with_partners, is_member

pytestmark = pytest.mark.benchmark


async def test_cross_server_ping_pong_over_the_same_server_floor(
    federation: Federation, agents_on: Callable[[Homeserver], AgentFactory]
) -> None:
    mairie, agglo = agents_on(federation.mairie), agents_on(federation.agglo)
    local_a, local_b = await mairie("plancher-a"), await mairie("plancher-b")
    here, there = await mairie("ici"), await agglo("la-bas")
    same_room = await create_encrypted_room(local_a, local_b, access="interne", name="Plancher")
    cross_room = await create_encrypted_room(here, there, access="partenaires", name="Fédération")
    await ping_pong_series(local_a, local_b, same_room, WARMUP)
    await ping_pong_series(here, there, cross_room, WARMUP)

    same_runs, cross_runs = [], []
    for run in range(SERIES):
        if run % 2:
            cross_runs.append(summary([t * 1000 for t in await ping_pong_series(here, there, cross_room, ROUNDS)]))
        same_runs.append(summary([t * 1000 for t in await ping_pong_series(local_a, local_b, same_room, ROUNDS)]))
        if not run % 2:
            cross_runs.append(summary([t * 1000 for t in await ping_pong_series(here, there, cross_room, ROUNDS)]))
    same_median = statistics.median(r["median"] for r in same_runs)
    cross_median = statistics.median(r["median"] for r in cross_runs)
    same_p95 = statistics.median(r["p95"] for r in same_runs)
    cross_p95 = statistics.median(r["p95"] for r in cross_runs)
    record("federation_ping_pong", {
        "what": "encrypted ping-pong round trip (ms): mairie↔agglo over TLS federation vs two agents on mairie",
        "rounds_per_run": ROUNDS, "runs": SERIES,
        "same_server_median_ms": same_median, "same_server_p95_ms": same_p95,
        "cross_server_median_ms": cross_median, "cross_server_p95_ms": cross_p95,
        "ratio_median": cross_median / same_median, "ratio_p95": cross_p95 / same_p95,
        "same_runs": same_runs, "cross_runs": cross_runs,
    })
    assert len(cross_runs) == SERIES


async def test_time_for_a_new_partner_to_be_effective(
    federation: Federation, agents_on: Callable[[Homeserver], AgentFactory]
) -> None:
    owner = await agents_on(federation.mairie)("chef")
    prefet = await agents_on(federation.prefecture)("prefet")
    original = federation.mairie.config
    assert original is not None
    restarts, effective = [], []
    try:
        for run in range(SERIES):
            room = await create_encrypted_room(owner, access="partenaires", name=f"Essai {run}")
            partners = [*original.federation.partenaires, federation.prefecture.server_name]
            original.source.write_text(toml_dump(_document_with_partners(original, partners)))
            started = time.perf_counter()
            restarts.append(federation.restart_mairie(load_config(original.source)))
            invited = await owner.client.room_invite(room, prefet.user_id)
            assert not isinstance(invited, RoomInviteError), invited.message
            assert not isinstance(await prefet.client.join(room), JoinError)
            assert await is_member(owner, room, prefet.user_id)
            effective.append(time.perf_counter() - started)
            original.source.write_text(toml_dump(_document_with_partners(original, original.federation.partenaires)))
            federation.restart_mairie(load_config(original.source))
    finally:
        original.source.write_text(toml_dump(_document_with_partners(original, original.federation.partenaires)))
    record("partner_added", {
        "what": "seconds from the new partner list to the partner's agent joined (Synapse restart included)",
        "synapse_restart_s": summary(restarts), "until_partner_joined_s": summary(effective),
    })
    assert len(effective) == SERIES
