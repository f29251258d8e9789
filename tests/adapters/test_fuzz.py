"""Any browser event, however odd: it gets an answer, and the proxy goes on."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enricher.shared_mode import Running

from .conftest import BrowserClient

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
room_ids = st.one_of(
    st.text(),
    st.sampled_from(["../admin", "a/b?c", "%2e%2e%2f", "", " ", "🙂", "x" * 5000, "\x00"]),
    st.integers(),
    st.none(),
    json_values,
)
arguments = st.one_of(
    st.lists(json_values, max_size=3),
    st.builds(
        lambda room_id, extra: [{**extra, "room_id": room_id}],
        room_ids,
        st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    ),
)
events = st.one_of(
    st.sampled_from(
        ["room:join", "room:leave", "echo", "new_message", "connect", "disconnect", "message", "*"]
    ),
    st.text(min_size=1, max_size=30),
)


@pytest.fixture
def proxy_settings() -> dict[str, Any]:
    return {"client_event_rate": 0}  # one browser sends every example, as fast as it can


@pytest.fixture
async def browser(browsers: Any) -> BrowserClient:
    (one,) = await browsers(1)
    return one


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(event=events, args=arguments)
async def test_any_browser_event_is_answered_and_the_proxy_goes_on(
    proxy: Running, browser: BrowserClient, event: str, args: list[Any]
) -> None:
    await browser.sio.call(event, tuple(args), timeout=5)
    assert await browser.sio.call("echo", "still here", timeout=5) == "still here"
    assert browser.sio.connected


@pytest.mark.parametrize("event", ["connect", "disconnect", "*"])
async def test_a_browser_cannot_fake_socket_io_s_own_events(
    proxy: Running, browser: BrowserClient, event: str
) -> None:
    connected = lambda: proxy.metrics.registry.get_sample_value(  # noqa: E731
        "enricher_browsers_connected"
    )
    before = connected()
    answer = await browser.sio.call(event, {"room_id": "r1"}, timeout=5)
    assert answer == {"error": "event_reserved", "event": event}
    assert connected() == before == 1
    assert await browser.sio.call("echo", "still here", timeout=5) == "still here"
