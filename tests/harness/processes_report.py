"""What a failing test's report shows of the servers: the tail of each log."""

from __future__ import annotations

from maillage.deploy.processes import tail
from tests.harness.servers import SERVER_LOGS


def failure_sections(lines: int = 40) -> list[tuple[str, str]]:
    return [(f"journal {log.name} ({log})", tail(log, lines)) for log in dict.fromkeys(SERVER_LOGS)
            if log.exists()]
