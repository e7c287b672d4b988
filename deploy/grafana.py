"""The Grafana dashboard of Maillage's own processes (bots, bridge, portal), written by
``maillage deploiement`` beside the other recipes; Synapse's own dashboard is Synapse's
(contrib/grafana in its repository)."""

from __future__ import annotations

from typing import Any

# (title, PromQL, unit): what an operator looks at first.
PANELS: list[tuple[str, str, str]] = [
    ("Commandes traitées par robot (par minute)", "sum by (bot) (rate(maillage_bot_commands_total[5m])) * 60", "short"),
    ("Commandes en échec (par minute)", "sum by (bot) (rate(maillage_bot_errors_total[5m])) * 60", "short"),
    ("Temps de traitement p95 (s)",
     "histogram_quantile(0.95, sum by (bot, le) (rate(maillage_bot_handling_seconds_bucket[5m])))", "s"),
    ("Événements en attente", "sum by (bot) (maillage_bot_backlog)", "short"),
    ("Requêtes WebDAV/CalDAV (par minute)",
     "sum by (bot, method) (rate(maillage_bot_dav_requests_total[5m])) * 60", "short"),
    ("Courriels : réponses SMTP (par minute)", "sum by (resultat) (rate(maillage_courriel_smtp_total[5m])) * 60",
     "short"),
    ("Courriels montrés dans les salons (par minute)", "rate(maillage_courriel_livres_total[5m]) * 60", "short"),
    ("Réponses envoyées par le relais (par minute)",
     "sum by (resultat) (rate(maillage_courriel_envoyes_total[5m])) * 60", "short"),
    ("Portail : requêtes par classe de statut (par minute)",
     "sum by (statut) (rate(maillage_portail_requetes_total[5m])) * 60", "short"),
    ("Portail : temps de réponse p95 (s)",
     "histogram_quantile(0.95, sum by (le) (rate(maillage_portail_requete_secondes_bucket[5m])))", "s"),
    ("Portail : connexions (par heure)", "rate(maillage_portail_connexions_total[1h]) * 3600", "short"),
]


def dashboard() -> dict[str, Any]:
    panels = []
    for index, (title, expr, unit) in enumerate(PANELS):
        panels.append({
            "id": index + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${source}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"expr": expr, "refId": "A", "datasource": {"type": "prometheus", "uid": "${source}"}}],
        })
    return {
        "title": "Maillage — robots, passerelle de courriel, portail", "uid": "maillage", "schemaVersion": 39,
        "timezone": "Europe/Paris", "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "tags": ["maillage"],
        "templating": {"list": [{"name": "source", "type": "datasource", "query": "prometheus",
                                 "label": "Source Prometheus"}]},
        "panels": panels,
    }


def metric_names(expr: str) -> set[str]:
    """The Maillage metric names a PromQL expression reads (without _bucket/_sum/_count)."""
    import re

    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"maillage_[a-z_]+", expr)}
