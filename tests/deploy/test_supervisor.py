"""`maillage up` keeps its services running: a child killed with SIGKILL comes back, alone.

Real processes, no mocks: the stack is started by the real command, its children
are killed with SIGKILL by the pids `maillage status --json` shows, and the
status, the supervisor's log and the services' own ports tell what happened.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from maillage.deploy.supervisor import BACKOFF_MAX, STABLE_AFTER, describe_exit, next_delay, redactor
from tests.deploy.conftest import Stack
from tests.deploy.test_launcher import init_stack, maillage

# Synapse last: the bots wait for it to come back.
KILL_ORDER = ("caldav", "webdav", "bots", "courriel", "portail", "idp-dev", "synapse")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"still waiting after {timeout} s: {what}"
        time.sleep(poll)


def all_ok(stack: Stack) -> dict[str, dict[str, Any]] | None:
    services = stack.services()
    return services if all(s["etat"] == "ok" for s in services.values()) else None


def answers(service: dict[str, Any]) -> bool:
    """The service listens and answers HTTP on its own port (DAV servers want credentials: any answer will do)."""
    health = {"synapse": "/health", "bots": "/sante", "courriel": "/sante"}
    url = service["url"].rstrip("/") + health.get(service["nom"], "/")
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code < 500


def test_back_off_doubles_up_to_a_minute_and_starts_over_after_a_stable_minute() -> None:
    delays = [next_delay(0, 0)]
    for _ in range(8):
        delays.append(next_delay(delays[-1], 0.5))
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert next_delay(60, STABLE_AFTER) == 1 and next_delay(8, STABLE_AFTER - 1) == 16
    assert BACKOFF_MAX == 60
    assert describe_exit(-9) == "signal SIGKILL" and describe_exit(1) == "code 1"


def test_lines_shown_from_a_log_never_carry_a_secret() -> None:
    redact = redactor(["mot-de-passe-dav-tres-long"])
    text = redact("auth mot-de-passe-dav-tres-long ok; token syt_bWFpbGxhZ2U_abcDEF_0x1; access_token=abc123&x=1")
    assert text == "auth *** ok; token ***; access_token=***&x=1"


@pytest.mark.slow
def test_each_service_killed_with_sigkill_comes_back_and_the_others_keep_running(running_stack: Stack) -> None:
    stack = running_stack
    for name in KILL_ORDER:
        before = wait_until(lambda: all_ok(stack), 90, f"every service healthy before killing {name}")
        victim = before[name]
        os.kill(victim["pid"], signal.SIGKILL)

        def back(name: str = name, old_pid: int = victim["pid"]) -> dict[str, Any] | None:
            service = stack.services()[name]
            return service if service["etat"] == "ok" and service["pid"] not in (None, old_pid) else None

        after = wait_until(back, 60, f"{name} restarted after SIGKILL")
        assert answers(after), f"{name} does not answer on its port after its restart"
        assert after["redemarrages"] == victim["redemarrages"] + 1
        assert after["dernier_arret"]["signal"] == "SIGKILL" and after["dernier_arret"]["code"] == -9
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0[12]:00", after["dernier_arret"]["heure"]), \
            "the time of the stop is Europe/Paris time"
        others = {n: s["pid"] for n, s in stack.services().items() if n != name}
        assert others == {n: s["pid"] for n, s in before.items() if n != name}, f"killing {name} moved another service"

    # The bots lost Synapse for a moment: they come back in the same process.
    final = wait_until(lambda: all_ok(stack), 90, "the whole stack healthy after the last restart")
    assert {name: s["redemarrages"] for name, s in final.items()} == dict.fromkeys(KILL_ORDER, 1)
    text = maillage(stack.data_dir, "status")
    assert text.returncode == 0, text.stdout
    assert text.stdout.count("redémarrages : 1 ; dernier arrêt : signal SIGKILL, le ") == len(KILL_ORDER), text.stdout

    log = (stack.data_dir / "logs" / "maillage.log").read_text()
    for label in ("Agendas (Radicale)", "Documents (WsgiDAV)", "Robots", "Passerelle de courriel",
                  "Portail d’administration",
                  "Identité (fournisseur de développement)", "Synapse"):
        assert f"{label} s’est arrêté de façon inattendue (signal SIGKILL) : redémarrage dans " in log
        assert f"✔ {label} est reparti en " in log
    assert_no_secret(stack.data_dir, log)


@pytest.mark.slow
def test_a_service_that_fails_at_every_start_backs_off_and_status_says_why(running_stack: Stack) -> None:
    stack = running_stack
    before = wait_until(lambda: all_ok(stack), 90, "every service healthy")
    caldav = before["caldav"]
    log = stack.data_dir / "logs" / "maillage.log"
    log_offset = log.stat().st_size
    with socket.socket() as squatter:
        # Another program takes Radicale's port as soon as Radicale dies: every start fails at once.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(caldav["pid"], signal.SIGKILL)
        wait_until(lambda: _bind(squatter, stack.ports["port_caldav"]), 5, "the port freed by Radicale", poll=0.01)
        squatter.listen()

        def failing() -> dict[str, Any] | None:
            service = stack.services()["caldav"]
            failed_starts = service["redemarrages"] - caldav["redemarrages"]  # each try so far failed
            return service if service["etat"] == "restarting" and failed_starts >= 2 else None

        waited = time.monotonic()
        service = wait_until(failing, 40, "two failed starts of Radicale")
        assert "Address already in use" in service["raison"], service["raison"]
        assert service["dernier_arret"]["code"] == 1 and service["redemarrage_dans"] > 0

        def status_waiting() -> subprocess.CompletedProcess[str] | None:
            # Between two tries Radicale is briefly « arrêté » (dead, not yet seen by the supervisor).
            text = maillage(stack.data_dir, "status")
            return text if re.search(r"caldav +redémarrage dans \d+ s", text.stdout) else None

        text = wait_until(status_waiting, 30, "« maillage status » showing Radicale's next try")
        assert text.returncode == 1
        assert "dernières lignes de son journal" in text.stdout and "Address already in use" in text.stdout
        # No spinning: the waits double (1 or 2 s, then 2 or 4, then 4 or 8…).
        delays = [int(d) for d in re.findall(r"Agendas \(Radicale\) s’est arrêté de façon inattendue \([^)]*\) : "
                                             r"redémarrage dans (\d+) s", log.read_bytes()[log_offset:].decode())]
        assert len(delays) >= 3 and all(b == 2 * a for a, b in pairwise(delays)), delays
        attempts = stack.services()["caldav"]["redemarrages"] - caldav["redemarrages"]
        assert attempts <= 2 + (time.monotonic() - waited) / 2, "restarts must back off, not spin"
        assert "Dernières lignes du journal de caldav" in log.read_bytes()[log_offset:].decode()
    # The port is free again: Radicale comes back at its next try, the others never moved.
    after = wait_until(lambda: all_ok(stack), 70, "Radicale back once its port is free")
    assert after["caldav"]["pid"] != caldav["pid"]
    assert {n: s["pid"] for n, s in after.items() if n != "caldav"} == \
        {n: s["pid"] for n, s in before.items() if n != "caldav"}
    assert "raison" not in after["caldav"]


def _bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def assert_no_secret(data_dir: Path, text: str) -> None:
    secrets_text = (data_dir / "secrets" / "secrets.toml").read_text()
    values = re.findall(r'= "([^"]{16,})"', secrets_text)
    assert values and not any(value in text for value in values), "a secret reached the supervisor's log"


@pytest.mark.slow
def test_a_clean_stop_during_a_pending_restart_stops_everything_and_restarts_nothing(stack_dir: Path) -> None:
    init_stack(stack_dir, demo=False)
    started = maillage(stack_dir, "up", "--detach")
    assert started.returncode == 0, started.stdout
    services = {s["nom"]: s for s in Stack(stack_dir, {}).status()["services"]}
    supervisor = Stack(stack_dir, {}).status()["pid"]
    os.kill(services["webdav"]["pid"], signal.SIGKILL)
    log = stack_dir / "logs" / "maillage.log"
    wait_until(lambda: "Documents (WsgiDAV) s’est arrêté" in log.read_text(), 10, "the supervisor saw the death",
               poll=0.02)
    os.kill(supervisor, signal.SIGTERM)  # what `maillage down` sends, within the 1 s back-off
    wait_until(lambda: not Stack(stack_dir, {}).status()["demarre"], 60, "the stack stopped")
    text = log.read_text()
    assert "redémarrage (n° 1)" not in text.split("Documents (WsgiDAV) s’est arrêté", 1)[1], text
    assert text.rstrip().endswith("Maillage est arrêté.")
    for service in services.values():
        with pytest.raises(ProcessLookupError):
            os.kill(service["pid"], 0)
    assert maillage(stack_dir, "status").returncode == 1
