"""HTTPS serving with hypercorn, extended in one place: to send a reason phrase, and a cheaper keep-alive timer.

Proxmox puts its error message in the HTTP reason phrase, and clients such as proxmoxer show it.
ASGI has no reason phrase, so the app passes it in an internal header that the patched HTTP/1.1
protocol moves into the status line (and never sends as a header).
"""

from __future__ import annotations

import http
import math
import socket

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

from api.app import REASON_HEADER
from api.errors import reason_phrase

_REASON_KEY = REASON_HEADER.encode()
WEBSOCKET_PING = 20.0  # s
UNREAD_TIMEOUT = 30.0  # s a peer may leave sent data unacknowledged (its window closed) before it is dropped


def _reason_phrase(status: int, given: bytes | None) -> bytes:
    """The app's phrase (UTF-8 in the internal header, made safe by `reason_phrase`), else the status's own."""
    if given:
        return reason_phrase(given.decode("utf-8", "replace")).encode("latin-1")
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def _send_with_reason(self, event) -> None:
    """hypercorn's `_send_h11_event`, with the app's reason phrase moved into the status line, and the head of an
    answer with a body of known length held back and sent in one piece with its body (one TLS record and one system call
    instead of two); an answer streamed without a length has its head sent at
    once, as before. Nothing empty is sent (a body's end under Content-Length is no bytes)."""
    hold = False
    if isinstance(event, h11.Response):
        given = None
        headers = []
        for name, value in event.headers:
            if name.lower() == _REASON_KEY:
                given = value
            else:
                hold = hold or (name.lower() == b"content-length" and value != b"0")
                headers.append((name, value))
        event = h11.Response(status_code=event.status_code, headers=headers,
                             reason=_reason_phrase(event.status_code, given))
    try:
        data = self.connection.send(event)
    except h11.LocalProtocolError:
        if self.connection.their_state != h11.ERROR:
            raise
        return
    held, self._gpve_head = getattr(self, "_gpve_head", b""), b""
    if hold:
        self._gpve_head = held + data
        return
    if held:
        data = held + data
    if data:
        await self.send(RawData(data=data))


hypercorn_h11.H11Protocol._send_h11_event = _send_with_reason


class _KeepAliveTimer:
    """hypercorn's keep-alive timer of one connection, with the `restart`/`stop` its TCPServer calls on its
    `idle_task`: one task for the connection's life whose deadline moves when the connection falls idle (`restart`)
    or gets a request (`stop`). hypercorn's own TrioSingleTask started a new task each time a connection fell idle,
    after every answer (15 % of sending an answer under py-spy). At the deadline, or when the server ends while
    the connection is idle (else once its answer is out), the connection is closed, as hypercorn's `_idle_timeout`
    does."""

    def __init__(self, server: TCPServer) -> None:
        self.server = server
        self.scope: trio.CancelScope | None = None
        self.idle = trio.Event()

    async def restart(self, task_group, _action) -> None:
        deadline = trio.current_time() + self.server.config.keep_alive_timeout
        self.idle.set()
        if self.scope is None:
            self.scope = trio.CancelScope(deadline=deadline)
            task_group._nursery.start_soon(self._run)
        else:
            self.scope.deadline = deadline

    async def stop(self) -> None:
        if self.scope is not None:
            self.scope.deadline = math.inf
        if self.idle.is_set():
            self.idle = trio.Event()

    def end(self) -> None:
        """The connection's reading ended (the client closed it, or it broke): the timer ends and closes it, busy
        or not (hypercorn's own had no task while busy, and closed an idle one at its deadline)."""
        if self.scope is not None:
            self.scope.cancel()

    async def _run(self) -> None:
        with self.scope:
            await self.server.context.terminated.wait()
            while not self.idle.is_set():  # busy: closed once its answer is out
                await self.idle.wait()
        with trio.CancelScope(shield=True):
            await self.server._initiate_server_close()


_tcp_server_init, _tcp_server_read = TCPServer.__init__, TCPServer._read_data


def _tcp_server_with_timer(self, *args, **kwargs) -> None:
    _tcp_server_init(self, *args, **kwargs)
    self.idle_task = _KeepAliveTimer(self)


async def _read_then_end_timer(self) -> None:
    try:
        await _tcp_server_read(self)
    finally:
        self.idle_task.end()


TCPServer.__init__ = _tcp_server_with_timer
TCPServer._read_data = _read_then_end_timer


class _Config(Config):
    """Hypercorn's config; its listening sockets carry TCP_USER_TIMEOUT, which accepted connections inherit: a
    peer that takes no data for that long (a WebSocket consumer that stopped reading, whose bytes hypercorn
    would otherwise wait to send for ever) is dropped by the kernel."""

    def _create_sockets(self, binds: list[str], type_: int = socket.SOCK_STREAM) -> list[socket.socket]:
        sockets = super()._create_sockets(binds, type_)
        for sock in sockets:
            if type_ == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(UNREAD_TIMEOUT * 1000))
        return sockets


def server_config(bind: str, certfile: str, keyfile: str, keep_alive: float) -> Config:
    """`keep_alive`: seconds a connection may stay idle between requests before it is closed."""
    config = _Config()
    config.bind = [bind]
    config.certfile = certfile
    config.keyfile = keyfile
    config.alpn_protocols = ["http/1.1"]  # the reason phrase exists only in HTTP/1.1
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = keep_alive
    config.backlog = socket.SOMAXCONN  # connections queued before accepted (hypercorn's 100 made a burst wait)
    config.websocket_ping_interval = WEBSOCKET_PING  # idle WebSockets (the event stream) are kept alive
    config.include_server_header = False
    return config


async def run_server(app, config: Config, shutdown_trigger=None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
