"""A console WebSocket for a guest on another member: relayed to that node, as pveproxy proxies `vncwebsocket`.

The console session lives on the guest's node (`vncproxy` and `termproxy` are forwarded there, api/forward.py), so
its WebSocket must end there too. This node opens a WebSocket to the member (wsproto over TLS, trusting exactly the
certificate the member registered: api/pinning.py), with the caller's credentials and `X-GPVE-Forwarded-From`; the
member checks everything itself. Its refusal is answered as it came (status and message); once it accepts, this
node accepts the client's upgrade and relays messages both ways until either side closes.
"""

from __future__ import annotations

import json

import trio
from quart import websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from api.forward import FORWARDED
from api.pinning import fetch_certificate, fingerprint, pinned_context
from engine.errors import Rejection

CONNECT_TIMEOUT = 10.0
CHUNK = 65536


class _Peer:
    """One client WebSocket to a member."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    async def send(self, event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def events(self):
        """The member's events as they arrive; ends when the connection does."""
        while True:
            data = await self.stream.receive_some(CHUNK)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                yield event
            if not data:
                return


async def relay(member: dict, local: str, expected_fingerprint: str) -> Rejection | None:
    """Relay this WebSocket request to `member`; the refusal when the member (or the way to it) refuses it."""
    host, port = member["ip"], int(member["api_port"])
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            der = await trio.to_thread.run_sync(fetch_certificate, host, port, CONNECT_TIMEOUT)
            if fingerprint(der) != expected_fingerprint.upper():
                raise Rejection(502, f"node '{member['name']}' presents a certificate other than its registered one")
            stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=pinned_context(der))
    except (OSError, trio.TooSlowError) as exc:
        return Rejection(502, f"node '{member['name']}' is unreachable - {type(exc).__name__}")
    except Rejection as exc:
        return exc
    async with stream:
        peer = _Peer(stream)
        headers = [(FORWARDED.encode(), local.encode())]
        for name in ("cookie", "authorization"):
            if websocket.headers.get(name):
                headers.append((name.encode(), websocket.headers[name].encode()))
        target = websocket.path + (f"?{websocket.query_string.decode()}" if websocket.query_string else "")
        await peer.send(Request(host=f"{host}:{port}", target=target, extra_headers=headers,
                                subprotocols=list(websocket.requested_subprotocols)))
        events = peer.events()
        refused = await _handshake(events)
        if refused is not None:
            return refused
        wanted = websocket.requested_subprotocols
        await websocket.accept(subprotocol="binary" if "binary" in wanted else None)
        async with trio.open_nursery() as nursery:
            async def member_to_client() -> None:
                async for event in events:
                    if isinstance(event, (BytesMessage, TextMessage)):
                        await websocket.send(event.data)
                    elif isinstance(event, Ping):
                        await peer.send(event.response())
                    elif isinstance(event, CloseConnection):
                        break
                nursery.cancel_scope.cancel()

            async def client_to_member() -> None:
                while True:
                    message = await websocket.receive()
                    await peer.send(TextMessage(message) if isinstance(message, str) else BytesMessage(message))

            nursery.start_soon(member_to_client)
            nursery.start_soon(client_to_member)
    return None


async def _handshake(events) -> Rejection | None:
    status, body = 502, b""
    with trio.move_on_after(CONNECT_TIMEOUT):
        async for event in events:
            if isinstance(event, AcceptConnection):
                return None
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    break
            elif isinstance(event, RejectData):
                body += event.data
                if event.body_finished:
                    break
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        answer = {}
    return Rejection(status, answer.get("message") or "console connection refused", answer.get("errors"))
