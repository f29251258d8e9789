"""Child processes that write lines, JSON objects among them: how one is started, read,
waited on and stopped, and what /proc says of its CPU time and memory. The end-to-end tests
(tests/e2e/conftest.py) and the benchmark (bench/run.py) start every process with it.

How a failed wait is reported is the caller's: a test fails, the benchmark raises.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Collection
from contextlib import suppress
from pathlib import Path
from typing import Any

Json = dict[str, Any]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# enricher logs JSON lines, each written when it happens.
ENRICHER_ENV = {"ENRICHER_LOG__FORMAT": "json", "PYTHONUNBUFFERED": "1"}


def enricher_command(upstream: str, listen: str = "127.0.0.1:0") -> list[str]:
    """``python -m enricher serve`` in front of ``upstream`` (this Python), its public
    address ``listen``, its admin address any free port of 127.0.0.1."""
    return [sys.executable, "-m", "enricher", "serve", "--upstream", upstream,
            "--listen", listen, "--admin-listen", "127.0.0.1:0"]  # fmt: skip


def enricher_listening(item: Json) -> bool:
    """enricher's log line ``{"event": "listening", "public_port": N, "admin_port": N}``."""
    return (
        item.get("event") == "listening"
        and isinstance(item.get("public_port"), int)
        and isinstance(item.get("admin_port"), int)
    )


async def start(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: bool = False,
    new_session: bool = False,
    line_limit: int,
) -> asyncio.subprocess.Process:
    """``argv`` in ``cwd``, with this process's environment and ``env``; stdout and stderr
    piped (lines of up to ``line_limit`` bytes), stdin piped or /dev/null. ``new_session``:
    in a session and process group of its own (id: its pid), so that whatever it leaves
    running can be ended with ``os.killpg``."""
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=line_limit,
        start_new_session=new_session,
    )


class Child:
    """A started process, its stdout and stderr read line by line as they come: each line
    goes to :meth:`keep_line` (kept in ``text``), each JSON object on a line of
    ``json_streams`` to :meth:`keep_item` (kept in ``items``)."""

    def __init__(
        self,
        name: str,
        proc: asyncio.subprocess.Process,
        json_streams: Collection[str] = ("stdout", "stderr"),
    ):
        self.name = name
        self.proc = proc
        self.items: list[Json] = []  # JSON objects, in arrival order
        self.text: list[str] = []  # "[stream] line", for failure messages
        self._changed = asyncio.Condition()
        streams = [(s, r) for s, r in (("stdout", proc.stdout), ("stderr", proc.stderr)) if r]
        self._open = len(streams)  # streams not yet at their end
        self._pumps = [
            asyncio.create_task(self._pump(stream, source, source in json_streams))
            for source, stream in streams
        ]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def exited(self) -> bool:
        """Every stream at its end: all its lines are in."""
        return self._open == 0

    def keep_line(self, source: str, text: str) -> None:
        self.text.append(f"[{source}] {text}")

    def keep_item(self, item: Json) -> None:
        self.items.append(item)

    async def _pump(self, stream: asyncio.StreamReader, source: str, parse: bool) -> None:
        try:
            while line := await stream.readline():
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                self.keep_line(source, text)
                item = None
                if parse:
                    with suppress(ValueError):
                        item = json.loads(text)
                if isinstance(item, dict):
                    self.keep_item(item)
                async with self._changed:
                    self._changed.notify_all()
        finally:
            self._open -= 1
            async with self._changed:
                self._changed.notify_all()

    def first(self, predicate: Callable[[Json], bool], start: int = 0) -> Json | None:
        """The first of ``items`` (from index ``start`` on) for which ``predicate`` holds."""
        return next((item for item in self.items[start:] if predicate(item)), None)

    async def until(self, condition: Callable[[], Any], timeout: float) -> Any:
        """``condition()``, evaluated again at each line, once it is truthy; or falsy, once
        the process has closed its streams first. TimeoutError after ``timeout`` seconds."""

        async def wait() -> Any:
            async with self._changed:
                while True:
                    result = condition()
                    if result or self.exited:
                        return result
                    await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def send(self, obj: Json) -> None:
        """One JSON line to its stdin."""
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write((json.dumps(obj) + "\n").encode())
        await stdin.drain()

    async def stop(self, timeout: float = 10.0, drain: float = 5.0) -> int | None:
        """SIGTERM, up to ``timeout`` seconds for it to exit, SIGKILL if it has not; then up
        to ``drain`` seconds for the rest of its lines (0: what is not read yet is left).
        Its exit code."""
        if self.proc.returncode is None:
            with suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if drain > 0 and self._pumps:
            await asyncio.wait(self._pumps, timeout=drain)
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        return self.proc.returncode


# ------------------------------------------------------------------------------ /proc


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process, in seconds (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat


def proc_rss_kib(pid: int) -> int | None:
    """The resident set size of a process (VmRSS), in KiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
