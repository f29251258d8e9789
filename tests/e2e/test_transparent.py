"""Transparent mode end to end: through enricher, each agent of a per-agent CRM gets exactly
what it gets when connected to the CRM directly, and the CRM sees the same as directly.

One scripted day (tests/e2e/node/agents.js: five agents on both transports, against
tests/e2e/node/crm.js) runs once directly and once through `enricher serve` with
`upstream.mode: transparent`; each run prints a transcript (what every agent saw, in
order, and the CRM's log of what it saw). Each test compares one thing a user would notice,
direct against through enricher; the last ones compare the whole transcripts, agent by agent.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import START_TIMEOUT, Backend, Child, Enricher, EnricherFactory, Json, spawn

pytestmark = [pytest.mark.e2e, pytest.mark.enricher]

AGENTS = ("a1", "a2", "a3", "x9", "s1")  # the scenario's agents (x9's token is not its own)
TRANSPARENT = {"ENRICHER_UPSTREAM__MODE": "transparent"}
WAIT_MS = 3000  # agents.js: how long one step waits for what it causes
SCENARIO_TIMEOUT = 180.0  # every one of its ~30 steps running out of time, and then some

Proxy = Callable[[Backend], Awaitable[Enricher]]


# ------------------------------------------------------------------------------ the runs


async def start_crm(node_dir: Path, session: aiohttp.ClientSession) -> Backend:
    child = await spawn(
        "crm.js", ["node", "crm.js"], cwd=node_dir, env={"PORT": "0"}, json_streams={"stdout"}
    )
    line = await child.wait_for(
        lambda item: item.get("event") == "listening", "crm: listening", START_TIMEOUT
    )
    return Backend(child, int(line["port"]), session)


async def run_agents(node_dir: Path, base: str, crm: Backend, context: list[Child]) -> Json:
    """agents.js against ``base``, driving ``crm``'s control API; its transcript."""
    child = await spawn(
        "agents.js",
        ["node", "agents.js", base, crm.url],
        cwd=node_dir,
        env={"WAIT_MS": str(WAIT_MS)},
        json_streams={"stdout"},
    )
    try:
        transcript: Json = await child.wait_for(
            lambda item: "agents" in item, "the transcript", SCENARIO_TIMEOUT, context=context
        )
        await asyncio.wait_for(child.proc.wait(), 10)
    finally:
        await child.stop()
    return transcript


async def run_scenario(node_dir: Path, proxy: Proxy | None = None) -> Json:
    """A fresh crm.js; the scenario directly (``proxy`` None) or through what ``proxy``
    starts in front of it. The transcript, with ``logs``: the last process's last lines."""
    async with aiohttp.ClientSession() as session:
        crm = await start_crm(node_dir, session)
        children = [crm.child]
        try:
            base = crm.url
            if proxy is not None:
                enricher = await proxy(crm)
                children.append(enricher.child)
                base = enricher.public_url
            transcript = await run_agents(node_dir, base, crm, children)
            transcript["logs"] = children[-1].tail(40)  # enricher's, if it ran
            return transcript
        finally:
            await crm.child.stop()


@pytest.fixture(scope="module")
def runs() -> dict[str, Json | BaseException]:
    """Each run once per module: the tests only read their transcripts."""
    return {}


async def _once(
    runs: dict[str, Json | BaseException], key: str, run: Callable[[], Awaitable[Json]]
) -> Json:
    if key not in runs:
        try:
            runs[key] = await run()
        except (Exception, pytest.fail.Exception) as exc:
            runs[key] = exc
            raise
    result = runs[key]
    if isinstance(result, BaseException):
        pytest.fail(f"the {key} run failed in an earlier test: {result}", pytrace=False)
    return result


@pytest.fixture
async def direct(runs: dict[str, Json | BaseException], node_harness: Path) -> Json:
    return await _once(runs, "direct", lambda: run_scenario(node_harness))


@pytest.fixture
async def through(
    runs: dict[str, Json | BaseException], node_harness: Path, make_enricher: EnricherFactory
) -> Json:
    def proxy(crm: Backend) -> Awaitable[Enricher]:
        # No backend connection of its own in this mode: nothing to wait for.
        return make_enricher(crm, connected=False, **TRANSPARENT)

    return await _once(runs, "transparent", lambda: run_scenario(node_harness, proxy))


# ------------------------------------------------------------------------------ reading them


def seen(transcript: Json, agent: str) -> list[Json]:
    """What one agent saw, in order."""
    entries: list[Json] = transcript["agents"][agent]
    return entries


def events(transcript: Json, agent: str, *names: str) -> list[Json]:
    return [e for e in seen(transcript, agent) if e["type"] == "event" and e["event"] in names]


