"""The framework internals enricher relies on (enricher/internals): each is where it was
and as it was in the versions pinned, and no other module of enricher names one. An
upgrade of python-socketio, python-engineio or aiohttp that moves one fails here, with
its name, before any behaviour changes."""

from __future__ import annotations

import ast
import hashlib
import inspect
import pathlib
import re
import tomllib
from importlib.metadata import version

import engineio
import engineio.async_socket
import pytest
import socketio
from aiohttp import web

from enricher.internals import RELIED_ON, Relied

ROOT = pathlib.Path(__file__).resolve().parents[2]
PINNED = ("python-socketio", "python-engineio", "aiohttp")


def instance_of(owner: object) -> object | None:
    """An instance for a name only instances have (set in ``__init__``)."""
    if owner is socketio.AsyncManager:
        return socketio.AsyncManager()
    if owner is socketio.AsyncServer:
        return socketio.AsyncServer()
    if owner is engineio.AsyncServer:
        return engineio.AsyncServer(async_mode="aiohttp")
    if owner is web.StreamResponse:
        return web.StreamResponse()
    return None


@pytest.mark.parametrize(
    "relied", RELIED_ON, ids=lambda r: f"{getattr(r.owner, '__name__', r.owner)}.{r.name}"
)
def test_each_internal_relied_on_is_there_as_it_was(relied: Relied) -> None:
    owner = relied.owner
    found = getattr(owner, relied.name, None)
    if found is None:
        instance = instance_of(owner)
        found = getattr(instance, relied.name, None) if instance is not None else None
    assert found is not None, f"{relied.name} is gone"
    if relied.signature is not None:
        assert str(inspect.signature(found)) == relied.signature
    if relied.copied is not None:
        source = inspect.getsource(found)
        assert hashlib.sha256(source.encode()).hexdigest()[:16] == relied.copied, (
            f"{relied.name} changed: read it, carry the change over, then update its hash"
        )
    if relied.in_source is not None:
        assert relied.in_source in inspect.getsource(owner)  # type: ignore[arg-type]


def private_names() -> set[str]:
    return {r.name for r in RELIED_ON if r.name.startswith("_") and not r.name.startswith("__")}


def test_no_module_outside_internals_names_a_private_internal() -> None:
    """Overriding, calling or reading one outside enricher/internals: one place to look at
    an upgrade."""
    names = private_names()
    found = []
    for path in sorted((ROOT / "enricher").rglob("*.py")):
        if "internals" in path.relative_to(ROOT / "enricher").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.name
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                else node.value
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                else None
            )
            if name in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert found == []


def test_an_engine_socket_has_the_attributes_enricher_reads_and_sets() -> None:
    socket = engineio.async_socket.AsyncSocket(engineio.AsyncServer(async_mode="aiohttp"), "s")
    for name in ("queue", "last_ping", "connected", "upgrading", "upgraded", "closing", "closed"):
        assert hasattr(socket, name), name


def test_the_frameworks_are_pinned_to_the_versions_installed() -> None:
    """A range would let an upgrade in that RELIED_ON was never checked against."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", requirement)
        if match:
            pins[match[1]] = match[2]
    assert {name: pins.get(name) for name in PINNED} == {name: version(name) for name in PINNED}
