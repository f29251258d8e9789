"""End-to-end harness: the Node backend stub, the real ``enricher serve`` process and N real
socket.io-client browsers, all as child processes that talk JSON lines.

Nothing here sleeps to synchronise: every wait is on a line a process printed (or on a
condition polled from the control API), and every wait has a timeout that fails the test
with what was awaited and the last lines each process wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest

from ..support import processes

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
REPO = HERE.parents[1]
TIMEOUT = 10.0  # seconds, for any single thing a test waits for
# The tables kept per browser (enricher_state_entries), and the sessions kept for
# browsers that may come back.
PER_BROWSER = ("browser_", "session_", "recovery_sessions")
START_TIMEOUT = 20.0  # seconds, for a process to come up
LINE_LIMIT = 64 * 1024 * 1024  # a browsers "dump" line can be large

Json = dict[str, Any]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: needs node and the Node harness in tests/e2e/node (not enricher)"
    )
    config.addinivalue_line("markers", "enricher: runs the real `python -m enricher serve`")
    config.addinivalue_line(
        "markers", "upstream_mode(mode): the enricher started by make_enricher runs in that mode"
    )


# ------------------------------------------------------------------------------ processes


class Child(processes.Child):
    """A child process (see tests/support/processes.py) that tests wait on: a wait that
    fails fails the test, with the last lines of this process and of ``context``."""

    def tail(self, n: int = 30) -> str:
        lines = [line if len(line) < 600 else line[:600] + " …" for line in self.text[-n:]]
        code = self.proc.returncode
        state = "running" if code is None else f"exited with {code}"
        return f"--- last {len(lines)} lines of {self.name} ({state}) ---\n" + "\n".join(lines)

    async def wait_until(
        self,
        condition: Callable[[], Any],
        what: str | Callable[[], str],
        timeout: float = TIMEOUT,
        context: Iterable[Child] = (),
    ) -> Any:
        """Wait until ``condition()`` (re-evaluated on each new line) is truthy; return it.
        ``what`` (or what it returns, at the time of failure) names it in the failure."""
        try:
            result = await self.until(condition, timeout)
        except TimeoutError:
            self._fail(f"timed out after {timeout}s waiting for {_say(what)}", context)
        if not result:
            self._fail(f"the process ended while waiting for {_say(what)}", context)
        return result

    async def wait_for(
        self,
        predicate: Callable[[Json], bool],
        what: str,
        timeout: float = TIMEOUT,
        start: int = 0,
        context: Iterable[Child] = (),
    ) -> Json:
        """The first JSON line (from index ``start`` on) for which ``predicate`` holds."""
        found: Json = await self.wait_until(
            lambda: self.first(predicate, start), what, timeout, context
        )
        return found

    def _fail(self, message: str, context: Iterable[Child]) -> NoReturn:
        tails = "\n".join(child.tail() for child in (self, *context) if child is not None)
        pytest.fail(f"{self.name}: {message}\n{tails}", pytrace=False)


def _say(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


async def spawn(
    name: str,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    json_streams: set[str],
    stdin: bool = False,
    new_session: bool = False,
) -> Child:
    """``argv`` started (see :func:`processes.start`); ``json_streams``: the streams whose
    JSON lines are ``items``."""
    proc = await processes.start(
        argv, cwd=cwd, env=env, stdin=stdin, new_session=new_session, line_limit=LINE_LIMIT
    )
    return Child(name, proc, json_streams)


# ------------------------------------------------------------------------------ node


def npm_installed(directory: Path, packages: Iterable[str]) -> Path:
    """``directory`` with its node_modules: ``npm ci`` there (from its lock file) if one of
    ``packages`` is missing. Skips the test without node."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the e2e tests need Node >= 18")
    modules = directory / "node_modules"
    if not all((modules / package).is_dir() for package in packages):
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"{modules} is missing and npm is not installed: run `npm ci` there")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {directory} failed:\n{done.stdout}\n{done.stderr}")
    return directory


