"""`maillage up`, `down` and `status`: the local all-in-one stack.

``up`` is a supervisor: it holds a lock in the data directory, starts each
service in order and waits for its health check, seeds the demo collectivité on
first start, then watches its children. Ctrl-C or ``maillage down`` (SIGTERM to
the supervisor) stops them in reverse order, without restarting anything. A
service that fails to start the first time stops the stack and shows the tail of
its log; once the stack is up, a child that dies is started again with back-off
(``supervisor.py``). The state file (``run/etat.json``, 0600, replaced
atomically) lets ``status`` and ``down`` find the stack from another terminal and
shows each service's restarts.

Every file the stack writes is private: the umask is 0077 from the start (the
children inherit it) and a data directory left wider by an older version is
narrowed at each start (``secretstore.make_private_tree``).
"""

from __future__ import annotations

import asyncio
import datetime
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from maillage.config import Config, ConfigError, check_data_dir, load_config, with_profile
from maillage.deploy import processes
from maillage.deploy.processes import RunningService, StartError
from maillage.deploy.scaled import scaled_servers_problem
from maillage.deploy.services import HealthCheck, Service, log_path, stack_services
from maillage.deploy.supervisor import STARTING, WAITING, Supervisor, redactor, seconds_until
from maillage.i18n import t
from maillage.secretstore import (
    Secrets,
    ensure_secrets,
    load_secrets,
    make_private_tree,
    private_umask,
    write_private,
)

EXIT_OK, EXIT_FAILED, EXIT_ALREADY_RUNNING = 0, 1, 3


class _StopRequested(Exception):
    pass


class _StopSignal:
    """SIGTERM/SIGINT: raise at once while starting (a wait can be long), only flag while watching."""

    def __init__(self) -> None:
        self.requested = False
        self.raise_now = True

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.raise_now:
            raise _StopRequested


def run_dir(config: Config) -> Path:
    return config.data_dir / "run"


def state_path(config: Config) -> Path:
    return run_dir(config) / "etat.json"


