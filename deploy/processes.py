"""Start, watch and stop the processes of services; shared by the launcher and the tests."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from maillage.deploy.services import HealthCheck, PrepareError, Service
from maillage.i18n import t

_PR_SET_PDEATHSIG = 1


class StartError(Exception):
    """A service could not start; the message is for the admin, the log tail follows."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


def _die_with_parent() -> None:
    # Children die with the supervisor even if it is killed with SIGKILL. The signal
    # follows the *thread* that started the child: start children from the main thread.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_in_use(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def is_healthy(check: HealthCheck, timeout: float = 2.0) -> bool:
    try:
        response = httpx.request(
            check.method, check.url, auth=check.auth, headers=check.headers, timeout=timeout
        )
    except httpx.HTTPError:
        return False
    return response.status_code in check.ok_status


def tail(path: Path, lines: int = 25) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class RunningService:
    service: Service
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def start(service: Service, log: Path) -> RunningService:
    """Prepare the service's files and start it, its output going to ``log``."""
    try:
        service.prepare()
    except PrepareError as exc:
        raise StartError(str(exc)) from None
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen(
            service.argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **service.env},
            start_new_session=True,  # Ctrl-C reaches the supervisor only, which stops in order
            preexec_fn=_die_with_parent,
        )
    return RunningService(service=service, process=process, log=log)


def wait_ready(
    running: RunningService,
    *,
    on_wait: Callable[[float], None] | None = None,
    poll: float = 0.2,
) -> float:
    """Seconds the service took to pass its health check; raises StartError otherwise."""
    started = time.monotonic()
    last_report = started
    while True:
        code = running.process.poll()
        if code is not None:
            raise StartError(t("up.child_died", service=running.service.label, code=code), running.log)
        if is_healthy(running.service.health):
            return time.monotonic() - started
        now = time.monotonic()
        if now - started > running.service.startup_timeout:
            raise StartError(
                t("up.timeout", service=running.service.label, seconds=int(running.service.startup_timeout)),
                running.log,
            )
        if on_wait and now - last_report >= 5:
            on_wait(now - started)
            last_report = now
        time.sleep(poll)


def stop(running: RunningService, grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if running.process.poll() is not None:
        return
    running.process.terminate()
    try:
        running.process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait(timeout=10)


def stop_all(services: list[RunningService]) -> None:
    for running in reversed(services):
        stop(running)
