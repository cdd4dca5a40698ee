"""An unexpected error answers 500 and leaves the connection usable.

Starlette hands an ``Exception`` handler to its outermost ``ServerErrorMiddleware``, which sends
the handler's response and then re-raises, so uvicorn drops the keep-alive connection without a
``Connection: close``: the client's next request on it is lost. This middleware sits inside,
turns the exception into the server's 500 answer, logs it once, and returns normally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (scope, exception) -> (body, content type), logged and answered with status 500
Render = Callable[[Scope, BaseException], tuple[bytes, str]]


class UnexpectedErrors:
    def __init__(self, app: ASGIApp, render: Render) -> None:
        self.app = app
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            body, media_type = self.render(scope, exc)
            if started:  # half an answer is out: only closing tells the client
                raise
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", media_type.encode("latin-1")),
                        (b"content-length", str(len(body)).encode("latin-1")),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
