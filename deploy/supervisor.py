"""Keeping the stack's services running once it is up.

A service that exits is started again after a back-off: 1 s, then 2, 4, 8… up
to 60 s while it keeps failing; once it has stayed up ``STABLE_AFTER`` seconds,
its next failure starts from 1 s again. A service that fails at every start
(a bad config, a port taken by another program) therefore never spins, and its
state says why: the last lines of its log. Each restart is logged in French,
with the exit code or signal and never a secret (lines from a service's log are
redacted before they are shown or stored).

The supervisor is driven by ``check()`` from the launcher's loop, one pass at a
time, so a clean stop (SIGTERM, Ctrl-C) only has to stop what is running: a
restart is never started once the stop is requested.
"""

from __future__ import annotations

import datetime
import math
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from maillage.deploy import processes
from maillage.deploy.processes import RunningService
from maillage.deploy.services import Service
from maillage.i18n import t

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0
REASON_LINES = 12

# States written in the state file (``supervision``) and read by ``maillage status``.
RUNNING, STARTING, WAITING = "en_marche", "demarrage", "redemarrage"

_TOKEN_PATTERNS = (
    re.compile(r"\bsy[tu]_[A-Za-z0-9_=-]+"),  # Synapse access and refresh tokens
    re.compile(r"(?i)((?:access_token|password|mot_de_passe|secret)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"),
)


def redactor(secret_values: Iterable[str]) -> Callable[[str], str]:
    """A function that blanks the stack's secrets, and anything shaped like a token, in a text."""
    values = sorted({value for value in secret_values if len(value) >= 8}, key=len, reverse=True)

    def redact(text: str) -> str:
        for value in values:
            text = text.replace(value, "***")
        text = _TOKEN_PATTERNS[0].sub("***", text)
        return _TOKEN_PATTERNS[1].sub(r"\1***", text)

    return redact


def describe_exit(code: int) -> str:
    """``code 1`` or ``signal SIGKILL``, as Popen reports it (a negative code is a signal)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return t("supervisor.exit.signal", name=name)
    return t("supervisor.exit.code", code=code)


def next_delay(previous: float, uptime: float) -> float:
    """The back-off before the next start of a service that just stopped after ``uptime`` seconds."""
    if previous <= 0 or uptime >= STABLE_AFTER:
        return BACKOFF_FIRST
    return min(previous * 2, BACKOFF_MAX)


@dataclass
class Supervised:
    """One service, its current process (if any), and its restart history."""

    service: Service
    log: Path
    running: RunningService | None
    info: dict[str, Any]  # this service's entry in the state file, updated in place
    started_at: float = 0.0  # monotonic time of the last start
    healthy: bool = True  # has passed its health check since the last start
    delay: float = 0.0  # the last back-off used
    restart_at: float | None = None  # monotonic time of the next start
    tail_shown: bool = False  # its log's last lines were shown for this series of failed starts


class Supervisor:
    def __init__(self, records: list[Supervised], *, out: TextIO, redact: Callable[[str], str],
                 timezone: str = "Europe/Paris", clock: Callable[[], float] = time.monotonic) -> None:
        self.records = records
        self.out = out
        self.redact = redact
        self.zone = ZoneInfo(timezone)
        self.clock = clock
        for record in records:
            record.info.update(supervision=RUNNING, redemarrages=record.info.get("redemarrages", 0))

    def adopt(self, service: Service, running: RunningService, info: dict[str, Any]) -> Supervised:
        """A service started (and found healthy) by the launcher, to be watched from now on."""
        record = Supervised(service=service, log=running.log, running=running, info=info,
                            started_at=self.clock())
        info.update(supervision=RUNNING, redemarrages=0)
        self.records.append(record)
        return record

    def find(self, name: str) -> Supervised:
        return next(record for record in self.records if record.service.name == name)

    def running(self) -> list[RunningService]:
        return [record.running for record in self.records if record.running is not None]

    def check(self) -> bool:
        """One pass over every service; True when something changed (the state file is to be written)."""
        changed = False
        for record in self.records:
            changed |= self._check_one(record)
        return changed

    def _check_one(self, record: Supervised) -> bool:
        now = self.clock()
        running = record.running
        if running is None:
            if record.restart_at is not None and now >= record.restart_at:
                self._restart(record)
                return True
            return False
        code = running.process.poll()
        if code is not None:
            self.failed(record, describe_exit(code), code=code)
            return True
        if not record.healthy:
            if processes.is_healthy(record.service.health):
                record.healthy = True
                record.tail_shown = False
                record.info.update(supervision=RUNNING, raison=None)
                self._say(t("supervisor.back", service=record.service.label, seconds=f"{now - record.started_at:.1f}",
                            count=record.info["redemarrages"]))
                return True
            if now - record.started_at > record.service.startup_timeout:
                processes.stop(running, grace=5.0)
                self.failed(record, t("supervisor.no_answer", seconds=int(record.service.startup_timeout)),
                            code=running.process.returncode)
                return True
        return False

    def failed(self, record: Supervised, why: str, *, code: int | None) -> None:
        """The service stopped (or could not start): schedule its next start and say so."""
        now = self.clock()
        uptime = now - record.started_at if record.running is not None else 0.0
        record.running = None
        record.delay = next_delay(record.delay, uptime if record.healthy else 0.0)
        record.restart_at = now + record.delay
        failed_at_start = not record.healthy
        reason = self.redact(processes.tail(record.log, REASON_LINES))
        stopped = datetime.datetime.now(self.zone)
        record.info.update(
            pid=None, supervision=WAITING, raison=reason,
            redemarrage_a=round(time.time() + record.delay, 3),
            dernier_arret={"code": code, "signal": _signal_name(code), "description": why,
                           "heure": stopped.isoformat(timespec="seconds"),
                           "apres_secondes": round(uptime, 1)},
        )
        self._say(t("supervisor.died", service=record.service.label, exit=why, seconds=int(record.delay),
                    path=record.log))
        if failed_at_start and not record.tail_shown:  # it does not even start: show why, once
            record.tail_shown = True
            self._say(t("up.log_tail", service=record.service.name, path=record.log))
            self._say(reason)

    def _restart(self, record: Supervised) -> None:
        record.restart_at = None
        count = record.info["redemarrages"] + 1
        record.info.update(redemarrages=count, supervision=STARTING, redemarrage_a=None)
        self._say(t("supervisor.restarting", service=record.service.label, count=count))
        record.healthy = False
        record.started_at = self.clock()
        try:
            running = processes.start(record.service, record.log)
        except Exception as exc:  # prepare() or exec failed: say so and try again later, never stop the loop
            self.failed(record, t("supervisor.cannot_start", detail=self.redact(type(exc).__name__ + ": " + str(exc))),
                        code=None)
            return
        record.running = running
        record.info["pid"] = running.pid

    def replaced(self, record: Supervised, running: RunningService) -> None:
        """The launcher restarted this service on purpose (config reload): not a failure."""
        record.running = running
        record.healthy = True
        record.started_at = self.clock()
        record.restart_at = None
        record.info.update(pid=running.pid, supervision=RUNNING, redemarrage_a=None)

    def _say(self, message: str) -> None:
        print(message, file=self.out, flush=True)


def _signal_name(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return None


def seconds_until(epoch: float | None, now: float | None = None) -> int:
    if epoch is None:
        return 0
    return max(0, math.ceil(epoch - (time.time() if now is None else now)))
