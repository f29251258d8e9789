"""Command-line tools the tests use that are not Python packages."""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

T = TypeVar("T")


class Clock:
    """A clock for code that takes one: it says ``now``, which the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool]) -> None:
    """Until ``condition()`` holds: the proxy's state, looked at as its tasks run (the
    caller bounds the wait)."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


def drawn(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """``count`` examples hypothesis draws from ``strategy`` (its generation phase only:
    for input a running process gets, where hypothesis cannot shrink a failure)."""
    examples: list[T] = []

    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(example: T) -> None:
        examples.append(example)

    draw()
    return examples


def installed(command: str, package: str) -> str:
    """The path of ``command`` (Debian's ``package``): required in CI, where .ci/run
    installs it; elsewhere the test is skipped without it."""
    path = shutil.which(command)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{command} is missing: .ci/run installs Debian's {package} package")
        pytest.skip(f"{command} is not installed (apt-get install {package})")
    return path


def promtool() -> str:
    return installed("promtool", "prometheus")


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root here
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium() -> str:
    """Debian's Chromium, for playwright: required in CI, else the test is skipped without it."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return str(CHROMIUM)


def certificates(where: Path) -> Path:
    """Make, in ``where``, a private CA (``ca.pem``) and a certificate it signed for
    127.0.0.1 (``server.pem``, ``server.key``), with the openssl command."""

    command = shutil.which("openssl")
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is missing: install Debian's openssl package")
        pytest.skip("openssl is not installed")

    def openssl(*args: str) -> None:
        subprocess.run([command, *args], cwd=where, check=True, capture_output=True, timeout=60)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=enricher test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    (where / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return where


class RedisServer:
    """A redis-server of its own (Debian's redis-server package) on a free port, with no
    persistence, in ``where``; :meth:`stop` and :meth:`start` again on the same port."""

    def __init__(self, where: Path) -> None:
        self._command = installed("redis-server", "redis-server")
        self._where = where
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self._command, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._where)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stdout is not None
        said = []
        for line in self._proc.stdout:  # its log, until it says it is ready
            said.append(line.decode(errors="replace"))
            if b"Ready to accept connections" in line:
                break
        else:
            pytest.fail(f"redis-server exited: {''.join(said)}")
        # the rest of its log, read so that it never waits on a full pipe
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()

    def pause(self) -> None:
        """It stops answering, its connections open (a hung process): SIGSTOP."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def require_password(self, password: str) -> None:
        """From now on clients must present ``password`` (in the URL: ``redis://:pw@...``)."""
        import redis

        with redis.Redis(port=self.port) as client:
            client.config_set("requirepass", password)
        self.url = f"redis://:{password}@127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


class PrometheusServer:
    """A real Prometheus (Debian's prometheus package) of its own, in ``where``, scraping
    ``targets`` (host:port of /metrics) every second as job ``job``, evaluating ``rules``
    (a rules file) every second; :meth:`query` and :meth:`query_range` ask its HTTP API."""

    def __init__(self, where: Path, targets: list[str], rules: Path, job: str = "enricher") -> None:
        self._command = installed("prometheus", "prometheus")
        self._where = where
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        (where / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = where / "prometheus.log"

    def start(self) -> None:
        """Started; :meth:`ready` waits until it answers."""
        self._log_file = self._log.open("wb")
        self._proc = subprocess.Popen(
            [self._command, f"--config.file={self._where / 'prometheus.yml'}",
             f"--storage.tsdb.path={self._where / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=self._log_file,
        )  # fmt: skip

    async def ready(self, timeout: float = 30) -> None:
        assert self._proc is not None
        async with aiohttp.ClientSession() as session:
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        if self._proc.poll() is not None:
                            pytest.fail(f"prometheus exited: {self.log()}")
                        with contextlib.suppress(aiohttp.ClientError):
                            async with session.get(self.url + "/-/ready") as resp:
                                if resp.status == 200:
                                    return
                        await asyncio.sleep(0.1)
            except TimeoutError:
                pytest.fail(f"prometheus not ready within {timeout}s: {self.log()}")

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-4000:]

    async def _get(self, path: str, **params: str) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, params=params) as resp,
        ):
            body = await resp.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query now: its series, each ``{"metric": labels, "value": [t, v]}``."""
        data = await self._get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        data = await self._get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step)
        )
        result: list[Any] = data["result"]
        return result

    async def rules(self) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/rules")
        return [rule for group in data["groups"] for rule in group["rules"]]

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=30)
            self._proc = None
            self._log_file.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Balancer:
    """A TCP load balancer (a Kubernetes Service) in front of ``port`` on 127.0.0.1: each new
    connection goes to the port it names then; connections already open stay where they
    are (a browser moves when its connection is lost and it reconnects). :meth:`cut` is a
    network partition: open connections closed, new ones refused, until :meth:`restore`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._open = True
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def cut(self) -> None:
        self._open = False
        for writer in self._writers:
            writer.transport.abort()

    def restore(self) -> None:
        self._open = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._open:
                raise ConnectionRefusedError
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:  # partitioned, or the replica is gone: a refused connection
            writer.transport.abort()
            return
        if not self._open:  # cut while it was being made: it never got through
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()
            self._writers.discard(sink)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
