"""The API's HTTP guards: request errors as one JSON line, a body-size limit, and read deadlines.

Each guard is a reason a client cannot hold the server: a body larger than any valid request is
refused before it is read (`BodyLimit`), and a request whose headers or body do not arrive within
`api.read_timeout_seconds` gets 408 and its connection is closed (`BodyLimit` for the body,
`ReadTimeoutH11` for the headers, which uvicorn would otherwise wait for without end).
"""

from __future__ import annotations

import asyncio
import json

from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from tasks.infra.tables import shorten


class ApiError(Exception):
    """A request the client must fix: its HTTP status and one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def max_body_bytes(max_texts: int, max_chars: int) -> int:
    """The largest body a valid request can have: every text at `max_chars` characters, each JSON-escaped
    as `\\uXXXX` (6 bytes), with room for quotes, commas, indentation and the keys; at least 1 MiB, so a
    request a little over a limit is still read and told which limit."""
    return max(1 << 20, max_texts * (6 * max_chars + 64) + 4096)


class BodyLimit:
    """ASGI middleware: a request body above `limit` bytes gets 413 before it is read whole.

    Without it the whole body is read and parsed before `api.max_texts` and `api.max_chars` are
    checked: one client sending gigabytes would exhaust the memory every other request needs.
    A declared Content-Length is refused at once; a chunked body is counted as it streams in. A body
    that does not arrive within `timeout` seconds gets 408 (the headers' own deadline: `ReadTimeoutH11`).
    """

    def __init__(self, app, limit: int, timeout: float):
        self.app, self.limit, self.timeout = app, limit, timeout

    def too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than {self.limit} bytes, more than the largest valid "
                             "request (api.max_texts texts of api.max_chars characters)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            err = self.too_large()
            return await JSONResponse({"error": str(err)}, status_code=err.status)(scope, receive, send)
        seen, done = 0, False

        async def counted():
            nonlocal seen, done
            if done:  # the body is in: what follows is a wait for the client to go away, not a read
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                # A Content-Length larger than the body sent, or a body trickling in: without this the
                # request (and its connection) is held open for ever.
                raise ApiError(408, f"the request body did not arrive within {self.timeout:g} s "
                                    "(api.read_timeout_seconds)") from None
            done = not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self.too_large()  # FastAPI wraps it in its 400 for unreadable bodies: see http_error
            return message
        await self.app(scope, counted, send)


def body_problem(cause: BaseException | None) -> tuple[int, str]:
    """Status and line for a body FastAPI could not parse (it says only "There was an error parsing the body")."""
    if isinstance(cause, ApiError):
        return cause.status, str(cause)
    if isinstance(cause, UnicodeDecodeError):
        return 400, f"malformed JSON: byte {cause.start} is not UTF-8 ({cause.reason}); expected UTF-8 JSON"
    if isinstance(cause, RecursionError):
        return 400, "malformed JSON: nested too deeply"
    return 400, f"malformed JSON: {shorten(str(cause).split(';')[0] or type(cause).__name__, 80)}"


class ReadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers: a connection that opens and then sends
    its request slowly or never (one of many, each holding a socket) gets 408 and is closed after
    `read_timeout` seconds. Set the deadline with `functools.partial(ReadTimeoutH11, read_timeout=...)`."""

    def __init__(self, *args, read_timeout: float = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout, self.deadline = read_timeout, None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        import h11

        if self.deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the body's deadline is BodyLimit's
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expired(self) -> None:
        import h11

        self.deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        body = json.dumps({"error": f"the request headers did not arrive within {self.read_timeout:g} s "
                                    "(api.read_timeout_seconds)"}).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()