@pytest.fixture(scope="session")
def node_harness() -> Path:
    """tests/e2e/node with its node_modules (installed from the lock file if missing)."""
    return npm_installed(NODE_DIR, ["socket.io", "socket.io-client", "@socket.io/admin-ui"])


# ------------------------------------------------------------------------------ backend


class Backend:
    """The backend stub (tests/e2e/node/backend.js) and a client for its control API."""

    def __init__(
        self, child: Child, port: int, session: aiohttp.ClientSession, scheme: str = "http"
    ):
        self.child = child
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.session = session

    async def _call(self, method: str, path: str, body: Json | None = None, **params: Any) -> Any:
        async with self.session.request(
            method, self.url + path, json=body, params=params or None
        ) as resp:
            text = await resp.text()
            if resp.status != 200:
                pytest.fail(f"backend {method} {path} -> {resp.status}: {text}", pytrace=False)
            return json.loads(text)

    async def customer(self, phone: str, name: str | None, text: str, **knobs: Any) -> Json:
        """A webhook (``name`` None: no lead); ``{room_id, message_id, new_room}``,
        answered after all its emits."""
        body: Json = {"phone": phone, "name": name, "text": text, **knobs}
        result: Json = await self._call("POST", "/_control/customer", body)
        return result

    async def agent_reply(self, room_id: str, text: str) -> str:
        result = await self._call(
            "POST", "/_control/agent-reply", {"room_id": room_id, "text": text}
        )
        return str(result["message_id"])

    async def emit(self, event: str, *args: Any, nest: int = 0) -> None:
        """``io.emit`` on the backend; with ``nest``, one argument nested that deep."""
        body = {"event": event, "args": list(args), "nest": nest}
        await self._call("POST", "/_control/emit", body)

    async def burst(
        self, count: int, sizes: list[int], start: int = 0, interval_ms: float = 0
    ) -> None:
        """``count`` ``test:seq`` events {n, pad, sum}, n from ``start``, pads of ``sizes`` in
        turn: in one tick, or ``interval_ms`` apart (answered after the last one)."""
        body = {"count": count, "sizes": sizes, "start": start, "interval_ms": interval_ms}
        await self._call("POST", "/_control/burst", body)

    async def config(self, **knobs: Any) -> Json:
        result: Json = await self._call("POST", "/_control/config", knobs)
        return result

    async def accept(self, open: bool = True) -> None:
        """Let Socket.IO connections in (a stub started with ``GATE=closed``); with
        ``open=False``, refuse them from now on."""
        await self._call("POST", "/_control/accept", {"open": open})

    async def load_stop(self) -> Json:
        """Stop the steady load (``LOAD``); what it sent: ``{messages, new_rooms}``."""
        result: Json = await self._call("POST", "/_control/load-stop")
        return result

    async def kick(self) -> int:
        return int((await self._call("POST", "/_control/kick"))["kicked"])

    async def wait_connections(self, count: int, timeout: float = TIMEOUT) -> int:
        try:
            async with asyncio.timeout(timeout):
                result = await self._call("GET", "/_control/wait-connections", count=count)
        except TimeoutError:
            pytest.fail(
                f"the backend did not see {count} connections in total within {timeout}s\n"
                + self.child.tail(),
                pytrace=False,
            )
        return int(result["total"])

    async def connections(self) -> tuple[int, int]:
        """Socket.IO connections the backend has seen in all, and has now."""
        result = await self._call("GET", "/_control/connections")
        return int(result["total"]), int(result["connected"])

    async def rooms(self) -> list[str]:
        return list((await self._call("GET", "/_control/rooms"))["rooms"])

    async def room(self, room_id: str) -> Json:
        """``GET /rooms/<id>``'s ``data`` as the truth: the room's REST knobs are bypassed
        (so a failing or hanging REST room can still be checked) and the call is not
        counted; the answer has the room's configured shape, flat or nested."""
        async with self.session.get(
            f"{self.url}/rooms/{room_id}", headers={"x-e2e-truth": "1"}
        ) as resp:
            assert resp.status == 200, f"GET /rooms/{room_id} -> {resp.status}"
            data: Json = (await resp.json())["data"]
            return data

    async def messages(self, room_id: str) -> list[Json]:
        return list((await self._call("GET", "/messages", room_id=room_id))["messages"])

    async def joined(self, room_id: str) -> int:
        return int((await self._call("GET", "/_control/joined", room_id=room_id))["count"])

    async def client_events(self) -> list[Json]:
        return list((await self._call("GET", "/_control/client-events"))["events"])

    async def rest_calls(self) -> dict[str, int]:
        result: dict[str, int] = await self._call("GET", "/_control/rest-calls")
        return result


