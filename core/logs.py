"""Logs of Maillage's own processes (bots, bridge, portal): lines for people (« texte », the
default) or one JSON object per line for a log collector (« json »: Loki, Elasticsearch,
journald's JSON export), chosen by ``[journaux] format``. Times in the collectivité's zone."""

from __future__ import annotations

import datetime
import json
import logging
from zoneinfo import ZoneInfo

from maillage.config import Config

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    def __init__(self, timezone: str) -> None:
        super().__init__()
        self.zone = ZoneInfo(timezone)

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, self.zone)
        line = {"horodatage": moment.isoformat(timespec="milliseconds"), "niveau": record.levelname,
                "module": record.name, "message": record.getMessage(),
                "processus": record.process}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(config: Config, service: str) -> None:
    handler = logging.StreamHandler()
    if config.journaux.format == "json":
        handler.setFormatter(JsonLines(config.collectivite.fuseau_horaire))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, config.journaux.niveau))
    logging.getLogger("maillage").info("%s: logs as %s", service, config.journaux.format)
