"""A node's console proxies: one per `vncproxy`/`termproxy` call, each waiting for its one WebSocket client.

As qemu-server's `vncproxy` and `termproxy` workers (`PVE/API2/Qemu.pm`): the call picks a port (5900-5999, a key
here: the proxy is reached through `vncwebsocket` only, so nothing listens on it), starts a `vncproxy` task, and the
task waits `CONNECT_TIMEOUT` seconds for its client (Proxmox's `$timeout = 10`), else fails with `connection timed
out`; once a client has connected it lasts until the connection closes. A session is claimed by one connection only:
a second use of its ticket finds it taken. Aborting the task (`DELETE .../tasks/{upid}`) closes the connection.

Shapes: `ConsoleSession(port, vmid, user, kind, password)`, kind `vnc` (the guest's display; `password` is the VNC
protocol password QEMU is given when the client connects) or `serial0`..`serial3` (termproxy's `serial`; `serial` for
the first `serialN: socket` of the config, as `qm terminal` picks it). Errors: `NoFreePort`, `ConsoleTimeout`,
`ConsoleError` (the guest end cannot be reached; `connect`).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field

import trio

from hypervisor.qemu import GuestError
from hypervisor.qemu_argv import serial_socket, vnc_socket

PORTS = range(5900, 6000)  # PVE::Tools::next_vnc_port
CONNECT_TIMEOUT = 10.0  # s the proxy waits for its client (qemu-server's vncproxy, termproxy's listen_and_accept)


class NoFreePort(Exception):
    """Every console port is in use."""


class ConsoleTimeout(Exception):
    """No client connected in time."""


class ConsoleError(Exception):
    """The console cannot connect to the guest; the message (Proxmox's) ends the task and is shown to the client."""


VNC_PASSWORD_LIFETIME = "+30"  # QEMU forgets the VNC password 30 s after it was set (qm vncproxy)


@dataclass(eq=False)
class ConsoleSession:
    port: int
    vmid: int
    user: str
    kind: str  # "vnc" | "serial" | "serial0".."serial3"
    password: str | None = field(default=None, repr=False)  # the VNC protocol password (never logged)
    # a digest of the session's own ticket (api/auth.py vnc_ticket_id): no other ticket claims it
    ticket_id: str = field(default="", repr=False)
    opened: float = 0.0  # trio.current_time() when the call made it
    claimed: bool = False
    connected: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)  # the bridge's: closing it ends the connection
    error: str | None = None  # why the connection failed (the task's error), never a secret

    def end(self, error: str | None = None) -> None:
        if error and not self.ended.is_set():
            self.error = error
        self.scope.cancel()
        self.ended.set()


class ConsoleSessions:
    """The node's open console sessions, by port (trio, one thread)."""

    def __init__(self, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.connect_timeout = connect_timeout
        self.sessions: dict[int, ConsoleSession] = {}

    def open(self, vmid: int, user: str, kind: str, password: str | None = None) -> ConsoleSession:
        """A new session on the lowest free port; raises NoFreePort. Sessions nobody claimed within the timeout (their
        task never ran: the call's task was refused, the node restarted) are dropped first."""
        now = trio.current_time()
        for port, stale in list(self.sessions.items()):
            if not stale.claimed and now - stale.opened > 2 * self.connect_timeout:
                self.drop(port)
        port = next((p for p in PORTS if p not in self.sessions), None)
        if port is None:
            raise NoFreePort("unable to find free port (5900-5999)")
        session = ConsoleSession(port, vmid, user, kind, password, opened=now)
        self.sessions[port] = session
        return session

    def drop(self, port: int) -> None:
        session = self.sessions.pop(port, None)
        if session is not None:
            session.end()

    def claim(self, port: int, vmid: int, user: str, ticket_id: str = "") -> ConsoleSession | None:
        """The session on `port` for this guest, user and ticket, once: None when there is none, it is another's
        (or another ticket's: an earlier session's on the same port), it was claimed already or its client came too
        late."""
        session = self.sessions.get(port)
        if session is None or session.claimed or session.vmid != vmid or session.user != user \
                or not hmac.compare_digest(session.ticket_id, ticket_id) \
                or trio.current_time() - session.opened > self.connect_timeout:
            return None
        session.claimed = True
        session.connected.set()
        return session

    async def supervise(self, port: int) -> str | None:
        """The task's part: until the session's connection has come and gone; returns why it failed (None: it
        closed), raises ConsoleTimeout when no client connected in time. The session is gone afterwards (also when
        the task is cancelled: aborted)."""
        session = self.sessions.get(port)
        if session is None:
            raise ConsoleTimeout()
        try:
            with trio.move_on_at(session.opened + self.connect_timeout):
                await session.connected.wait()
            if not session.connected.is_set():
                raise ConsoleTimeout()
            await session.ended.wait()
            return session.error
        finally:
            self.drop(port)


def serial_iface(conf: dict, wanted: str | None) -> str:
    """The serial port a terminal attaches to, as `qm terminal` picks it: `wanted` if it is a `socket`, else the first
    `serialN: socket`. Raises ConsoleError with Proxmox's messages."""
    if wanted:
        if not conf.get(wanted):
            raise ConsoleError(f"serial interface '{wanted}' is not configured")
        if conf[wanted] != "socket":
            raise ConsoleError(f"wrong serial type on interface '{wanted}'")
        return wanted
    found = next((k for k in ("serial0", "serial1", "serial2", "serial3") if conf.get(k) == "socket"), None)
    if found is None:
        raise ConsoleError("unable to find a serial interface")
    return found


async def connect(driver, session: ConsoleSession, conf: dict) -> trio.abc.Stream:
    """The guest end of a claimed session: its VNC display (after giving QEMU the session's password, valid 30 s, as
    `qm vncproxy` does) or its serial port. Raises ConsoleError (`VM N not running`, the serial port's errors)."""
    vmid = session.vmid
    if session.kind == "vnc":
        path = vnc_socket(driver.run_dir, vmid)
    else:
        wanted = session.kind if re.fullmatch(r"serial\d", session.kind) else None
        path = serial_socket(driver.run_dir, vmid, serial_iface(conf, wanted))
    if not driver.running(vmid):
        raise ConsoleError(f"VM {vmid} not running")
    if session.kind == "vnc":
        try:
            await driver.qmp(vmid, "set_password", {"protocol": "vnc", "password": session.password})
            await driver.qmp(vmid, "expire_password", {"protocol": "vnc", "time": VNC_PASSWORD_LIFETIME})
        except GuestError as exc:
            raise ConsoleError(str(exc)) from None
    try:
        return await trio.open_unix_socket(path)
    except OSError as exc:
        raise ConsoleError(f"unable to connect to VM {vmid} console - {exc.strerror or exc}") from None
