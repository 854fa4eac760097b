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
# How long a request waits before its connection is watched (see DisconnectWatch).
WATCH_AFTER_S = 0.02
logger = logging.getLogger("app.disconnects")


class DisconnectWatch:
    """Cancel the task that waits for a request's result if its client disconnects first.

    Used by the embeddings endpoint instead of ``CancelOnDisconnect``: watching needs a
    task blocked in ``receive``, which costs more than a whole one-input request, and most
    requests are answered within a few milliseconds. So watching starts only once a
    request has waited ``after`` seconds; a client that left earlier is noticed then,
    since ``receive`` reports a past disconnect at once. The cancelled handler sees
    ``client_gone`` set and answers nothing (status 499 in the metrics).
    """

    def __init__(self, receive: Receive, after: float = WATCH_AFTER_S) -> None:
        self._receive = receive
        self._after = after
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.client_gone = False
        self.responding = False  # once the response starts, it is too late to cancel

    def start(self) -> None:
        """Begin watching on behalf of the current task (after the delay)."""
        if self._timer is None and self._watcher is None:
            self._task = asyncio.current_task()
            self._timer = asyncio.get_running_loop().call_later(self._after, self._watch)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()

    def _watch(self) -> None:
        self._timer = None
        self._watcher = asyncio.get_running_loop().create_task(self._wait_for_disconnect())

    async def _wait_for_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        task = self._task
        if not self.responding and task is not None and not task.done():
            self.client_gone = True
            task.cancel()

    def forgive(self) -> None:
        """After catching the cancellation this watch caused: the task goes on normally."""
        task = asyncio.current_task()
        if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
            task.uncancel()


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
