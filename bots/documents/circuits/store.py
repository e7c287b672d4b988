"""Circuits as a persisted state machine: every transition is one database transaction.

A circuit is ``en_cours`` (its current step waits for actors), ``refuse`` (sent back to its
initiator, who may resume it with a new version), ``arrete`` (its document changed or
vanished behind its back), ``valide`` (every step done, being archived), ``termine``
(archived) or ``annule``. Each transition is written with the event that caused it
(unique: a replayed command finds its transition instead of making it twice) and the
``revision`` it started from (a second writer that read the same revision changes nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mautrix.util.async_db import Connection, Database, UpgradeTable

from maillage.bots.documents.circuits.spec import Step
from maillage.bots.runtime.store import transaction

circuits_tables = UpgradeTable(version_table_name="maillage_circuits_version")

RUNNING, REFUSED, STOPPED, VALIDATED, DONE, CANCELLED = "en_cours", "refuse", "arrete", "valide", "termine", "annule"
OPEN = (RUNNING, REFUSED, STOPPED)


async def _initial(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE circuit (
            id INTEGER PRIMARY KEY,
            room_id TEXT NOT NULL,
            start_event TEXT NOT NULL UNIQUE,
            document TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            etag TEXT NOT NULL,
            folder TEXT NOT NULL,
            initiator TEXT NOT NULL,
            model TEXT,
            deadline TEXT,
            steps TEXT NOT NULL,
            state TEXT NOT NULL,
            step INTEGER NOT NULL,
            round INTEGER NOT NULL,
            revision INTEGER NOT NULL,
            created_at BIGINT NOT NULL,
            finished_at BIGINT,
            archive TEXT,
            receipt TEXT
        )""")
    # Who acts on each step of the current round: the designated actor, or their deputy.
    await conn.execute(
        """CREATE TABLE circuit_actor (
            circuit_id INTEGER NOT NULL,
            round INTEGER NOT NULL,
            step INTEGER NOT NULL,
            actor TEXT NOT NULL,
            acting TEXT NOT NULL,
            decision TEXT,
            PRIMARY KEY (circuit_id, round, step, actor)
        )""")
    # The proof: who did what, when, from which Matrix event, on which exact version.
    await conn.execute(
        """CREATE TABLE circuit_transition (
            circuit_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            at BIGINT NOT NULL,
            who TEXT NOT NULL,
            on_behalf TEXT,
            action TEXT NOT NULL,
            step INTEGER,
            comment TEXT NOT NULL,
            event_id TEXT NOT NULL UNIQUE,
            document TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            PRIMARY KEY (circuit_id, seq)
        )""")
    # The messages asking actors to act: a ✅ or ❌ on one of them acts on its step.
    await conn.execute(
        """CREATE TABLE circuit_notice (
            event_id TEXT PRIMARY KEY,
            circuit_id INTEGER NOT NULL,
            round INTEGER NOT NULL,
            step INTEGER NOT NULL
        )""")
    await conn.execute(
        """CREATE TABLE circuit_delegation (
            user_id TEXT PRIMARY KEY,
            deputy TEXT NOT NULL,
            until TEXT NOT NULL,
            event_id TEXT NOT NULL
        )""")


circuits_tables.register(_initial, description="Circuits, their steps, actors and transitions; delegations")


async def _sent(conn: Connection) -> None:
    # What was sent to an actor about a step (the direct message, each reminder): sent once.
    await conn.execute(
        """CREATE TABLE circuit_sent (
            circuit_id INTEGER NOT NULL,
            round INTEGER NOT NULL,
            step INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            what TEXT NOT NULL,
            PRIMARY KEY (circuit_id, round, step, user_id, what)
        )""")


circuits_tables.register(_sent, description="Direct messages and reminders sent to actors")


@dataclass
class Actor:
    actor: str
    acting: str
    decision: str | None


@dataclass
class Circuit:
    id: int
    room_id: str
    document: str
    sha256: str
    etag: str
    folder: str
    initiator: str
    model: str | None
    deadline: str | None
    steps: tuple[Step, ...]
    state: str
    step: int  # 0-based index of the current step
    round: int
    revision: int
    created_at: int
    finished_at: int | None
    archive: str | None
    receipt: str | None
    actors: list[Actor] = field(default_factory=list)  # of the current step, this round

    @property
    def current(self) -> Step:
        return self.steps[self.step]

    @property
    def name(self) -> str:
        return self.document.rpartition("/")[2]

    def waiting_for(self) -> list[Actor]:
        return [actor for actor in self.actors if actor.decision is None] if self.state == RUNNING else []

    def may_act(self, user_id: str) -> Actor | None:
        return next((actor for actor in self.waiting_for() if user_id in (actor.acting, actor.actor)
                     and (actor.acting == user_id or actor.actor == actor.acting)), None)


