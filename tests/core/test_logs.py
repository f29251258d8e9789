"""No credential reaches a log line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from enricher.logs import configure_logging


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """configure_logging() writes to the stderr of the moment, capsys' here, which is
    closed after the test: later tests that log would fail on it."""
    yield
    structlog.reset_defaults()


def test_credentials_are_redacted_from_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    structlog.get_logger("t").warning(
        "upstream_connect_failed",
        url="https://enricher:s3cret-pw@backend.internal:3000/",
        error="Connection refused: wss://backend/socket.io/?EIO=4&token=abc.def&transport=ws",
        headers={"Authorization": "Bearer xyz"},
        auth={"token": "t0ken"},
        room_id="r1",
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    for secret in ("s3cret-pw", "abc.def", "Bearer xyz", "t0ken"):
        assert secret not in line
    fields = json.loads(line)
    assert fields["url"] == "https://enricher:[redacted]@backend.internal:3000/"
    assert "token=[redacted]&transport=ws" in fields["error"]
    assert fields["headers"] == fields["auth"] == "[redacted]"
    assert fields["room_id"] == "r1" and fields["event"] == "upstream_connect_failed"
