"""The simulated backend: the seed's Socket.IO events and REST, with customers writing in.

A python-socketio ``AsyncServer`` on aiohttp, like the Node backend enricher was built
for: ``new_room`` then ``new_message`` for a new customer, only the message events
afterwards, ``room:new_message`` to sockets that sent ``room:join``, and
``GET /rooms/<id>``, ``GET /messages?room_id=`` (plus ``GET /rooms``, the demo's list of
ids). What happens when comes from a :class:`~.script.Script`; this module only runs it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from typing import Any

import socketio
from aiohttp import web

from .script import AddRoom, Pause, Save, Script, Send, Visit
from .store import Store

_CORS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}


def _json(body: Any, status: int = 200) -> web.Response:
    # The page is served from another origin; Socket.IO answers CORS itself, REST does here.
    return web.json_response(body, status=status, headers=_CORS)


class Simulator:
    """The backend: ``app`` serves its events and REST; :meth:`run` brings customers."""

    def __init__(self, script: Script, rng: random.Random) -> None:
        self.script = script
        self.store = Store()
        self.connected = asyncio.Event()  # set once a socket (enricher) is connected
        self._rng = rng
        self._room_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._visits: set[asyncio.Task[None]] = set()
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", cors_allowed_origins="*", logger=False, engineio_logger=False
        )
        self.app = web.Application()
        self.sio.attach(self.app)
        self.app.router.add_get("/rooms", self._rooms)
        self.app.router.add_get("/rooms/{room_id}", self._room)
        self.app.router.add_get("/messages", self._messages)
        self.sio.on("connect", self._connect)
        self.sio.on("room:join", self._join)
        self.sio.on("room:leave", self._leave)

    async def run(self, rate: float) -> None:
        """Bring customers at ``rate`` visits per second on average, until cancelled."""
        try:
            while True:
                visit = self.script.next_visit(time.time())
                task = asyncio.create_task(self._carry_out(visit))
                self._visits.add(task)
                task.add_done_callback(self._visits.discard)
                await asyncio.sleep(self._rng.expovariate(rate))
        finally:
            for task in list(self._visits):
                task.cancel()

    async def close(self) -> None:
        """Disconnect every socket and stop the server's background tasks."""
        if self.sio.eio.sockets:
            await self.sio.eio.disconnect()
        await self.sio.shutdown()

    async def _carry_out(self, visit: Visit) -> None:
        # One room's visits run one after the other, so its messages are saved in order.
        async with self._room_locks[visit.room_id]:
            for step in visit.steps:
                if isinstance(step, AddRoom):
                    self.store.add_room(step.room)
                elif isinstance(step, Save):
                    self.store.save(step.message)
                elif isinstance(step, Send):
                    await self.sio.emit(step.event, step.payload, to=step.to)
                elif isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)

    # -- Socket.IO ------------------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        self.connected.set()

    async def _join(self, sid: str, data: Any) -> dict[str, Any]:
        room_id = data.get("room_id") if isinstance(data, dict) else None
        if not isinstance(room_id, str):
            return {"error": "room_id required"}
        await self.sio.enter_room(sid, f"room:{room_id}")
        return {"ok": True, "room_id": room_id}

    async def _leave(self, sid: str, data: Any) -> dict[str, Any]:
        room_id = data.get("room_id") if isinstance(data, dict) else None
        if not isinstance(room_id, str):
            return {"error": "room_id required"}
        await self.sio.leave_room(sid, f"room:{room_id}")
        return {"ok": True, "room_id": room_id}

    # -- REST -----------------------------------------------------------------------------

    async def _rooms(self, request: web.Request) -> web.Response:
        return _json(self.store.listing())

    async def _room(self, request: web.Request) -> web.Response:
        answer = self.store.answer(request.match_info["room_id"])
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return _json(answer.body, answer.status)

    async def _messages(self, request: web.Request) -> web.Response:
        return _json({"messages": self.store.messages(request.query.get("room_id", ""))})
