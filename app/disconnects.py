"""Stop working for a client that has gone away.

Starlette does not cancel a handler when its client disconnects: an embedding request
whose caller timed out would still wait for its batch, be encoded, and be rendered for
nobody. This middleware watches the connection once the request body has been read and,
if the client disconnects before the response has started, cancels the handler. The
batcher then drops the cancelled job (its queue slot is freed and it is not encoded if its
batch has not started). The request is counted with status 499, nginx's "client closed
request" (the server writes nothing: the connection is already gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CLIENT_CLOSED_REQUEST = 499
logger = logging.getLogger("app.disconnects")


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp, paths: tuple[str, ...] = ("/v1/embeddings",)) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        response_started = False

        async def receive_body() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_read.set()
            return message

        async def send_tracking(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        async def client_gone() -> None:
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass

        handler = asyncio.ensure_future(self.app(scope, receive_body, send_tracking))
        watcher = asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait((handler, watcher), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server itself is cancelling us: take the handler along
            handler.cancel()
            watcher.cancel()
            raise
        if not handler.done() and not response_started:
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
            logger.info("client disconnected before the response; its request was cancelled")
            # Nothing reaches the client; this tells the metrics layer what happened.
            await send({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await handler
