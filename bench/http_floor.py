"""The least an aiohttp relay does, for bench/http: the floor under enricher's pass-through.

One aiohttp server on uvloop and one aiohttp client session (as enricher has): each GET is
sent on to the backend with its Accept header and answered with the backend's status, body
and content type; nothing else (no rules, no header rewriting, no forwarding headers, no
streaming, no metrics or logs). Whatever enricher's relay costs above this is its own code;
this much is aiohttp's, server and client, on this machine.

    python bench/http_floor.py BACKEND_URL   -> {"event":"listening","port":N} on stdout
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import uvloop
from aiohttp import web


async def main(backend: str) -> None:
    session = aiohttp.ClientSession(auto_decompress=False)

    async def relay(request: web.Request) -> web.Response:
        headers = {"Accept": request.headers.get("Accept", "*/*")}
        async with session.get(backend + request.raw_path, headers=headers) as answer:
            body = await answer.read()
            return web.Response(body=body, status=answer.status, content_type=answer.content_type)

    app = web.Application()
    app.router.add_get("/{path:.*}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"event": "listening", "port": port}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1].rstrip("/")))
