"""``maillage courriel``: the email bridge's process (started by ``maillage up``): its bot on
the bot runtime, with its own database, and the SMTP and LMTP endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal

from maillage.bots.runtime.bot import BotRuntime
from maillage.bots.runtime.metrics import Metrics, serve_health
from maillage.bridges.email.bot import CourrielBot
from maillage.bridges.email.senders import use_nameserver
from maillage.bridges.email.smtp import MailHandler, serve
from maillage.config import Config, url_host
from maillage.deploy.provisioning import ensure_admin_token
from maillage.i18n import set_language
from maillage.logs import configure_logging
from maillage.secretstore import load_secrets


def database_url(config: Config) -> str:
    if config.courriel.base_de_donnees:
        return config.courriel.base_de_donnees
    path = config.data_dir / "courriel" / "courriel.db"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite:{path}"


async def run_bridge(config: Config) -> None:
    set_language(config.collectivite.langue)
    stack_secrets = load_secrets(config.data_dir)
    admin_token = await ensure_admin_token(config, stack_secrets)
    metrics = Metrics()
    runtime = BotRuntime(config, stack_secrets, admin_token, [CourrielBot], metrics, database=database_url(config))
    host = url_host(config.reseau.adresse_ecoute).strip("[]")
    health = await serve_health(metrics, config.reseau.adresse_ecoute, config.courriel.port_sante, runtime.health)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.Server] = []
    try:
        await runtime.start()
        bot = runtime.bot_of(CourrielBot)
        assert bot is not None
        if config.courriel.serveur_dns:
            use_nameserver(config.courriel.serveur_dns)
        handler = MailHandler(bot.mail, bot.domain, config.courriel.limite_par_heure, bot.arrived,
                              policy=config.courriel.politique_expediteur, relays=config.courriel.relais_entrants,
                              metrics=metrics)
        servers = await serve(handler, host, config.courriel.port_smtp, config.courriel.port_lmtp,
                              config.courriel.taille_max_mo * 1024 * 1024, bot.domain)
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        await runtime.stop()
        await health.cleanup()


def main(config: Config) -> int:
    configure_logging(config, "courriel")
    logging.getLogger("mau").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: one line per command otherwise
    asyncio.run(run_bridge(config))
    return 0
