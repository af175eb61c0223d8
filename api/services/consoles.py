"""Consoles: what `vncproxy`, `termproxy`, `vncwebsocket` and `spiceproxy` do (qemu-server's `PVE/API2/Qemu.pm`).

`open_proxy` (vncproxy, termproxy) opens a console session on the guest's node (hypervisor/console.py), signs a
one-time ticket bound to the caller, the guest's ACL path and the session's port (api/auth.py, valid 40 s), and starts
the session's `vncproxy` task: `{user, ticket, port, upid, cert}` (+ `password` for VNC, which also prefixes the ticket
as Proxmox's `PASSWORD:PVEVNC:...`). `claim` is the WebSocket's check: the ticket is genuine and fresh for this user,
guest and port, and its session is unused (else 401 `permission denied - invalid PVEVNC ticket`, the same for every
reason, as Proxmox's termproxy gives no hint). The ticket, the password and the session's secrets appear in no log
line, task log or error.

`spice_config` answers `spiceproxy`: Proxmox's `no spice port` for a guest without SPICE (a `vga` other than `qxl`)
and `VM N not running` (409: a state of the guest, as the guest agent's refusals; Proxmox answers 500), else the
remote-viewer settings as `PVE::AccessControl::remote_viewer_config` makes them, the SPICE password given to QEMU for
30 s. Nothing listens on the SPICE proxy port (3128) yet: gpve has no `spiceproxy` daemon.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import time

from api import auth
from api.context import Ctx
from api.services import guests
from api.services.tasks import start_task
from engine.errors import Rejection
from hypervisor import propstr
from hypervisor.console import ConsoleSession, NoFreePort
from hypervisor.qemu import GuestError
from hypervisor.qemu_argv import has_display, spice_heads

INVALID = "permission denied - invalid PVEVNC ticket"
SPICE_PASSWORD_LIFETIME = "+30"


def acl_path(vmid: int) -> str:
    return f"/vms/{vmid}"


def _consoles(ctx: Ctx):
    consoles = getattr(ctx.rt, "consoles", None)
    if consoles is None:
        raise Rejection(501, "consoles are not available on this node")
    return consoles


def _cert(ctx: Ctx) -> str:
    with open(os.path.join(ctx.node.spec.data_dir, "ssl", "pve-root-ca.pem")) as f:
        return f.read(8192)


async def open_proxy(ctx: Ctx, node: str, vmid: int, kind: str) -> dict:
    """A console session of `kind` (`vnc`, `serial` for the first serial socket, or `serial0`..`serial3`) and its
    task. A VNC console of a guest without a display (`vga: serialN` or `none`) is refused (400): Proxmox serves
    `vga: serialN` through vncterm, which gpve has not; its serial console is `termproxy`."""
    guest = guests.guest_or_404(ctx, node, vmid)
    consoles = _consoles(ctx)
    if kind == "vnc" and not has_display(guest["conf"]):
        raise Rejection(400, f"VM {vmid} has no VNC display (vga: {guest['conf'].get('vga')}) - use termproxy")
    password = auth.vnc_password() if kind == "vnc" else None
    try:
        session = consoles.open(vmid, ctx.user, kind, password)
    except NoFreePort as exc:
        raise Rejection(500, str(exc)) from None
    key_pem, _ = ctx.node.auth_secrets()
    ticket = auth.make_vnc_ticket(key_pem, ctx.user, acl_path(vmid), session.port, ctx.now)
    session.ticket_id = auth.vnc_ticket_id(ticket)
    try:
        upid = await start_task(ctx, node, vmid, "vncproxy", {"port": session.port})
    except BaseException:
        consoles.drop(session.port)
        raise
    answer = {"user": ctx.user, "ticket": ticket, "port": session.port, "upid": upid}
    if kind == "vnc":
        answer.update(ticket=f"{password}:{ticket}", password=password, cert=_cert(ctx))
    return answer


async def open_terminal(ctx: Ctx, node: str, vmid: int, serial: str | None) -> dict:
    """termproxy: the serial console `serial`, else the one `vga: serialN` names, else the first `serialN: socket`
    (checked when the client connects, as `qm terminal` does)."""
    if serial is None:
        vga = propstr.parse(str(guests.guest_or_404(ctx, node, vmid)["conf"].get("vga", "")), default_key="type")
        serial = vga.get("type") if re.fullmatch(r"serial\d", vga.get("type", "")) else "serial"
    return await open_proxy(ctx, node, vmid, serial)


def valid_ticket(ctx: Ctx, vmid: int, port: int, ticket: str) -> bool:
    key_pem, _ = ctx.node.auth_secrets()
    return auth.verify_vnc_ticket(key_pem, ticket, ctx.user, acl_path(vmid), port, time.time())


def check_ticket(ctx: Ctx, node: str, vmid: int, port: int, ticket: str) -> dict:
    """`GET vncwebsocket` without the upgrade: the ticket is checked (not used up), `{"port": "P"}`."""
    guests.guest_or_404(ctx, node, vmid)
    if not valid_ticket(ctx, vmid, port, ticket):
        raise Rejection(401, INVALID)
    return {"port": str(port)}


def claim(ctx: Ctx, node: str, vmid: int, port: int, ticket: str) -> tuple[ConsoleSession, dict]:
    """The session the WebSocket connects, used up, and the guest's config; 404 (no such guest here), 401."""
    guest = guests.guest_or_404(ctx, node, vmid)
    if not valid_ticket(ctx, vmid, port, ticket):
        raise Rejection(401, INVALID)
    session = _consoles(ctx).claim(port, vmid, ctx.user, auth.vnc_ticket_id(ticket))
    if session is None:
        raise Rejection(401, INVALID)
    return session, guest["conf"]