@dataclass(frozen=True)
class Transition:
    seq: int
    at: int
    who: str
    on_behalf: str | None
    action: str
    step: int | None
    comment: str
    event_id: str
    document: str
    sha256: str


def steps_json(steps: tuple[Step, ...]) -> str:
    return json.dumps([{"kind": s.kind, "actors": list(s.actors), "mode": s.mode} for s in steps])


def _steps(text: str) -> tuple[Step, ...]:
    return tuple(Step(s["kind"], tuple(s["actors"]), s["mode"]) for s in json.loads(text))


def _circuit(row: Any) -> Circuit:
    return Circuit(int(row["id"]), row["room_id"], row["document"], row["sha256"], row["etag"], row["folder"],
                   row["initiator"], row["model"], row["deadline"], _steps(row["steps"]), row["state"],
                   int(row["step"]), int(row["round"]), int(row["revision"]), int(row["created_at"]),
                   row["finished_at"], row["archive"], row["receipt"])


class Stale(Exception):
    """The circuit changed since it was read: read it again and decide again."""


class CircuitStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, circuit_id: int) -> Circuit | None:
        row = await self.db.fetchrow("SELECT * FROM circuit WHERE id=$1", circuit_id)
        if row is None:
            return None
        circuit = _circuit(row)
        actors = await self.db.fetch(
            "SELECT actor, acting, decision FROM circuit_actor WHERE circuit_id=$1 AND round=$2 AND step=$3"
            " ORDER BY actor", circuit.id, circuit.round, circuit.step)
        circuit.actors = [Actor(r["actor"], r["acting"], r["decision"]) for r in actors]
        return circuit

    async def started_by(self, event_id: str) -> Circuit | None:
        found = await self.db.fetchval("SELECT id FROM circuit WHERE start_event=$1", event_id)
        return await self.get(int(found)) if found is not None else None

    async def of_room(self, room_id: str, states: tuple[str, ...]) -> list[Circuit]:
        rows = await self.db.fetch("SELECT id, state FROM circuit WHERE room_id=$1 ORDER BY id", room_id)
        return [c for r in rows if r["state"] in states and (c := await self.get(int(r["id"]))) is not None]

    async def waiting_for(self, user_id: str) -> list[Circuit]:
        """Open circuits whose current step waits for ``user_id`` (as actor or deputy)."""
        rows = await self.db.fetch(
            "SELECT DISTINCT c.id FROM circuit c JOIN circuit_actor a ON a.circuit_id=c.id AND a.round=c.round"
            " AND a.step=c.step WHERE c.state=$1 AND a.decision IS NULL AND (a.acting=$2 OR a.actor=$2)"
            " ORDER BY c.id", RUNNING, user_id)
        return [c for r in rows if (c := await self.get(int(r["id"]))) is not None]

    async def open_by_room(self, today: str) -> dict[str, tuple[int, int]]:
        """room → (open circuits, those past their deadline), in one read (the portal's dashboard)."""
        rows = await self.db.fetch("SELECT room_id, deadline FROM circuit WHERE state IN ($1, $2, $3)", *OPEN)
        counts: dict[str, tuple[int, int]] = {}
        for row in rows:
            open_count, late = counts.get(str(row["room_id"]), (0, 0))
            counts[str(row["room_id"])] = (open_count + 1, late + bool(row["deadline"] and row["deadline"] < today))
        return counts

    async def with_state(self, state: str) -> list[Circuit]:
        rows = await self.db.fetch("SELECT id FROM circuit WHERE state=$1 ORDER BY id", state)
        return [c for r in rows if (c := await self.get(int(r["id"]))) is not None]

    async def transitions(self, circuit_id: int) -> list[Transition]:
        rows = await self.db.fetch("SELECT * FROM circuit_transition WHERE circuit_id=$1 ORDER BY seq", circuit_id)
        return [Transition(int(r["seq"]), int(r["at"]), r["who"], r["on_behalf"], r["action"],
                           None if r["step"] is None else int(r["step"]), r["comment"], r["event_id"],
                           r["document"], r["sha256"]) for r in rows]

    async def transition_of(self, event_id: str) -> tuple[int, Transition] | None:
        row = await self.db.fetchrow("SELECT circuit_id, seq FROM circuit_transition WHERE event_id=$1", event_id)
        if row is None:
            return None
        found = [t for t in await self.transitions(int(row["circuit_id"])) if t.seq == int(row["seq"])]
        return int(row["circuit_id"]), found[0]

    async def create(self, *, room_id: str, start_event: str, document: str, sha256: str, etag: str, folder: str,
                     initiator: str, model: str | None, deadline: str | None, steps: tuple[Step, ...],
                     deputies: dict[str, str], now: int) -> Circuit:
        """The circuit, its first step's actors (``deputies``: actor → who acts) and its first
        transition, at once."""
        async with transaction(self.db) as conn:
            next_id = int(await conn.fetchval("SELECT COALESCE(MAX(id), 0) + 1 FROM circuit"))
            await conn.execute(
                "INSERT INTO circuit (id, room_id, start_event, document, sha256, etag, folder, initiator, model,"
                " deadline, steps, state, step, round, revision, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                " $8, $9, $10, $11, $12, 0, 1, 1, $13)", next_id, room_id, start_event, document, sha256, etag,
                folder, initiator, model, deadline, steps_json(steps), RUNNING, now)
            await _assign(conn, next_id, 1, 0, deputies)
            await _record(conn, next_id, now, initiator, None, "lance", None, "", start_event, document, sha256)
        circuit = await self.get(next_id)
        assert circuit is not None
        return circuit

    async def decide(self, circuit: Circuit, actor: Actor, decision: str, comment: str, event_id: str,
                     now: int, next_deputies: dict[str, str] | None) -> Circuit:
        """``actor`` decides on the current step; the step completes (``next_deputies``: who acts
        on the next one, None when this was the last step) or the circuit goes back (refusal)."""
        async with transaction(self.db) as conn:
            await _bump(conn, circuit)
            await conn.execute(
                "UPDATE circuit_actor SET decision=$5 WHERE circuit_id=$1 AND round=$2 AND step=$3 AND actor=$4",
                circuit.id, circuit.round, circuit.step, actor.actor, decision)
            on_behalf = actor.actor if actor.acting != actor.actor else None
            await _record(conn, circuit.id, now, actor.acting, on_behalf, decision, circuit.step, comment, event_id,
                          circuit.document, circuit.sha256)
            if decision == "refuse":
                await conn.execute("UPDATE circuit SET state=$2 WHERE id=$1", circuit.id, REFUSED)
            elif self.completes(circuit, actor):
                if next_deputies is None:
                    await conn.execute("UPDATE circuit SET state=$2 WHERE id=$1", circuit.id, VALIDATED)
                else:
                    await conn.execute("UPDATE circuit SET step=step+1 WHERE id=$1", circuit.id)
                    await _assign(conn, circuit.id, circuit.round, circuit.step + 1, next_deputies)
        return await self._reread(circuit.id)

    @staticmethod
    def completes(circuit: Circuit, actor: Actor) -> bool:
        """Whether ``actor`` acting completes the current step."""
        return circuit.current.mode == "un" or all(a.decision is not None for a in circuit.actors if a is not actor)

    async def restart(self, circuit: Circuit, *, document: str, sha256: str, etag: str, who: str, event_id: str,
                      now: int, deputies: dict[str, str]) -> Circuit:
        """From its first step again, on a new version: earlier decisions were on another text."""
        async with transaction(self.db) as conn:
            await _bump(conn, circuit)
            await conn.execute("UPDATE circuit SET state=$2, step=0, round=round+1, document=$3, sha256=$4, etag=$5"
                               " WHERE id=$1", circuit.id, RUNNING, document, sha256, etag)
            await _assign(conn, circuit.id, circuit.round + 1, 0, deputies)
            await _record(conn, circuit.id, now, who, None, "reprend", None, "", event_id, document, sha256)
        return await self._reread(circuit.id)

    async def end(self, circuit: Circuit, state: str, *, who: str, action: str, comment: str, event_id: str,
                  now: int) -> Circuit:
        """Cancelled, or stopped because the document changed."""
        async with transaction(self.db) as conn:
            await _bump(conn, circuit)
            await conn.execute("UPDATE circuit SET state=$2, finished_at=$3 WHERE id=$1", circuit.id, state,
                               now if state == CANCELLED else None)
            await _record(conn, circuit.id, now, who, None, action, circuit.step, comment, event_id,
                          circuit.document, circuit.sha256)
        return await self._reread(circuit.id)

    async def archived(self, circuit: Circuit, archive: str, receipt: str, now: int) -> Circuit:
        async with transaction(self.db) as conn:
            await _bump(conn, circuit)
            await conn.execute("UPDATE circuit SET state=$2, archive=$3, receipt=$4, finished_at=$5 WHERE id=$1",
                               circuit.id, DONE, archive, receipt, now)
        return await self._reread(circuit.id)

    async def note_notice(self, event_id: str, circuit: Circuit) -> None:
        await self.db.execute(
            "INSERT INTO circuit_notice (event_id, circuit_id, round, step) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (event_id) DO NOTHING", event_id, circuit.id, circuit.round, circuit.step)

    async def notice(self, event_id: str) -> tuple[int, int, int] | None:
        row = await self.db.fetchrow("SELECT circuit_id, round, step FROM circuit_notice WHERE event_id=$1", event_id)
        return (int(row["circuit_id"]), int(row["round"]), int(row["step"])) if row else None

    async def was_sent(self, circuit: Circuit, user_id: str, what: str) -> bool:
        return await self.db.fetchval(
            "SELECT 1 FROM circuit_sent WHERE circuit_id=$1 AND round=$2 AND step=$3 AND user_id=$4 AND what=$5",
            circuit.id, circuit.round, circuit.step, user_id, what) is not None

    async def note_sent(self, circuit: Circuit, user_id: str, what: str) -> None:
        await self.db.execute(
            "INSERT INTO circuit_sent (circuit_id, round, step, user_id, what) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT DO NOTHING", circuit.id, circuit.round, circuit.step, user_id, what)

    async def delegate(self, user_id: str, deputy: str, until: str, event_id: str) -> None:
        await self.db.execute(
            "INSERT INTO circuit_delegation (user_id, deputy, until, event_id) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id) DO UPDATE SET deputy=$2, until=$3, event_id=$4", user_id, deputy, until, event_id)

    async def end_delegation(self, user_id: str) -> bool:
        found = await self.db.fetchval("SELECT 1 FROM circuit_delegation WHERE user_id=$1", user_id)
        await self.db.execute("DELETE FROM circuit_delegation WHERE user_id=$1", user_id)
        return found is not None

    async def delegations(self, today: str) -> dict[str, tuple[str, str]]:
        """Who stands in for whom (user → (deputy, last day)), today."""
        rows = await self.db.fetch("SELECT user_id, deputy, until FROM circuit_delegation WHERE until>=$1", today)
        return {r["user_id"]: (r["deputy"], r["until"]) for r in rows}

    async def _reread(self, circuit_id: int) -> Circuit:
        circuit = await self.get(circuit_id)
        assert circuit is not None
        return circuit


