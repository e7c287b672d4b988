"""Health endpoint and Prometheus metrics of the bot process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter("maillage_bot_commands_total", "Commands handled", ["bot", "command"],
                                registry=self.registry)
        self.errors = Counter("maillage_bot_errors_total", "Commands that failed", ["bot"], registry=self.registry)
        self.latency = Histogram("maillage_bot_handling_seconds", "Time to handle an event", ["bot"],
                                 registry=self.registry)
        self.backlog = Gauge("maillage_bot_backlog", "Events waiting to be handled", ["bot"], registry=self.registry)
        self.dav_requests = Counter("maillage_bot_dav_requests_total", "Requests made to a DAV server",
                                    ["bot", "method"], registry=self.registry)
        self.pushed = Counter("maillage_bot_pushed_transactions_total",
                              "Transactions Synapse pushed to the bots and that were stored (reception appservice)",
                              registry=self.registry)
        # The email bridge (same process model): SMTP answers, deliveries to rooms, replies out.
        self.mail_smtp = Counter("maillage_courriel_smtp_total", "SMTP answers to DATA by kind", ["resultat"],
                                 registry=self.registry)
        self.mail_delivered = Counter("maillage_courriel_livres_total", "Emails shown in their room",
                                      registry=self.registry)
        self.mail_sent = Counter("maillage_courriel_envoyes_total", "Replies handed to the relay, by outcome",
                                 ["resultat"], registry=self.registry)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_health(metrics: Metrics, address: str, port: int,
                       status: Callable[[], Awaitable[dict[str, object]]],
                       routes: dict[str, Handler] | None = None,
                       mount: Callable[[web.Application], None] | None = None) -> web.AppRunner:
    """``/sante`` (200 while every bot syncs; 503 before, or while the homeserver is away),
    ``/metrics``, and the bots' read APIs (``routes``)."""

    async def health(request: web.Request) -> web.Response:
        report = await status()
        return web.json_response(report, status=200 if report["pret"] else 503)

    async def exposition(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/sante", health)
    app.router.add_get("/metrics", exposition)
    for path, handler in (routes or {}).items():
        app.router.add_get(path, handler)
    if mount is not None:  # the appservice's endpoints, when Synapse pushes the bots their events
        mount(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    return runner