def _spice_tickets(secret: str, user: str, vmid: int, node: str, port: int, now: float) -> tuple[str, str]:
    """PVE::Ticket's assemble_spice_ticket: a one-time password (40 hex digits, never shown but here) and the proxy
    ticket remote-viewer passes to the SPICE proxy as its `host` (signed, lower case)."""
    stamp = f"{int(now):08x}"
    password = hashlib.sha1(f"PVESPICE:{stamp}:{user}:{vmid}:{node}:{secret}:{secrets.token_hex(16)}".encode())
    plain = f"pvespiceproxy:{stamp}:{vmid}:{node.lower()}:{port}"
    sig = hashlib.sha1(plain.encode() + secret.encode()).hexdigest()
    return password.hexdigest(), f"{plain}::{sig}"


def _subject(cert_path: str) -> str:
    """The node certificate's subject as remote-viewer's `host-subject` wants it: its names in order, comma-separated
    (`C=..,O=..,CN=..`, as Proxmox's read_x509_subject_spice)."""
    from cryptography import x509

    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return ",".join(rdn.rfc4514_string() for rdn in cert.subject.rdns)


async def spice_config(ctx: Ctx, node: str, vmid: int, proxy: str | None) -> dict:
    """`spiceproxy`: the remote-viewer settings (`type`, `host` (the proxy ticket), `proxy`, `tls-port`, `password`,
    `ca`, `host-subject`, `title`, ...). 409 `VM N not running`, `no spice port` (Proxmox's messages) otherwise."""
    guest = guests.guest_or_404(ctx, node, vmid)
    driver = ctx.rt.driver
    if driver is None or guest["node"] != ctx.node.name or not driver.running(vmid):
        raise Rejection(409, f"VM {vmid} not running")
    try:
        info = await driver.qmp(vmid, "query-spice") if spice_heads(guest["conf"]) else {}
    except GuestError as exc:
        raise Rejection(409, str(exc)) from None
    port = (info or {}).get("tls-port") or (info or {}).get("port")
    if not port:
        raise Rejection(409, "no spice port")
    _, secret = ctx.node.auth_secrets()
    password, proxy_ticket = _spice_tickets(secret, ctx.user, vmid, node, int(port), ctx.now)
    try:
        await driver.qmp(vmid, "set_password", {"protocol": "spice", "password": password})
        await driver.qmp(vmid, "expire_password", {"protocol": "spice", "time": SPICE_PASSWORD_LIFETIME})
    except GuestError:
        raise Rejection(500, f"VM {vmid} qmp command 'set_password' failed") from None
    host = proxy or socket.getfqdn() or ctx.node.name
    if re.fullmatch(r"[0-9a-fA-F:]+", host) and ":" in host:
        host = f"[{host}]"
    ssl_dir = os.path.join(ctx.node.spec.data_dir, "ssl")
    title = f"VM {vmid}" + (f" - {guest['conf']['name']}" if guest["conf"].get("name") else "")
    return {"secure-attention": "Ctrl+Alt+Ins", "toggle-fullscreen": "Shift+F11", "release-cursor": "Ctrl+Alt+R",
            "type": "spice", "title": title, "host": proxy_ticket, "proxy": f"http://{host}:3128",
            "tls-port": int(port), "host-subject": _subject(os.path.join(ssl_dir, "pve-ssl.pem")),
            "ca": _cert(ctx).replace("\n", "\\n"), "password": password, "delete-this-file": 1}
