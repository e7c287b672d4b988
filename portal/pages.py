"""Server-rendered pages: Jinja2 templates with the message catalogue (``t``) in them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi.templating import Jinja2Templates

from maillage.i18n import current_language, t

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
PARIS = ZoneInfo("Europe/Paris")

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def when(milliseconds: int) -> str:
    """A moment as agents read it: Paris time, day first."""
    return datetime.fromtimestamp(milliseconds / 1000, UTC).astimezone(PARIS).strftime("%d/%m/%Y %H:%M")


templates.env.globals.update(t=t, language=current_language)
templates.env.filters["when"] = when
