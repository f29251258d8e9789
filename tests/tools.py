"""Command-line tools the tests use that are not Python packages."""

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest


def promtool() -> str:
    """The path of promtool (Debian's prometheus package): required in CI, else optional."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


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
        command = shutil.which("redis-server")
        if command is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is missing: .ci/run installs Debian's redis-server")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self._command = command
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