async def start_backend(node_dir: Path, port: int = 0, **env: str) -> tuple[Child, int]:
    """backend.js on ``port`` (0: any); ``env``: its options (``STORE``, ``GATE``, ``LOAD``)."""
    child = await spawn(
        "backend.js",
        ["node", "backend.js"],
        cwd=node_dir,
        env={"PORT": str(port), **env},
        json_streams={"stdout"},
    )
    line = await child.wait_for(
        lambda item: item.get("event") == "listening", "backend: listening", START_TIMEOUT
    )
    return child, int(line["port"])


@pytest.fixture
async def backend(node_harness: Path) -> AsyncIterator[Backend]:
    child, port = await start_backend(node_harness)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    stub = Backend(child, port, session)
    try:
        yield stub
    finally:
        await session.close()
        await stub.child.stop()


# ------------------------------------------------------------------------------ enricher


def enricher_available() -> bool:
    try:
        return importlib.util.find_spec("enricher.__main__") is not None
    except ModuleNotFoundError:
        return False


if str(REPO) not in sys.path:  # so find_spec sees the repo's package from any cwd
    sys.path.insert(0, str(REPO))


class Enricher:
    """A running ``python -m enricher serve``; its JSON log lines are ``child.items``."""

    def __init__(self, child: Child, public_port: int, admin_port: int):
        self.child = child
        self.public_port = public_port
        self.admin_port = admin_port
        self.public_url = f"http://127.0.0.1:{public_port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"

    def logs(self, event: str) -> list[Json]:
        return [item for item in self.child.items if item.get("event") == event]

    async def metrics(self) -> dict[str, float]:
        """``/metrics`` on the admin address: each sample, by name with its labels as
        written (``enricher_deliveries_total{path="direct"}``)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.admin_url + "/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    async def per_browser_tables(
        self, until: Callable[[dict[str, float]], bool] = lambda tables: True, timeout: float = 30
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The entries of each table kept per browser (``enricher_state_entries``) once
        ``until(them)``, and all the metrics then. python-engineio forgets a closed
        connection a few seconds after it closed: polled until then."""
        tables: dict[str, float] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    metrics = await self.metrics()
                    tables = {
                        name.split('"')[1]: value
                        for name, value in metrics.items()
                        if name.startswith("enricher_state_entries{")
                        and name.split('"')[1].startswith(PER_BROWSER)
                    }
                    assert tables, "no table kept per browser is exported"
                    if until(tables):
                        return tables, metrics
                    await asyncio.sleep(0.2)  # metrics: nothing to wait on
        except TimeoutError:
            pytest.fail(f"tables kept per browser still {tables} after {timeout} s", pytrace=False)

    async def wait_log(self, event: str, start: int = 0, timeout: float = TIMEOUT) -> Json:
        return await self.child.wait_for(
            lambda item: item.get("event") == event, f"log event {event!r}", timeout, start
        )


EnricherFactory = Callable[..., Awaitable[Enricher]]


