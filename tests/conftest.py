"""Fixtures every floor of tests may use."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from .tools import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, started (stop and start it to cut it off)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