async def _bump(conn: Connection, circuit: Circuit) -> None:
    changed = await conn.fetchval("UPDATE circuit SET revision=revision+1 WHERE id=$1 AND revision=$2"
                                  " RETURNING revision", circuit.id, circuit.revision)
    if changed is None:
        raise Stale(circuit.id)


async def _assign(conn: Connection, circuit_id: int, round_: int, step: int, deputies: dict[str, str]) -> None:
    for actor, acting in deputies.items():
        await conn.execute("INSERT INTO circuit_actor (circuit_id, round, step, actor, acting) VALUES ($1, $2, $3,"
                           " $4, $5) ON CONFLICT DO NOTHING", circuit_id, round_, step, actor, acting)


async def _record(conn: Connection, circuit_id: int, now: int, who: str, on_behalf: str | None, action: str,
                  step: int | None, comment: str, event_id: str, document: str, sha256: str) -> None:
    seq = int(await conn.fetchval("SELECT COALESCE(MAX(seq), 0) + 1 FROM circuit_transition WHERE circuit_id=$1",
                                  circuit_id))
    await conn.execute(
        "INSERT INTO circuit_transition (circuit_id, seq, at, who, on_behalf, action, step, comment, event_id,"
        " document, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        circuit_id, seq, now, who, on_behalf, action, step, comment, event_id, document, sha256)
