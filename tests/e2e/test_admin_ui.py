"""The real Socket.IO Admin UI (the page of npm's @socket.io/admin-ui, served from this
machine) in a real headless Chromium, logging in to the real ``enricher serve``'s admin
address with ``admin_ui`` on, while real socket.io-client browsers are connected through
it to the Node backend: the page lists every browser's socket; a wrong password gets its
"invalid credentials".

``ENRICHER_ADMIN_UI_PICTURE=docs/admin-ui.png`` keeps the page's picture there."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Page, async_playwright

from ..tools import CHROMIUM_ARGS, chromium
from .conftest import NODE_DIR, Backend, BrowsersFactory, EnricherFactory

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

UI = NODE_DIR / "node_modules" / "@socket.io" / "admin-ui" / "ui" / "dist"
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def admin_ui_page() -> AsyncIterator[str]:
    """The Admin UI's files on a static server of their own: its URL."""
    app = web.Application()

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(UI / "index.html")

    app.router.add_get("/", index)
    app.router.add_static("/", UI)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def log_in(page: Page, ui: str, admin_port: int, password: str) -> None:
    """The Admin UI's login, as an operator fills it in (the server URL remembered)."""
    await page.route("https://**", lambda route: route.abort())  # its web fonts: no internet
    await page.add_init_script(
        f"localStorage.setItem('server_url', {json.dumps(f'http://127.0.0.1:{admin_port}')})"
    )
    await page.goto(ui)
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Connect").click()


async def test_the_admin_ui_lists_the_browsers_connected_through_enricher(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    admin_ui_page: str,
    tmp_path: Path,
) -> None:
    if not UI.is_dir():
        pytest.fail(f"{UI} is missing: npm ci in tests/e2e/node")
    proxy = await make_enricher(
        backend,
        ENRICHER_ADMIN_UI__ENABLED="true",
        ENRICHER_ADMIN_UI__PASSWORD=PASSWORD,
        ENRICHER_ADMIN_UI__ORIGINS=json.dumps([admin_ui_page]),
    )
    group = await browsers(proxy.public_url, 2, context=[backend.child, proxy.child])
    sids = [line["sid"] for line in group.connected_lines()]
    assert len(sids) == 2
    async with async_playwright() as playwright:
        chrome = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = await chrome.new_page(viewport={"width": 1400, "height": 900})
        try:
            await log_in(page, admin_ui_page, proxy.admin_port, "not the password")
            await page.get_by_text("Invalid credentials").wait_for(timeout=15_000)

            await page.reload()
            await log_in(page, admin_ui_page, proxy.admin_port, PASSWORD)
            await page.get_by_text("Connection", exact=True).wait_for(state="hidden")
            await page.goto(f"{admin_ui_page}/#/sockets")
            for sid in sids:  # each browser, upgraded to WebSocket as socket.io-client does
                row = page.locator("tr", has_text=sid)
                await row.get_by_text("WebSocket").wait_for(timeout=15_000)
            picture = os.environ.get("ENRICHER_ADMIN_UI_PICTURE")
            await page.screenshot(
                path=picture or str(tmp_path / "admin-ui.png"), animations="disabled"
            )
        finally:
            await chrome.close()