@pytest.fixture
async def make_enricher(request: pytest.FixtureRequest) -> AsyncIterator[EnricherFactory]:
    """``await make_enricher(backend, ENRICHER_HOLD_TIMEOUT="1.0", ...)``: a started enricher
    (on 127.0.0.1, or on ``listen=``)."""
    if not enricher_available():
        pytest.skip("the enricher package (`python -m enricher`) is not there yet")
    started: list[Child] = []
    # @pytest.mark.upstream_mode("shared"): a test of what only shared mode does
    marker = request.node.get_closest_marker("upstream_mode")
    mode = {"ENRICHER_UPSTREAM__MODE": marker.args[0]} if marker else {}

    async def start(
        backend: Backend, listen: str = "127.0.0.1:0", connected: bool = True, **env: str
    ) -> Enricher:
        """``listen``: its public address; ``connected``: in shared mode, wait for its
        backend connection too."""
        env = {**mode, **env}
        python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        child = await spawn(
            "enricher",
            processes.enricher_command(backend.url, listen),
            cwd=REPO,
            env={**processes.ENRICHER_ENV, "PYTHONPATH": python_path, **env},
            json_streams={"stdout", "stderr"},
        )
        started.append(child)
        listening = await child.wait_for(
            processes.enricher_listening,
            'enricher log {"event": "listening", "public_port": int, "admin_port": int}',
            START_TIMEOUT,
            context=[backend.child],
        )
        # in transparent mode (the default) enricher has no backend connection of its own
        if connected and env.get("ENRICHER_UPSTREAM__MODE", "transparent") == "shared":
            await child.wait_for(
                lambda item: item.get("event") == "upstream_connected",
                'enricher log {"event": "upstream_connected"}',
                START_TIMEOUT,
                context=[backend.child],
            )
        return Enricher(child, listening["public_port"], listening["admin_port"])

    try:
        yield start
    finally:
        for child in started:
            await child.stop()


@pytest.fixture
async def enricher(backend: Backend, make_enricher: EnricherFactory) -> Enricher:
    return await make_enricher(backend)


# ------------------------------------------------------------------------------ browsers


