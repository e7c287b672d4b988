"""Logs as lines for people, or as JSON for a collector (``[journaux] format``)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from maillage.config import parse_config
from maillage.logs import configure_logging
from tests.core.test_config import _problems
from tests.harness.servers import config_document


def test_json_logs_are_one_object_per_line_in_paris_time(tmp_path: Path) -> None:
    config = parse_config(config_document(journaux={"format": "json"}), source=tmp_path / "maillage.toml")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(config, "essai")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("maillage.essai").warning("Relais injoignable : %s", "smtp.example.fr")
        try:
            raise ValueError("exemple")
        except ValueError:
            logging.getLogger("maillage.essai").exception("Échec")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert lines[0]["message"] == "Relais injoignable : smtp.example.fr" and lines[0]["niveau"] == "WARNING"
    assert lines[0]["module"] == "maillage.essai" and lines[0]["horodatage"][-6:] in ("+01:00", "+02:00")
    assert "ValueError: exemple" in lines[1]["exception"]


def test_a_wrong_log_format_is_refused_with_the_key_named(tmp_path: Path) -> None:
    message = _problems(tmp_path, config_document(journaux={"format": "xml"}))
    assert "journaux.format" in message