def backend_saw(transcript: Json, agent: str, *types: str) -> list[Json]:
    """What the CRM saw of one agent (of those ``types``, or all), in order."""
    entries: list[Json] = transcript["backend"]["seen"].get(agent, [])
    return [e for e in entries if not types or e["type"] in types]


def per_agent(project: Callable[[Json, str], Any], transcript: Json) -> dict[str, Any]:
    return {agent: project(transcript, agent) for agent in AGENTS}


def _lines(value: Any, prefix: str = "") -> list[str]:
    """One line per list item, dicts of lists by key: a diff names the entry that differs."""
    if isinstance(value, dict) and any(isinstance(v, list | dict) for v in value.values()):
        return [line for k, v in sorted(value.items()) for line in _lines(v, f"{prefix}{k}: ")]
    if isinstance(value, list):
        return [prefix + json.dumps(item, sort_keys=True) for item in value] or [prefix + "[]"]
    return [prefix + json.dumps(value, sort_keys=True)]


def same(direct: Any, through: Any, what: str, logs: str | None = None) -> None:
    """``through`` must equal ``direct``; else fail with their diff."""
    if direct == through:
        return
    diff = "\n".join(
        difflib.unified_diff(
            _lines(direct), _lines(through), "directly", "through enricher", lineterm="", n=2
        )
    )
    message = f"{what}: not the same through enricher as directly\n{diff}"
    pytest.fail(message + (f"\n{logs}" if logs else ""), pytrace=False)


def without_xff(entries: list[Json]) -> list[Json]:
    """The entries with each ``hello``'s ``xff`` taken out: the one field a proxy changes on
    purpose (see test_the_backend_knows_each_agents_address)."""
    out = []
    for entry in entries:
        if entry.get("event") == "hello" and entry.get("args"):
            hello = {k: v for k, v in entry["args"][0].items() if k != "xff"}
            entry = {**entry, "args": [hello, *entry["args"][1:]]}
        out.append(entry)
    return out


def message(text: str, n: int) -> Json:
    """The CRM's n-th broadcast message (the contract's shape), as an agent gets it."""
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "room_id": "7d0c2a5e-93b4-4c1e-9a57-2f6f0e4b8c11",
        "user_id": None,
        "content_type": "text",
        "content_text": text,
        "wa_message_id": f"wamid.crm{n}",
        "status": "sent",
        "media_type": None,
        "gcs_url": None,
        "mime_type": None,
        "metadata": {},
        "created_at": "<timestamp>",
        "updated_at": "<timestamp>",
    }


def event(name: str, *args: Any, ns: str = "/", ack: bool = False) -> Json:
    return {"ns": ns, "type": "event", "event": name, "args": list(args), "ack": ack}


# ------------------------------------------------------------------------------ the scenario


async def test_the_scenario_is_the_same_on_each_direct_run(
    direct: Json, node_harness: Path
) -> None:
    """The yardstick: directly, no step waits in vain, and a second run gives the same."""
    assert direct["stalls"] == [], direct["logs"]
    again = await run_scenario(node_harness)
    for agent in AGENTS:
        same(seen(direct, agent), seen(again, agent), f"directly, twice: {agent}")
    same(direct["backend"], again["backend"], "directly, twice: the backend's log")


def test_no_step_waits_in_vain_through_enricher(direct: Json, through: Json) -> None:
    same(direct["stalls"], through["stalls"], "steps whose effect never came", through["logs"])


# ------------------------------------------------------------------------------ one thing each


def test_private_events_reach_only_their_agent(direct: Json, through: Json) -> None:
    def private(transcript: Json, agent: str) -> list[Json]:
        return events(transcript, agent, "private", "notification", "whisper", "typing")

    assert per_agent(private, direct) == {
        "a1": [
            event("private", {"from": "a3", "text": "hi a1, from a3"}),
            event("typing", {"agent": "a2"}),
        ],
        "a2": [
            event("private", {"from": "a1", "text": "hi a2"}),
            event("private", {"from": "a2", "text": "note to self"}),
            event("notification", {"text": "call back", "attachment": {"$binary": "00ff"}}),
            event("typing", {"agent": "a1"}),
        ],
        "a3": [
            event("notification", {"text": "lead assigned", "attachment": {"$binary": "090807"}}),
            event("whisper", {"from": "s1", "text": "please wrap up"}),
        ],
        "x9": [],
        "s1": [],
    }
    same(per_agent(private, direct), per_agent(private, through), "per-agent events")


def test_a_bad_token_is_refused_with_the_backends_message_and_data(
    direct: Json, through: Json
) -> None:
    refused = {
        "ns": "/",
        "type": "connect_error",
        "message": "invalid token",
        "data": {"code": "BAD_TOKEN", "agent": "x9"},
    }
    assert seen(direct, "x9") == [refused]  # and nothing else, up to the last broadcast
    assert [e["outcome"] for e in backend_saw(direct, "x9")] == ["refused"]
    same(seen(direct, "x9"), seen(through, "x9"), "x9 (a1's token)")
    same(backend_saw(direct, "x9"), backend_saw(through, "x9"), "the backend, of x9")


