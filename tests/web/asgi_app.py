"""The application server behind the proxy in tests/web/test_proxy_apps.py: a Starlette app run by uvicorn, with what
applications do that a static upstream does not -- a streamed upload, a streamed answer, Server-Sent Events and a
WebSocket."""

from __future__ import annotations

import asyncio
import hashlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


async def upload(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


async def stream(request: Request) -> StreamingResponse:
    async def parts():
        for i in range(5):
            yield f"part {i}\n".encode()
            await asyncio.sleep(0.02)

    return StreamingResponse(parts(), media_type="text/plain")


async def events(request: Request) -> StreamingResponse:
    async def feed():
        for i in range(3):
            yield f"id: {i}\ndata: tick {i}\n\n".encode()
            await asyncio.sleep(0.05)

    return StreamingResponse(feed(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def shout(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text.upper())


app = Starlette(
    routes=[
        Route("/upload", upload, methods=["POST", "PUT"]),
        Route("/stream", stream),
        Route("/events", events),
        WebSocketRoute("/ws", shout),
    ]
)
