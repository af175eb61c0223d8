"""The WebSocket of `GET /nodes/{node}/qemu/{vmid}/vncwebsocket`: a console session's one client, bridged to the guest.

The upgrade is checked as the endpoint declares it (api/compat/qemu_console.py: ticket cookie or `Authorization`,
`port` and `vncticket`, `VM.Console` on `/vms/{vmid}`), then the ticket is used up (api/services/consoles.py);
refusals are plain HTTP answers (400, 401, 403, 404, 429) before the upgrade, as pveproxy gives them.

After it, binary messages carry what Proxmox's proxies carry:
- VNC (vncproxy): the guest's RFB stream both ways, unchanged (noVNC speaks it; the VNC password is the session's,
  given to QEMU for 30 s when the client connects).
- A terminal (termproxy): Proxmox's termproxy protocol. The client first sends `USER:TICKET\\n` (the same user and
  ticket), the node answers `OK`; then the client sends `0:LENGTH:DATA` (input, LENGTH its bytes), `1:COLS:ROWS:`
  (a resize: a serial port has no size, so it is read and dropped) and `2` (a ping), in any framing; the node sends
  the serial port's output raw. When the serial port cannot be reached, its error (`VM 100 not running`, `unable to
  find a serial interface`) is written to the terminal, as Proxmox's terminal shows `qm terminal`'s error.
The connection ends when either side closes, or the task is aborted; the task then ends (hypervisor/console.py).
Nothing of the ticket or password is logged.
"""

from __future__ import annotations

import hmac
import re

import structlog
import trio
from quart import websocket

from api.bodies import merge, parse_form
from api.console_forward import relay
from api.context import Ctx
from api.forward import FORWARDED
from api.services import consoles
from engine.errors import Rejection
from hypervisor.console import ConsoleError, ConsoleSession, connect

HANDSHAKE_TIMEOUT = 10.0  # s for the terminal's `USER:TICKET` line (termproxy's read_ticket_line)
MAX_LINE = 4096
CHUNK = 65536
log = structlog.get_logger("gpve.console")


async def serve(api, node: str, vmid: str) -> Rejection | None:
    """The WebSocket route's handler (`api`: api.app.Api); the refusal when it refuses the upgrade. A guest's node
    that is another member gets the connection relayed (api/console_forward.py)."""
    with api.node.read() as s:
        member = dict(s.nodes[node]) if node != api.node.name and node in s.nodes else None
    if member is not None and not websocket.headers.get(FORWARDED):
        return await relay(member, api.node.name, member.get("fingerprint", ""))
    path = f"/nodes/{node}/qemu/{vmid}/vncwebsocket"
    endpoint, path_params, _ = api.registry.resolve("GET", path)
    try:
        raw = merge(path_params, parse_form(websocket.query_string, "query string"), {})
        ctx, params = api.admit_websocket(endpoint, path, raw)
        session, conf = consoles.claim(ctx, params["node"], params["vmid"], params["port"], params["vncticket"])
    except Rejection as exc:
        return exc
    user = ctx.user
    wanted = websocket.requested_subprotocols
    await websocket.accept(subprotocol="binary" if "binary" in wanted else None)
    log.info("console connected", vmid=session.vmid, kind="vnc" if session.kind == "vnc" else "terminal",
             user=user, port=session.port)
    try:
        with session.scope:
            if session.kind == "vnc":
                await _vnc(ctx, session, conf)
            else:
                await _terminal(ctx, session, conf, params["vncticket"])
    except ConsoleError as exc:
        session.end(str(exc))
    finally:
        session.end()
        log.info("console closed", vmid=session.vmid, port=session.port)
    return None


async def _vnc(ctx: Ctx, session: ConsoleSession, conf: dict) -> None:
    stream = await connect(ctx.rt.driver, session, conf)
    async with stream:
        await _bridge(stream, lambda data: data)


async def _terminal(ctx: Ctx, session: ConsoleSession, conf: dict, ticket: str) -> None:
    first, rest = await _first_line()
    user, _, given = first.partition(":")
    if user != ctx.user or not hmac.compare_digest(given.encode(), ticket.encode()) \
            or not consoles.valid_ticket(ctx, session.vmid, session.port, given):
        raise ConsoleError("authentication request failed")  # termproxy's word, for every reason
    await websocket.send(b"OK")
    try:
        stream = await connect(ctx.rt.driver, session, conf)
    except ConsoleError as exc:
        await websocket.send(f"{exc}\r\n".encode())
        raise
    terminal = TermInput()
    async with stream:
        if early := terminal.feed(rest):
            await stream.send_all(early)
        await _bridge(stream, terminal.feed)


async def _first_line() -> tuple[str, bytes]:
    """termproxy's `USER:TICKET` line, and what came after it."""
    buffer = b""
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        while b"\n" not in buffer and len(buffer) <= MAX_LINE:
            buffer += _bytes(await websocket.receive())
    line, newline, rest = buffer.partition(b"\n")
    if not newline:
        raise ConsoleError("failed reading ticket: timed out")
    return line.decode("utf-8", "replace"), rest


def _bytes(message: str | bytes) -> bytes:
    return message.encode() if isinstance(message, str) else message


async def _bridge(stream: trio.abc.Stream, decode) -> None:
    """Both directions until one side closes: the guest's bytes out as binary messages, the client's messages
    through `decode` into the guest."""
    async with trio.open_nursery() as nursery:
        async def guest_to_client() -> None:
            while data := await stream.receive_some(CHUNK):
                await websocket.send(data)
            nursery.cancel_scope.cancel()

        async def client_to_guest() -> None:
            while True:
                data = decode(_bytes(await websocket.receive()))
                if data:
                    await stream.send_all(data)

        nursery.start_soon(guest_to_client)
        nursery.start_soon(client_to_guest)


class TermInput:
    """termproxy's client messages (pve-xtermjs README), from a byte stream in any framing: `feed` returns the input
    bytes they carry. `0:LENGTH:DATA` is input, `1:COLS:ROWS:` a resize, `2` a ping; anything else is skipped a
    byte at a time, as termproxy ignores it."""

    HEADER = re.compile(rb"0:(\d{1,9}):|1:\d{1,9}:\d{1,9}:|2")

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = b""
        while self.buffer:
            m = self.HEADER.match(self.buffer)
            if m is None:
                if re.fullmatch(rb"[012](:\d{0,9}(:\d{0,9})?)?", self.buffer):
                    break  # a header still arriving
                self.buffer = self.buffer[1:]
                continue
            if m.group(1) is None:
                self.buffer = self.buffer[m.end():]
                continue
            length = int(m.group(1))
            if len(self.buffer) < m.end() + length:
                break
            out += self.buffer[m.end():m.end() + length]
            self.buffer = self.buffer[m.end() + length:]
        return out