def test_a_kicked_agent_is_told_by_the_server_and_not_reconnected(
    direct: Json, through: Json
) -> None:
    def after_the_kick(transcript: Json, agent: str) -> list[Json]:
        entries = seen(transcript, agent)
        kicks = [i for i, e in enumerate(entries) if e["type"] == "disconnect"]
        return entries[kicks[0] :] if kicks else []

    kicked = {"ns": "/", "type": "disconnect", "reason": "io server disconnect"}
    assert after_the_kick(direct, "a3") == [{**kicked, "will_reconnect": False}]
    assert backend_saw(direct, "a3", "disconnect") == [
        {"type": "disconnect", "ns": "/", "reason": "server namespace disconnect"}
    ]
    same(after_the_kick(direct, "a3"), after_the_kick(through, "a3"), "a3 from its kick on")
    same(
        backend_saw(direct, "a3", "disconnect"),
        backend_saw(through, "a3", "disconnect"),
        "the backend, of a3's kick",
    )


def test_acks_carry_the_backends_answer(direct: Json, through: Json) -> None:
    def acks(transcript: Json, agent: str) -> list[Json]:
        return [e for e in seen(transcript, agent) if e["type"] == "ack"]

    assert acks(direct, "a1")[0] == {
        "ns": "/",
        "type": "ack",
        "for": "send_to",
        "args": [{"ok": True, "from": "a1"}],
    }
    assert not any("error" in ack for agent in AGENTS for ack in acks(direct, agent))
    same(per_agent(acks, direct), per_agent(acks, through), "acknowledgements")


def test_the_servers_emit_with_ack_reaches_the_browser_and_its_answer_the_backend(
    direct: Json, through: Json
) -> None:
    def asked(transcript: Json, agent: str) -> list[Json]:
        return events(transcript, agent, "are_you_there", "you_said")

    def answers(transcript: Json, agent: str) -> list[Json]:
        return backend_saw(transcript, agent, "answer")

    assert asked(direct, "a2") == [
        event("are_you_there", {"n": 1}, ack=True),
        event("you_said", {"here": True, "agent": "a2"}),
    ]
    assert answers(direct, "a3") == [
        {
            "type": "answer",
            "ns": "/",
            "event": "are_you_there",
            "answer": {"here": True, "agent": "a3"},
        }
    ]
    same(per_agent(asked, direct), per_agent(asked, through), "the server's questions")
    same(per_agent(answers, direct), per_agent(answers, through), "the answers the backend got")


def test_presence_does_not_count_enricher(direct: Json, through: Json) -> None:
    def presence(transcript: Json, agent: str) -> list[Json]:
        return events(transcript, agent, "presence")

    assert direct["backend"]["presence"] == [
        {"online": ["a1"], "sockets": 1},
        {"online": ["a1", "a2"], "sockets": 2},
        {"online": ["a1", "a2", "a3"], "sockets": 3},
        {"online": ["a1", "a2"], "sockets": 2},  # a3 kicked
        {"online": ["a2"], "sockets": 1},
        {"online": [], "sockets": 0},
    ]
    same(direct["backend"]["presence"], through["backend"]["presence"], "the backend's presence")
    same(per_agent(presence, direct), per_agent(presence, through), "presence at the agents")


def test_the_supervisor_namespace_refuses_and_admits_as_directly(
    direct: Json, through: Json
) -> None:
    def supervisor(transcript: Json, agent: str) -> list[Json]:
        return [e for e in seen(transcript, agent) if e.get("ns") == "/supervisor"]

    def backend_supervisor(transcript: Json, agent: str) -> list[Json]:
        return [e for e in backend_saw(transcript, agent) if e["ns"] == "/supervisor"]

    assert supervisor(direct, "a1") == [
        {
            "ns": "/supervisor",
            "type": "connect_error",
            "message": "not a supervisor",
            "data": {"code": "NOT_SUPERVISOR", "agent": "a1", "role": None},
        }
    ]
    assert [e["type"] for e in supervisor(direct, "s1")] == [
        "connect",
        "event",  # welcome
        "ack",  # stats
        "ack",  # whisper
        "event",  # activity
        "event",  # activity
        "disconnect",
    ]
    same(per_agent(supervisor, direct), per_agent(supervisor, through), "namespace /supervisor")
    same(
        per_agent(backend_supervisor, direct),
        per_agent(backend_supervisor, through),
        "the backend, of /supervisor",
    )