class Browsers:
    """``node browsers.js URL N``: N socket.io-client sockets keeping the seed's sidebars."""

    def __init__(self, child: Child, n: int, context: list[Child]):
        self.child = child
        self.n = n
        self.context = context  # other processes whose logs explain a failure
        self._tags = itertools.count(1)
        self._seqs: dict[int, list[Json]] = {}
        self._seq_read = 0

    async def _command(self, cmd: Json, reply: str, what: str, timeout: float = TIMEOUT) -> Json:
        """Send ``cmd`` to browsers.js, tagged, and return its ``reply`` line (``what``
        names it if it does not come)."""
        tag = next(self._tags)
        await self.child.send({**cmd, "tag": tag})
        line: Json = await self.child.wait_for(
            lambda item: item.get("type") == reply and item.get("tag") == tag,
            what,
            timeout,
            context=self.context,
        )
        return line

    async def wait_until(
        self, condition: Callable[[], Any], what: str | Callable[[], str], timeout: float = TIMEOUT
    ) -> Any:
        return await self.child.wait_until(condition, what, timeout, self.context)

    def events(self, event: str | None = None, id: str | None = None) -> list[Json]:
        return [
            item
            for item in self.child.items
            if item.get("type") == "event"
            and (event is None or item.get("event") == event)
            and (id is None or item.get("id") == id)
        ]

    def who_got(self, event: str, id: str | None = None, args: list[Any] | None = None) -> set[int]:
        return {
            item["browser"]
            for item in self.events(event, id)
            if args is None or item.get("args") == args
        }

    async def wait_all(
        self,
        event: str,
        id: str | None = None,
        args: list[Any] | None = None,
        browsers: Iterable[int] | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        """Wait until each of ``browsers`` (default: all) got ``event`` (with that id/args)."""
        wanted = set(range(self.n) if browsers is None else browsers)

        def done() -> bool:
            return wanted <= self.who_got(event, id, args)

        detail = f" id={id}" if id is not None else ""
        detail += f" args={args!r}" if args is not None else ""

        def what() -> str:
            missing = sorted(wanted - self.who_got(event, id, args))
            return f"{event!r}{detail} at every browser (missing at browsers {_ranges(missing)})"

        await self.child.wait_until(done, what, timeout, self.context)

    def seqs(self, browser: int) -> list[Json]:
        """The ``test:seq`` events one browser received, in order: ``{"n", "ok"}``."""
        items = self.child.items
        for item in items[self._seq_read :]:
            if item.get("type") == "seq":
                self._seqs.setdefault(item["browser"], []).append(item)
        self._seq_read = len(items)
        return self._seqs.get(browser, [])

    async def wait_seqs(
        self, count: int, browsers: Iterable[int] | None = None, timeout: float = TIMEOUT
    ) -> None:
        """Wait until each of ``browsers`` (default: all) received ``count`` ``test:seq``."""
        wanted = list(range(self.n) if browsers is None else browsers)

        def short() -> list[int]:
            return [b for b in wanted if len(self.seqs(b)) < count]

        await self.wait_until(
            lambda: not short(),
            lambda: f"{count} test:seq events at browsers {_ranges(short())}",
            timeout,
        )

    async def pause(self, browser: int, resume: bool = False) -> None:
        """Stop (or start again) reading one browser's WebSocket."""
        kind = "resumed" if resume else "paused"
        cmd = {"cmd": "resume" if resume else "pause", "browser": browser}
        await self._command(cmd, kind, f"browser {browser} {kind}")

    async def renew_auth(self, browser: int, auth: Json) -> None:
        """Set the ``auth`` one browser presents at its next connect (a renewed token)."""
        cmd = {"cmd": "auth", "browser": browser, "auth": auth}
        await self._command(cmd, "auth_set", f"browser {browser}'s auth set")

    async def cut(self, browser: int, reconnect: bool = False) -> None:
        """Lose one browser's connection (``socket.io.engine.close()``), and keep it away;
        with ``reconnect``, let it come back (it presents its session, as after a blip)."""
        kind = "reconnecting" if reconnect else "cut"
        cmd = {"cmd": "reconnect" if reconnect else "cut", "browser": browser}
        await self._command(cmd, kind, f"browser {browser} {kind}")

    async def wait_connects(self, browser: int, connects: int) -> Json:
        """The ``connected`` line of one browser's ``connects``-th connection."""
        line: Json = await self.child.wait_for(
            lambda item: (
                item.get("type") == "connected"
                and item.get("browser") == browser
                and item.get("connects") == connects
            ),
            f"browser {browser} connected {connects} times",
            TIMEOUT,
            context=self.context,
        )
        return line

    async def wait_everyone(
        self, event: str, key: str, n: int = 1, timeout: float = TIMEOUT
    ) -> None:
        """With ``--quiet``: wait until every browser has received ``event`` ``n`` times
        (``key``: the room or message id, else the arguments as JSON)."""
        await self.child.wait_for(
            lambda item: (
                item.get("type") == "all"
                and item.get("event") == event
                and item.get("key") == key
                and item.get("n") == n
            ),
            f"{event!r} {key} ({n}x) at every browser",
            timeout,
            context=self.context,
        )

    async def summary(self) -> Json:
        """With ``--quiet``: what the browsers got, grouped (see browsers.js)."""
        return await self._command({"cmd": "summary"}, "summary", "a summary")

    def connected_lines(self) -> list[Json]:
        return [item for item in self.child.items if item.get("type") == "connected"]

    async def wait_connected(self, timeout: float = START_TIMEOUT) -> None:
        await self.wait_until(
            lambda: {item["browser"] for item in self.connected_lines()} >= set(range(self.n)),
            f"all {self.n} browsers to connect",
            timeout,
        )

    async def dump(self) -> list[Json]:
        browsers: list[Json] = (await self._command({"cmd": "dump"}, "dump", "a dump"))["browsers"]
        return browsers

    async def emit(
        self, browser: int, event: str, *args: Any, ack: bool = True, timeout: float = TIMEOUT
    ) -> Json:
        """Emit from one browser; with ``ack``, the ``{"args": [...]}`` or ``{"error": ...}``
        line of its acknowledgement (the browser gives up after 5 s)."""
        cmd = {"cmd": "emit", "browser": browser, "event": event, "args": list(args), "ack": ack}
        kind = "ack" if ack else "emitted"
        return await self._command(
            cmd, kind, f"the {kind} of {event!r} from browser {browser}", timeout
        )

    async def close(self) -> None:
        if self.child.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.child.send({"cmd": "close"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.child.proc.wait(), 5)
        await self.child.stop()


BrowsersFactory = Callable[..., Awaitable[Browsers]]


async def stack(
    backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    n: int,
    flags: Iterable[str] = (),
    **env: str,
) -> tuple[Enricher, Browsers]:
    """enricher in front of ``backend`` (``env``: its settings), and ``n`` browsers on it."""
    proxy = await make_enricher(backend, **env)
    group = await browsers(proxy.public_url, n, context=[backend.child, proxy.child], flags=flags)
    return proxy, group


@pytest.fixture
async def browsers(node_harness: Path) -> AsyncIterator[BrowsersFactory]:
    """``await browsers(url, n, context=[...], flags=[...])``: n connected browsers
    (``flags``: browsers.js options such as ``--transports websocket``; ``wait=False``: do
    not wait for them to connect, they may be refused)."""
    started: list[Browsers] = []

    async def start(
        url: str,
        n: int,
        context: Iterable[Child] = (),
        flags: Iterable[str] = (),
        wait: bool = True,
    ) -> Browsers:
        flags = list(flags)
        child = await spawn(
            f"browsers.js x{n} {' '.join(flags)}".rstrip(),
            ["node", "browsers.js", url, str(n), *flags],
            cwd=node_harness,
            json_streams={"stdout"},
            stdin=True,
        )
        group = Browsers(child, n, list(context))
        started.append(group)
        if wait:
            await group.wait_connected()
        return group

    try:
        yield start
    finally:
        for group in started:
            await group.close()


# ------------------------------------------------------------------------------ checks

_barriers = itertools.count(1)


async def barrier(backend: Backend, group: Browsers, timeout: float = TIMEOUT) -> None:
    """Emit ``test:barrier`` upstream and wait until every browser has it: all that the
    backend emitted before it has then been delivered (one ordered upstream connection)."""
    n = next(_barriers)
    await backend.emit("test:barrier", {"n": n})
    await group.wait_all("test:barrier", args=[{"n": n}], timeout=timeout)


async def settle(
    backend: Backend, group: Browsers, new_rooms: Iterable[str] = (), timeout: float = TIMEOUT
) -> list[Json]:
    """Wait for each new room's ``new_room_complete`` at every browser, then a barrier;
    the browsers' dump."""
    for room_id in new_rooms:
        await group.wait_all("new_room_complete", room_id, timeout=timeout)
    await barrier(backend, group, timeout)
    return await group.dump()


def display_name(entry: Json) -> Any:
    """The seed's display chain: ``leads_info?.name || room_title || room_phone``."""
    lead = entry.get("leads_info")
    name = lead.get("name") if isinstance(lead, dict) else None
    return name or entry.get("room_title") or entry.get("room_phone")


def rest_last_message(data: Json) -> tuple[Any, Any]:
    """(text, timestamp) of a REST room's last message, flat or nested."""
    nested = data.get("last_message")
    if isinstance(nested, dict):
        return nested.get("content_text"), nested.get("created_at")
    return data.get("last_message_text"), data.get("last_message_timestamp")


def sidebar_last_message(entry: Json, sidebar: str) -> tuple[Any, Any]:
    if sidebar == "modern":
        last = entry.get("last_message")
        last = last if isinstance(last, dict) else {}
        return last.get("content_text"), last.get("created_at")
    return entry.get("last_message_text"), entry.get("last_message_timestamp")


def expected_name(data: Json) -> str:
    lead = data.get("leads_info")
    name = lead.get("name") if isinstance(lead, dict) else None
    return name or f"Customer {data.get('room_phone')}"


async def sidebar_check(
    backend: Backend,
    dump: list[Json],
    *,
    rooms: Iterable[str] | None = None,
    sidebars: Iterable[str] = ("modern", "legacy"),
    names: dict[str, set[str]] | None = None,
) -> None:
    """Every browser's sidebars agree with ``GET /rooms/<id>`` for each room (default: all
    the backend has): one entry, the name, the last message, the unread count; and no id
    was received twice under one event name. ``names`` widens the accepted names of a room.
    All problems are reported together, each with the browsers that show it."""
    room_ids = list(await backend.rooms() if rooms is None else rooms)
    problems: dict[str, list[int]] = {}

    def problem(browser: int, text: str) -> None:
        problems.setdefault(text, []).append(browser)

    for room_id in room_ids:
        data = await backend.room(room_id)
        want_text, want_time = rest_last_message(data)
        want_names = {expected_name(data)} | (names or {}).get(room_id, set())
        for b in dump:
            for sidebar in sidebars:
                entries = [
                    e for e in b[sidebar] if isinstance(e, dict) and e.get("room_id") == room_id
                ]
                where = f"room {room_id} ({data.get('room_phone')}) {sidebar}"
                if len(entries) != 1:
                    problem(b["browser"], f"{where}: {len(entries)} entries, want 1")
                    continue
                entry = entries[0]
                shown = display_name(entry)
                if shown in ("Unknown", "Personal") or shown not in want_names:
                    problem(
                        b["browser"], f"{where}: name {shown!r}, want one of {sorted(want_names)}"
                    )
                text, when = sidebar_last_message(entry, sidebar)
                if (text, when) != (want_text, want_time):
                    problem(
                        b["browser"],
                        f"{where}: last message {(text, when)!r}, REST says {(want_text, want_time)!r}",
                    )
                if entry.get("unread_count") != data.get("unread_count"):
                    problem(
                        b["browser"],
                        f"{where}: unread_count {entry.get('unread_count')!r}, "
                        f"REST says {data.get('unread_count')!r}",
                    )
    for b in dump:
        for event, by_id in b["counts"].items():
            for id_, n in by_id.items():
                if n > 1:
                    problem(b["browser"], f"{event} id {id_} received {n} times, want at most 1")
    if problems:
        lines = [f"{text}  [browsers {_ranges(bs)}]" for text, bs in problems.items()]
        pytest.fail("sidebars differ from REST:\n  " + "\n  ".join(lines), pytrace=False)


async def check_messages_unchanged(backend: Backend, group: Browsers) -> None:
    """Every ``new_message`` / ``room:new_message`` a browser got is the backend's message,
    field for field."""
    truth: dict[str, Json] = {}
    for room_id in await backend.rooms():
        for msg in await backend.messages(room_id):
            truth[msg["id"]] = msg
    bad = []
    for item in group.events("new_message") + group.events("room:new_message"):
        want = truth.get(item["id"])
        if want != item.get("payload"):
            bad.append(
                f"browser {item['browser']} {item['event']} {item['id']}: {item.get('payload')!r}"
                f" != backend {want!r}"
            )
    if bad:
        pytest.fail("messages changed on the way:\n  " + "\n  ".join(bad[:10]), pytrace=False)


def _ranges(numbers: list[int]) -> str:
    numbers = sorted(set(numbers))
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ",".join(parts)
