"""Debian's Chromium driven by Playwright (never a downloaded browser), and axe-core's checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, async_playwright, expect

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# The French RGAA follows WCAG 2.1 AA.
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
        "resultTypes": ["violations"]}


@asynccontextmanager
async def chromium_page(*, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": width, "height": height}, locale="fr-FR",
                                                timezone_id="Europe/Paris")
            # Creating a service makes a space, a room, a folder, two calendars and three bindings:
            # seconds on a loaded machine, where Playwright's default is 5 s for an expectation.
            context.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            yield await context.new_page()
        finally:
            await browser.close()


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations of impact « serious » or « critical » on the page as it is now."""
    results = await Axe().run(page, options=WCAG)
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