def test_binary_passes_both_ways(direct: Json, through: Json) -> None:
    def binary(transcript: Json, agent: str) -> list[Json]:
        return [
            e
            for e in seen(transcript, agent)
            if e.get("event") in ("file_for_you", "notification") or e.get("for") == "file"
        ]

    def uploads(transcript: Json, agent: str) -> list[Json]:
        return [e for e in backend_saw(transcript, agent, "event") if e["event"] == "file"]

    assert binary(direct, "a2") == [
        event("notification", {"text": "call back", "attachment": {"$binary": "00ff"}}),
        {"ns": "/", "type": "ack", "for": "file", "args": [{"size": 3, "first": 200}]},
        event("file_for_you", {"name": "contract.pdf", "data": {"$binary": "00017f80feff"}}),
    ]
    assert uploads(direct, "a1") == [
        {
            "type": "event",
            "ns": "/",
            "event": "file",
            "args": [{"$binary": "010203fa00ff"}],
            "ack": True,
        }
    ]
    same(per_agent(binary, direct), per_agent(binary, through), "binary at the agents")
    same(per_agent(uploads, direct), per_agent(uploads, through), "binary at the backend")


def test_the_handshake_reaches_the_backend(direct: Json, through: Json) -> None:
    def handshakes(transcript: Json, agent: str) -> list[Json]:
        return backend_saw(transcript, agent, "handshake")

    assert handshakes(direct, "a1")[0] == {
        "type": "handshake",
        "ns": "/",
        "outcome": "accepted",
        "auth": {"agent": "a1", "token": "good-a1"},
        "query": {"team": "red"},
        "cookie": "crm_session=s-a1; theme=dark",
        "address": "127.0.0.2",
    }
    same(per_agent(handshakes, direct), per_agent(handshakes, through), "handshakes")

    def hello(transcript: Json, agent: str) -> list[Json]:
        return without_xff(events(transcript, agent, "hello"))

    same(per_agent(hello, direct), per_agent(hello, through), "hello (the CRM's echo)")


def test_the_backend_knows_each_agents_address(direct: Json, through: Json) -> None:
    """The one difference on purpose: through enricher the backend's peer is enricher, and
    X-Forwarded-For names the agent (the CRM's hello says whether it was set)."""

    def xff(transcript: Json, agent: str) -> list[str]:
        return [e["args"][0]["xff"] for e in events(transcript, agent, "hello")]

    def addresses(transcript: Json, agent: str) -> list[str]:
        return [e["address"] for e in backend_saw(transcript, agent, "handshake")]

    assert per_agent(xff, direct) == {
        "a1": ["unset"],
        "a2": ["unset"],
        "a3": ["unset"],
        "x9": [],
        "s1": [],
    }
    assert per_agent(xff, through) == {
        "a1": ["set"],
        "a2": ["set"],
        "a3": ["set"],
        "x9": [],
        "s1": [],
    }
    same(per_agent(addresses, direct), per_agent(addresses, through), "the agents' addresses")


def test_a_broadcast_reaches_every_agent(direct: Json, through: Json) -> None:
    def broadcasts(transcript: Json, agent: str) -> list[Json]:
        return events(transcript, agent, "new_message", "activity")

    first, last = message("Hello from customer", 1), message("Thanks, bye", 2)
    assert per_agent(broadcasts, direct) == {
        "a1": [event("new_message", first), event("new_message", last)],
        "a2": [event("new_message", first), event("new_message", last)],
        "a3": [event("new_message", first)],  # kicked before the second
        "x9": [],
        "s1": [
            event(
                "activity",
                {"message_id": first["id"], "room_id": first["room_id"]},
                ns="/supervisor",
            ),
            event(
                "activity", {"message_id": last["id"], "room_id": last["room_id"]}, ns="/supervisor"
            ),
        ],
    }
    same(per_agent(broadcasts, direct), per_agent(broadcasts, through), "broadcasts")


def test_the_backend_sees_agents_leave_as_directly(direct: Json, through: Json) -> None:
    def left(transcript: Json, agent: str) -> list[Json]:
        return backend_saw(transcript, agent, "disconnect")

    assert left(direct, "a1") == [
        {"type": "disconnect", "ns": "/", "reason": "client namespace disconnect"}
    ]
    same(per_agent(left, direct), per_agent(left, through), "disconnects at the backend")


# ------------------------------------------------------------------------------ everything


@pytest.mark.parametrize("agent", AGENTS)
def test_each_agent_sees_what_it_sees_directly(direct: Json, through: Json, agent: str) -> None:
    same(
        without_xff(seen(direct, agent)),
        without_xff(seen(through, agent)),
        f"everything {agent} saw",
        through["logs"],
    )


def test_the_backend_sees_what_it_sees_directly(direct: Json, through: Json) -> None:
    same(direct["backend"], through["backend"], "the backend's log", through["logs"])
