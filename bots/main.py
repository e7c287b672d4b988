"""`maillage bots`: the bot process (started by `maillage up`)."""

from __future__ import annotations

import asyncio
import logging
import signal

from maillage.bots.agenda.bot import AgendaBot
from maillage.bots.documents.bot import DocumentsBot
from maillage.bots.portal_api import PortalApi
from maillage.bots.projets.api import ProjectsApi
from maillage.bots.projets.bot import ProjetsBot
from maillage.bots.runtime.bot import Bot, BotRuntime
from maillage.bots.runtime.callers import Callers
from maillage.bots.runtime.metrics import Metrics, serve_health
from maillage.config import Config
from maillage.deploy.provisioning import ADMIN_LOCALPART, ensure_admin_token, user_id
from maillage.i18n import set_language
from maillage.logs import configure_logging
from maillage.secretstore import load_secrets

BOTS: list[type[Bot]] = [DocumentsBot, AgendaBot, ProjetsBot]


async def run_bots(config: Config) -> None:
    set_language(config.collectivite.langue)
    stack_secrets = load_secrets(config.data_dir)
    admin_token = await ensure_admin_token(config, stack_secrets)
    metrics = Metrics()
    runtime = BotRuntime(config, load_secrets(config.data_dir), admin_token, BOTS, metrics,
                         pushed=config.bots_pushed)
    callers = Callers(config.bots_homeserver_url)
    projects = ProjectsApi(callers, lambda: runtime.bot_of(ProjetsBot))
    for_portal = PortalApi(callers, user_id(config, ADMIN_LOCALPART), lambda: runtime.bot_of(ProjetsBot),
                           lambda: runtime.bot_of(DocumentsBot))
    health = await serve_health(metrics, config.reseau.adresse_ecoute, config.bots.port_sante, runtime.health,
                                routes={"/api/projets": projects.projects, "/api/travail": for_portal.work,
                                        "/api/tableau": for_portal.dashboard},
                                mount=runtime.pushed.mount if runtime.pushed is not None else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start()
        await stop.wait()
    finally:
        await runtime.stop()
        await health.cleanup()


def _without_per_message_trust_warnings(record: logging.LogRecord) -> bool:
    # mautrix looks up the sender's cross-signing keys for every message it decrypts and
    # warns each time an agent has none (most clients here): one line per message.
    return not record.getMessage().startswith("Didn't find cross-signing key")


def main(config: Config) -> int:
    configure_logging(config, "bots")
    logging.getLogger("mau").setLevel(logging.WARNING)
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # one line per receipt's font subset otherwise
    logging.getLogger("mau.crypto").addFilter(_without_per_message_trust_warnings)
    asyncio.run(run_bots(config))
    return 0
