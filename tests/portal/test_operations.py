"""Operations: every Maillage process answers its health endpoint and exposes Prometheus
metrics, and the Grafana dashboard written by ``maillage deploiement`` reads only metrics the
running processes really expose (a renamed metric would leave a panel empty)."""

from __future__ import annotations

import httpx
import pytest

from maillage.deploy.grafana import PANELS, dashboard, metric_names
from tests.conftest import ServiceProcess
from tests.portal.conftest import PortalStack

pytestmark = pytest.mark.usefixtures("in_french")


async def test_each_process_has_its_health_and_the_metrics_the_dashboard_reads(
        bots: str, bridge: ServiceProcess, portal: PortalStack) -> None:
    exposed: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for name, url in (("bots", bots), ("courriel", bridge.url), ("portail", portal.url)):
            health = await http.get(f"{url}/sante")
            assert health.status_code == 200, (name, health.text)
            metrics = await http.get(f"{url}/metrics")
            assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
            exposed[name] = metrics.text
        await http.get(f"{portal.url}/connexion")  # a request the portal counts
        counted = (await http.get(f"{portal.url}/metrics")).text
    assert 'maillage_portail_requetes_total{route="/connexion",statut="3xx"}' in counted or \
        'maillage_portail_requetes_total{route="/connexion",statut="2xx"}' in counted, counted[:2000]
    everything = "\n".join(exposed.values())
    wanted = {name for _, expr, _ in PANELS for name in metric_names(expr)}
    missing = sorted(name for name in wanted if f"# TYPE {name} " not in everything)
    assert not missing, missing
    assert len(dashboard()["panels"]) == len(PANELS) >= 10
