"""The API's requests and answers straight over ASGI (hypercorn's), without a web framework in between.

Every `/api2/json` and `/v1` request is served here: `Call` is what the API reads of a request (method, decoded
path, query string, headers, cookies, client address, the body as it arrives), `Answer` what it sends back. Quart
still serves the WebSockets and the pages (api/app.py); on the API's hot paths its request context, routing and
response objects cost more CPU than the whole rest of a `GET …/config` (bench/README.md).

A body is pulled from the server piece by piece as the handler reads it, so hypercorn's flow control holds a fast
client back and an upload is never held whole; beyond `limit` bytes it raises werkzeug's RequestEntityTooLarge
(413), as Quart's MAX_CONTENT_LENGTH did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.http import parse_cookie

from api.errors import ApiError

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class Headers(dict):
    """A request's headers by lower-case name (the first of a name given twice, as werkzeug's `get`; Cookie
    headers joined); `get` takes a name in any case."""

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)


class Body:
    """A request body read from the server as the handler takes it: an async iterator of chunks. A client that
    goes away before the end raises ApiError 400; more than `limit` bytes (None: no limit) RequestEntityTooLarge."""

    def __init__(self, receive: Receive, limit: int | None) -> None:
        self._receive = receive
        self.limit = limit
        self._size = 0
        self.done = False

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> bytes:
        while not self.done:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.done = True
                raise ApiError(400, "client disconnected before the request body ended")
            self.done = not message.get("more_body", False)
            chunk = message.get("body", b"")
            if chunk:
                self._size += len(chunk)
                if self.limit is not None and self._size > self.limit:
                    raise RequestEntityTooLarge()
                return chunk
        raise StopAsyncIteration


class Call:
    """One HTTP request (ASGI `scope`): `method`, `path` (percent-decoded, as the client asked), `query_string`
    (bytes), `headers`, `cookies`, `remote_addr`, `body` (a Body), `mimetype` and `mimetype_params` of its
    Content-Type."""

    def __init__(self, scope: dict, receive: Receive, body_limit: int | None) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query_string: bytes = scope["query_string"]
        headers = Headers()
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("utf-8", "replace")
            if name == "cookie" and name in headers:  # several Cookie headers (some proxies send them): all count
                headers[name] += "; " + value
            else:
                headers.setdefault(name, value)
        self.headers = headers
        client = scope.get("client")
        self.remote_addr: str = client[0] if client else ""
        self.body = Body(receive, body_limit)

    @cached_property
    def cookies(self) -> dict[str, str]:
        return parse_cookie(self.headers.get("cookie", ""))

    @cached_property
    def _content_type(self) -> tuple[str, dict[str, str]]:
        mimetype, params = parse_options_header(self.headers.get("content-type", ""))
        return mimetype.lower(), params

    @property
    def mimetype(self) -> str:
        return self._content_type[0]

    @property
    def mimetype_params(self) -> dict[str, str]:
        return self._content_type[1]


@dataclass(slots=True)
class Answer:
    """An HTTP answer: `status`, `body` (bytes or str), `content_type`, more `headers` (a name given in two cases
    is sent once, the later value)."""

    status: int
    body: bytes | str = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, send: Send) -> None:
        """Send this answer over ASGI."""
        body = self.body.encode() if isinstance(self.body, str) else self.body
        fields = {"content-length": str(len(body))}
        if self.content_type:
            fields["content-type"] = self.content_type
        fields.update((key.lower(), str(value)) for key, value in self.headers.items())  # names in any case: once
        headers = [(key.encode(), value.encode()) for key, value in fields.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
