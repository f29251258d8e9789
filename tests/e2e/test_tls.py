"""TLS to the backend through the real process: the Node backend over https with a
certificate of a private CA is refused by default, and accepted, for Socket.IO and REST
alike, when that CA is configured or verification is turned off."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .. import tools
from .conftest import Backend, BrowsersFactory, EnricherFactory, start_backend

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tools.certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def https_backend(node_harness: Path, certificates: Path) -> AsyncIterator[Backend]:
    child, port = await start_backend(
        node_harness,
        TLS_CERT=str(certificates / "server.pem"),
        TLS_KEY=str(certificates / "server.key"),
    )
    trusted = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted))
    stub = Backend(child, port, session, scheme="https")
    try:
        yield stub
    finally:
        await session.close()
        await child.stop()


async def readyz(admin_url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(admin_url + "/readyz") as resp:
        return resp.status, await resp.json()


@pytest.mark.upstream_mode("shared")  # enricher's own connection, retried
async def test_a_backend_certificate_of_an_unknown_ca_is_refused_by_default(
    https_backend: Backend, make_enricher: EnricherFactory
) -> None:
    proxy = await make_enricher(https_backend, connected=False)
    for attempt in range(2):  # refused, and refused again: it keeps trying
        failed = await proxy.child.wait_for(
            lambda item: item.get("event") == "upstream_connect_failed",
            "upstream_connect_failed",
            start=len(proxy.child.items) if attempt else 0,
        )
        assert failed["reason"] == "tls", failed
        assert "certificate verify failed" in failed["error"], failed
    status, body = await readyz(proxy.admin_url)
    assert status == 503 and body["checks"]["upstream"] == "failing", body  # type: ignore[index]
    assert not proxy.logs("upstream_connected")
    assert not proxy.logs("upstream_tls_unverified")


@pytest.mark.parametrize("how", ["its CA configured", "verification off"])
async def test_the_backend_over_https_is_used_for_events_and_rest(
    https_backend: Backend,
    make_enricher: EnricherFactory,
    browsers: BrowsersFactory,
    certificates: Path,
    how: str,
) -> None:
    if how == "its CA configured":
        env = {"ENRICHER_UPSTREAM__TLS_CA_FILE": str(certificates / "ca.pem")}
    else:
        env = {"ENRICHER_UPSTREAM__TLS_VERIFY": "false"}
    proxy = await make_enricher(https_backend, **env)
    assert bool(proxy.logs("upstream_tls_unverified")) == (how == "verification off")
    assert (await readyz(proxy.admin_url))[0] == 200
    group = await browsers(proxy.public_url, 1, context=[https_backend.child, proxy.child])
    sent = await https_backend.customer("6281111", "Siti", "halo")
    await group.wait_all("new_room_complete", sent["room_id"])
    (snapshot,) = [e["payload"] for e in group.events("new_room_complete")]
    # complete: GET /rooms/<id> over https answered, under the same TLS settings
    assert snapshot["enrichment"] == "complete" and snapshot["leads_info"]["loan_type"]
    assert (await https_backend.rest_calls()) == {sent["room_id"]: 1}
    assert (await readyz(proxy.admin_url))[0] == 200
