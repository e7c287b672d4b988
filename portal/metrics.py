"""The portal's Prometheus metrics (``/metrics``): requests by route template and status class,
their duration, the sign-ins. Route templates, never paths: an agent's id or a share token
never becomes a label."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class PortalMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("maillage_portail_requetes_total", "Requests answered", ["route", "statut"],
                                registry=self.registry)
        self.duration = Histogram("maillage_portail_requete_secondes", "Time to answer a request", ["route"],
                                  registry=self.registry)
        self.sign_ins = Counter("maillage_portail_connexions_total", "Sign-ins completed", registry=self.registry)


def add_metrics(app: FastAPI, metrics: PortalMetrics) -> None:
    @app.middleware("http")
    async def measured(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "(autre)"
        metrics.requests.labels(template, f"{response.status_code // 100}xx").inc()
        metrics.duration.labels(template).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def exposition() -> Response:
        return Response(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
