"""``enricher demo`` as a user runs it: a subprocess, and its page in a real Chromium.

Debian's ``chromium`` driven by Python playwright (no browser download). The demo runs with
chaos on; after some simulated customers, the inbox through enricher must agree with
``GET /rooms/<id>`` everywhere while the inbox straight from the backend shows the bug.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright

from ..tools import CHROMIUM_ARGS, chromium

ROOT = Path(__file__).parents[2]
SCREENSHOT = ROOT / "build" / "demo.png"
PLACEHOLDERS = {"Unknown", "Personal"}


class Demo:
    """A running ``enricher demo`` subprocess and the URL it printed."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.stderr_path = tmp_path / "demo.stderr"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "enricher", "demo", *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=ROOT,
            )
        self.url = self._url_line().removeprefix("enricher demo: open ")

    def _url_line(self) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline().strip() if ready else ""
        assert line.startswith("enricher demo: open http://"), (line, self.stderr())
        return line

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.load(response)

    def interrupt(self, timeout: float = 20) -> int:
        """Ctrl-C, and the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path, "--port", "0", "--rate", "5", "--seed", "1")
    yield running
    running.stop()


def test_help_lists_the_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "enricher", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for flag in ("--port", "--rate", "--chaos", "--no-chaos", "--open", "--seed"):
        assert flag in result.stdout, flag


def test_ctrl_c_stops_it_with_exit_status_0(demo: Demo) -> None:
    assert demo.get_json("config.json")["chaos"] is True
    assert demo.interrupt() == 0, demo.stderr()
    assert "Traceback" not in demo.stderr(), demo.stderr()


def test_a_port_in_use_stops_it_with_exit_status_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "enricher", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: in use" in result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


async def _state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("demoState()")
    return state


async def test_the_inbox_through_enricher_agrees_with_rest(demo: Demo) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            await page.goto(demo.url)
            await page.wait_for_function(
                "() => window.demoState && demoState().left.connected"
                " && demoState().right.connected && demoState().right.rooms >= 10",
                timeout=30_000,
            )
            # Rechecks against REST after those rooms came: a difference counts after 3 s.
            rounds = (await _state(page))["rounds"]
            await page.wait_for_function(f"() => demoState().rounds >= {rounds + 5}")
            state = await _state(page)
            right_counter = await page.get_attribute("#right .counter", "data-mismatches")
            left_counter = await page.get_attribute("#left .counter", "data-mismatches")
            right_names = await page.locator("#right .room .name").all_inner_texts()
            complete = await page.get_attribute("#stats", "data-complete")

            # The list changes under the pointer; click one room by its id.
            room_id = await page.locator("#right .room").first.get_attribute("data-room-id")
            await page.locator(f'#right .room[data-room-id="{room_id}"]').click()
            await page.wait_for_function(
                "id => { const chat = document.querySelector('#right .chat');"
                " return chat.dataset.roomId === id && chat.querySelectorAll('.messages li').length > 0; }",
                arg=room_id,
            )
            history = await page.locator("#right .chat .messages li .text").all_inner_texts()
        finally:
            await page.screenshot(path=str(SCREENSHOT))
            await browser.close()

    assert not errors, errors
    assert state["right"]["checked"] >= 10, state["right"]
    assert state["right"]["mismatches"] == [], state["right"]["mismatches"]
    assert right_counter == "0"
    assert len(right_names) >= 10 and not PLACEHOLDERS & set(right_names), right_names
    left_placeholders = PLACEHOLDERS & set(state["left"]["names"])
    assert left_counter != "0" or left_placeholders, state["left"]
    assert int(complete or 0) >= 10, complete
    rest = demo.get_json("config.json")["backend_url"]
    query = {"room_id": room_id or ""}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{rest}/messages", params=query) as got,
    ):
        saved = [m["content_text"] for m in (await got.json())["messages"]]
    assert history and history == saved[: len(history)], (history, saved)
