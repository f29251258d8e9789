"""Command-line tools the tests use that are not Python packages."""

import os
import shutil
import subprocess
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