@contextmanager
def stack_lock(config: Config) -> Iterator[bool]:
    """Held by the supervisor for the stack's lifetime; yields False if someone holds it."""
    run_dir(config).mkdir(parents=True, exist_ok=True)
    with (run_dir(config) / "maillage.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_running(config: Config) -> bool:
    with stack_lock(config) as acquired:
        return not acquired


def read_state(config: Config) -> dict[str, Any]:
    try:
        return dict(json.loads(state_path(config).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(config: Config, state: dict[str, Any]) -> None:
    write_private(state_path(config), json.dumps(state, indent=2, ensure_ascii=False))


# --- up -----------------------------------------------------------------------


def up(config: Config, *, out: TextIO = sys.stdout, show_summary: bool = True) -> int:
    private_umask()
    check_data_dir(config)
    stack_secrets = ensure_secrets(config.data_dir, warn=lambda m: print(m, file=out))
    with stack_lock(config) as acquired:
        if not acquired:
            print(t("up.already_running", data_dir=config.data_dir,
                    pid=read_state(config).get("pid", "?")), file=out)
            return EXIT_ALREADY_RUNNING
        make_private_tree(config.data_dir, warn=lambda m: print(m, file=out))
        if config.deploiement.profil == "reparti":
            problem = scaled_servers_problem(config, stack_secrets) or _nginx_missing()
            if problem:
                print(problem, file=out)
                return EXIT_FAILED
        services = stack_services(config, stack_secrets)
        busy = _busy_port(config, services)
        if busy:
            print(busy, file=out)
            return EXIT_FAILED
        return _supervise(config, stack_secrets, services, out, show_summary)


def _nginx_missing() -> str | None:
    return None if shutil.which("nginx") or Path("/usr/sbin/nginx").exists() else t("scaled.nginx_missing")


def _busy_port(config: Config, services: list[Service]) -> str | None:
    address = config.reseau.adresse_ecoute
    for service in services:
        for port, key in ((service.port, service.port_key), *service.more_ports):
            if processes.port_in_use(address, port):
                return t("up.port_in_use", port=port, service=service.label,
                         address=address, key=key, config=config.source)
    return None


def _supervise(config: Config, stack_secrets: Secrets, services: list[Service],
               out: TextIO, show_summary: bool) -> int:
    stop = _StopSignal()
    reload_requested: list[bool] = []

    def request_reload(signum: int, frame: FrameType | None) -> None:
        reload_requested.append(True)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, request_reload)
    supervisor = Supervisor([], out=out, redact=redactor(_secret_values(stack_secrets)),
                            timezone=config.collectivite.fuseau_horaire)
    state: dict[str, Any] = {"pid": os.getpid(), "pret": False, "config": str(config.source),
                             "profil": config.deploiement.profil,
                             "nom_serveur": config.collectivite.nom_serveur, "services": {}}
    try:
        print(t("up.starting", name=config.collectivite.nom,
                server_name=config.collectivite.nom_serveur), file=out, flush=True)
        for service in services:
            # Watched from its start, so that a stop during the wait stops it too.
            _start_one(config, service, state, out, on_started=_adopter(supervisor, service, state))
        _after_start(config, stack_secrets, out)
        # The admin token exists now: redact it too.
        supervisor.redact = redactor(_secret_values(load_secrets(config.data_dir)))
        state["pret"] = True
        _write_state(config, state)
        print(t("up.ready"), file=out, flush=True)
        if show_summary:
            print_summary(config, out=out, detached=False)
        return _watch(config, supervisor, state, reload_requested, stop, out)
    except _StopRequested:
        return EXIT_OK
    except StartError as exc:
        _report_failure(str(exc), exc.log, out)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        running_now = supervisor.running()
        if running_now:
            print(t("up.stopping"), file=out, flush=True)
        processes.stop_all(running_now)
        state_path(config).unlink(missing_ok=True)
        if running_now:
            print(t("up.stopped"), file=out, flush=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _adopter(supervisor: Supervisor, service: Service, state: dict[str, Any]) -> Callable[[RunningService], object]:
    return lambda running: supervisor.adopt(service, running, state["services"][service.name])


def _secret_values(stack_secrets: Secrets) -> list[str]:
    return [str(value) for value in vars(stack_secrets).values() if value]


def _start_one(config: Config, service: Service, state: dict[str, Any], out: TextIO,
               on_started: Callable[[RunningService], object] | None = None) -> RunningService:
    print(t("up.waiting", service=service.label), file=out, flush=True)
    running = processes.start(service, log_path(config.data_dir, service))
    info = state["services"].setdefault(service.name, {})
    info.update(pid=running.pid, url=service.url, libelle=service.label, journal=str(running.log))
    if on_started is not None:
        on_started(running)
    _write_state(config, state)
    seconds = processes.wait_ready(running, on_wait=lambda s: print(
        t("up.still_waiting", service=service.label, seconds=int(s)), file=out, flush=True))
    print(t("up.ready_service", service=service.label, seconds=f"{seconds:.1f}"), file=out, flush=True)
    return running


def _after_start(config: Config, stack_secrets: Secrets, out: TextIO) -> None:
    """Provisioning that needs the homeserver up: the admin account, the demo."""
    # Imported here: they bring in the bots and the portal, which `status` or `sauvegarde`
    # have no use for (the command starts in a fraction of the time).
    from maillage.deploy.neighbour import SHARED_ROOM, neighbour_config, seed_shared_room
    from maillage.deploy.provisioning import demo_seeded, ensure_admin_token, seed_demo
    from maillage.portal.idp_dev import ensure_admin_accounts

    token = asyncio.run(ensure_admin_token(config, stack_secrets))
    if not config.portail.oidc_emetteur:
        ensure_admin_accounts(config.data_dir, config.portail.administrateurs)
    if not config.demo.activee:
        return
    try:
        if not demo_seeded(config):
            print(t("up.demo_seeding"), file=out, flush=True)
            asyncio.run(seed_demo(config, token))
            print(t("up.demo_done"), file=out, flush=True)
        neighbour = neighbour_config(config)
        if neighbour is not None and is_running(neighbour):
            asyncio.run(seed_shared_room(config, neighbour))
            print(t("neighbour.shared_room", name=SHARED_ROOM), file=out, flush=True)
    except Exception as exc:  # the stack is up; the demo resumes at next start
        print(t("up.demo_failed", detail=exc), file=out, flush=True)


def _watch(config: Config, supervisor: Supervisor, state: dict[str, Any],
           reload_requested: list[bool], stop: _StopSignal, out: TextIO) -> int:
    stop.raise_now = False  # from now on a stop is handled between two passes
    while not stop.requested:
        if reload_requested:
            reload_requested.clear()
            stop.raise_now = True  # a reload waits for Synapse: a stop must not wait for it
            try:
                config = _reload(config, supervisor, state, out)
            finally:
                stop.raise_now = False
        if supervisor.check():
            _write_state(config, state)
        time.sleep(0.5)
    return EXIT_OK


def _reload(config: Config, supervisor: Supervisor, state: dict[str, Any], out: TextIO) -> Config:
    """Read the config again and restart Synapse with it (partners, externals…).

    A config that no longer loads is reported and the stack keeps running as it was;
    a Synapse that does not start with the new one is reported and restarted with
    back-off by the supervisor, like a Synapse that died.
    """
    generation = state.get("rechargement", {}).get("generation", 0) + 1
    try:
        fresh = with_profile(load_config(config.source), config.deploiement.profil)
    except ConfigError as exc:
        print(t("reload.invalid", detail=exc), file=out, flush=True)
        state["rechargement"] = {"generation": generation, "erreur": str(exc)}
        _write_state(config, state)
        return config
    print(t("reload.start"), file=out, flush=True)
    started = time.monotonic()
    # Synapse's processes (the main one, and its workers in the scaled profile) read the
    # config: all are restarted, the workers stopped first and started after the main one.
    fresh_services = [s for s in stack_services(fresh, load_secrets(fresh.data_dir)) if _is_synapse(s.name)]
    records = [supervisor.find(service.name) for service in fresh_services]
    for record in reversed(records):
        if record.running is not None:
            processes.stop(record.running)
    for record, service in zip(records, fresh_services, strict=True):
        record.service = service
        try:
            _start_one(fresh, service, state, out, on_started=_replacer(supervisor, record))
        except StartError as exc:
            if record.running is not None:
                processes.stop(record.running, grace=5.0)
            supervisor.failed(record, str(exc), code=record.running.process.returncode if record.running else None)
            state["rechargement"] = {"generation": generation, "erreur": str(exc)}
            _write_state(fresh, state)
            return fresh
    seconds = time.monotonic() - started
    state["rechargement"] = {"generation": generation, "secondes": round(seconds, 2)}
    _write_state(fresh, state)
    print(t("reload.done", seconds=f"{seconds:.1f}"), file=out, flush=True)
    return fresh


def _replacer(supervisor: Supervisor, record: Any) -> Callable[[RunningService], object]:
    return lambda running: supervisor.replaced(record, running)


def _is_synapse(name: str) -> bool:
    return name == "synapse" or name.startswith("synapse-")


def reload(config: Config, *, out: TextIO = sys.stdout, timeout: float = 240.0) -> int:
    """Ask a running supervisor to reload, and wait for the outcome."""
    if not is_running(config):
        return EXIT_OK  # nothing running: the next `up` reads the new config
    state = read_state(config)
    generation = state.get("rechargement", {}).get("generation", 0)
    os.kill(int(state["pid"]), signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = read_state(config).get("rechargement", {})
        if outcome.get("generation", 0) > generation:
            if "erreur" in outcome:
                print(outcome["erreur"], file=out)
                return EXIT_FAILED
            print(t("reload.done", seconds=outcome["secondes"]), file=out)
            return EXIT_OK
        if not is_running(config):
            print(t("reload.stack_stopped", path=config.data_dir / "logs" / "maillage.log"), file=out)
            return EXIT_FAILED
        time.sleep(0.2)
    return EXIT_FAILED


def _report_failure(message: str, log: Path | None, out: TextIO) -> None:
    print(message, file=out, flush=True)
    if log:
        print(t("up.log_tail", service=log.stem, path=log), file=out)
        print(processes.tail(log), file=out, flush=True)


def up_detached(config: Config, *, out: TextIO = sys.stdout) -> int:
    """Start the supervisor in the background, follow its progress, return once ready."""
    check_data_dir(config)
    if is_running(config):
        print(t("up.already_running", data_dir=config.data_dir,
                pid=read_state(config).get("pid", "?")), file=out)
        return EXIT_ALREADY_RUNNING
    log = config.data_dir / "logs" / "maillage.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start_offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as output:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "maillage", "--config", str(config.source), "--profil", config.deploiement.profil,
             "up", "--no-summary"],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    code = _follow(log, start_offset, supervisor, config, out)
    if code == EXIT_OK:
        print_summary(config, out=out, detached=True)
    elif code != EXIT_ALREADY_RUNNING:
        print(t("up.detach_failed", path=log), file=out)
    return code


def _follow(log: Path, offset: int, supervisor: subprocess.Popen[bytes], config: Config,
            out: TextIO) -> int:
    with log.open("rb") as handle:
        handle.seek(offset)
        while True:
            chunk = handle.read()
            if chunk:
                out.write(chunk.decode("utf-8", "replace"))
                out.flush()
            code = supervisor.poll()
            if code is not None:
                out.write(handle.read().decode("utf-8", "replace"))
                return code if code != EXIT_OK else EXIT_FAILED
            state = read_state(config)
            if state.get("pret") and state.get("pid") == supervisor.pid:
                return EXIT_OK
            time.sleep(0.2)


def print_summary(config: Config, *, out: TextIO, detached: bool) -> None:
    from maillage.deploy.provisioning import demo_accounts, demo_dir
    from maillage.portal.idp_dev import ensure_admin_accounts

    state = read_state(config)
    services = state.get("services", {})
    lines = ["", t("summary.title", name=config.collectivite.nom),
             t("summary.server_name", server_name=config.collectivite.nom_serveur),
             t("summary.homeserver", url=config.public_baseurl)]
    caldav = config.caldav.url or services.get("caldav", {}).get("url", "")
    webdav = config.webdav.url or services.get("webdav", {}).get("url", "")
    lines += [t("summary.caldav", url=caldav), t("summary.webdav", url=webdav),
              t("summary.portal", url=config.portal_url + "/"), "", t("summary.how_to", url=config.public_baseurl)]
    if not config.portail.oidc_emetteur:
        admins = ensure_admin_accounts(config.data_dir, config.portail.administrateurs)
        lines += ["", t("summary.portal_admins" if admins else "summary.portal_no_admin", config=config.source)]
        lines += [t("summary.portal_admin", email=email, password=password) for email, password in admins.items()]
    accounts = demo_accounts(config)
    if accounts:
        lines += ["", t("summary.demo_accounts", path=demo_dir(config) / "comptes.json")]
        lines += [t("summary.demo_account", user_id=a["user_id"], password=a["password"],
                    service=a["service"]) for a in accounts]
    lines += ["", t("summary.stop_detached" if detached else "summary.stop")]
    print("\n".join(lines), file=out, flush=True)


# --- status and down ----------------------------------------------------------


def status(config: Config) -> dict[str, Any]:
    running = is_running(config)
    state = read_state(config) if running else {}
    services = []
    ready = bool(state.get("pret"))
    # Same checks as at start, rebuilt from the config once (credentials are not in the state file).
    # The profile the stack was started with (``up --profile scaled``), not only the file's.
    config = with_profile(config, state.get("profil")) if state.get("profil") else config
    checks = {s.name: s.health for s in stack_services(config, load_secrets(config.data_dir))} if running else {}
    for name, info in state.get("services", {}).items():
        entry = {"nom": name, "libelle": info["libelle"], "url": info["url"], "pid": info.get("pid"),
                 "etat": _service_state(info, checks.get(name), ready), "journal": info.get("journal"),
                 "redemarrages": info.get("redemarrages", 0), "dernier_arret": info.get("dernier_arret")}
        if entry["etat"] == "restarting":
            entry["redemarrage_dans"] = seconds_until(info.get("redemarrage_a"))
        if entry["etat"] != "ok" and info.get("supervision") in (WAITING, STARTING) and info.get("raison"):
            entry["raison"] = info["raison"]  # why it stopped: its log's last lines (secrets blanked)
        services.append(entry)
    healthy = running and bool(services) and all(s["etat"] == "ok" for s in services)
    return {"demarre": running, "pret": ready, "sain": healthy,
            "repertoire": str(config.data_dir), "nom_serveur": config.collectivite.nom_serveur,
            "fuseau_horaire": config.collectivite.fuseau_horaire,
            "pid": state.get("pid"), "services": services}


def _service_state(info: dict[str, Any], check: HealthCheck | None, ready: bool) -> str:
    if info.get("supervision") == WAITING:
        return "restarting"
    if not info.get("pid") or not _alive(int(info["pid"])):
        return "down"
    if check is not None and processes.is_healthy(check):
        return "ok"
    return "unhealthy" if ready and info.get("supervision") != STARTING else "starting"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def print_status(report: dict[str, Any], *, out: TextIO) -> None:
    if not report["demarre"]:
        print(t("status.not_running", data_dir=report["repertoire"]), file=out)
        return
    print(t("status.header", data_dir=report["repertoire"]), file=out)
    zone = ZoneInfo(report.get("fuseau_horaire") or "Europe/Paris")
    for service in report["services"]:
        state = t(f"status.state.{service['etat']}", seconds=service.get("redemarrage_dans", 0))
        print(t("status.line", service=service["nom"], state=state, url=service["url"]), file=out)
        stopped = service.get("dernier_arret")
        if stopped:
            when = datetime.datetime.fromisoformat(stopped["heure"]).astimezone(zone)
            print(t("status.restarts", count=service["redemarrages"], exit=stopped["description"],
                    date=when.strftime(t("status.date_format")), time=when.strftime("%H:%M:%S")), file=out)
        if service.get("raison"):
            print(t("status.reason", path=service["journal"]), file=out)
            print("\n".join(f"      | {line}" for line in service["raison"].splitlines()[-8:]), file=out)


def down(config: Config, *, out: TextIO = sys.stdout, timeout: float = 90.0) -> int:
    from maillage.deploy.neighbour import neighbour_config

    neighbour = neighbour_config(config)
    if neighbour is not None and is_running(neighbour):
        down(neighbour, out=out, timeout=timeout)
    if not is_running(config):
        print(t("down.not_running", data_dir=config.data_dir), file=out)
        return EXIT_OK
    state = read_state(config)
    pid = int(state.get("pid", 0))
    if pid:
        print(t("down.waiting", pid=pid), file=out, flush=True)
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(config):
            print(t("down.done"), file=out)
            return EXIT_OK
        time.sleep(0.2)
    for info in state.get("services", {}).values():
        if info.get("pid") and _alive(int(info["pid"])):
            os.kill(int(info["pid"]), signal.SIGKILL)
    if pid and _alive(pid):
        os.kill(pid, signal.SIGKILL)
    print(t("down.forced"), file=out)
    return EXIT_FAILED
