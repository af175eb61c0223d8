"""Proxmox tickets and CSRF tokens.

Ticket: `PVE:{userid}:{hex time}::{base64 signature}`, valid two hours (plus 300 s of clock skew),
signed with the cluster's RSA key (RSA/SHA-256; clients treat the signature as opaque).
CSRF token: `{hex time}:{base64 HMAC-SHA256("{hex time}:{userid}")}` under the cluster secret.
VNC ticket (pve-access-control's `assemble_vnc_ticket`): `PVEVNC:{hex time}::{base64 signature}`, the signature over
`PVEVNC:{hex time}:{userid}:{path}:{port}` with the same key, so it names neither user nor guest in plain text and is
good only for them and that port, and only while younger than 40 s (`verify_vnc_ticket`: -20 < age < 40).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from functools import lru_cache
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TICKET_LIFETIME = 7200
CLOCK_SKEW = 300
VNC_TICKET_MIN_AGE = -20  # s (PVE::AccessControl's verify_short_lived_ticket)
VNC_TICKET_MAX_AGE = 40


@lru_cache(maxsize=8)
def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(pem.encode(), None)  # type: ignore[return-value]


def new_ticket_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def make_ticket(key_pem: str, userid: str, now: float) -> str:
    plain = f"PVE:{userid}:{int(now):08X}"
    sig = load_private_key(key_pem).sign(plain.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{plain}::{base64.b64encode(sig).decode()}"


def verify_ticket(key_pem: str, ticket: str, now: float) -> str | None:
    """The ticket's user id if it is genuine and fresh, else None. The signature check (an RSA verification, the
    larger part of authenticating a request) is remembered per key and ticket; freshness is checked every time, so a
    remembered ticket expires exactly as an unremembered one."""
    genuine = _genuine(key_pem, unquote(ticket.strip()))
    if genuine is None:
        return None
    user, issued = genuine
    age = now - issued
    if age < -CLOCK_SKEW or age > TICKET_LIFETIME:
        return None
    return user


@lru_cache(maxsize=4096)
def _genuine(key_pem: str, ticket: str) -> tuple[str, int] | None:
    """(user id, issue time) if `ticket` is well formed and signed with `key_pem`, else None: a pure function of
    its arguments, so remembering its answers changes nothing but the time taken (a new key is a new argument)."""
    plain, sep, sig_b64 = ticket.partition("::")
    parts = plain.split(":")
    if not sep or len(parts) != 3 or parts[0] != "PVE" or not parts[1]:
        return None
    try:
        issued = int(parts[2], 16)
        sig = base64.b64decode(sig_b64, validate=True)
        load_private_key(key_pem).public_key().verify(sig, plain.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature):
        return None
    return parts[1], issued


def make_csrf_token(secret: str, userid: str, now: float) -> str:
    stamp = f"{int(now):08X}"
    digest = hmac.new(secret.encode(), f"{stamp}:{userid}".encode(), hashlib.sha256).digest()
    return f"{stamp}:{base64.b64encode(digest).decode().rstrip('=')}"


def verify_csrf_token(secret: str, token: str, userid: str, now: float) -> bool:
    stamp, _, _ = token.partition(":")
    try:
        issued = int(stamp, 16)
    except ValueError:
        return False
    if not -CLOCK_SKEW <= now - issued <= TICKET_LIFETIME:
        return False
    return hmac.compare_digest(make_csrf_token(secret, userid, issued).encode(), token.encode("utf-8", "replace"))


def _vnc_signed(stamp: str, userid: str, path: str, port: int) -> bytes:
    return f"PVEVNC:{stamp}:{userid}:{path}:{port}".encode()


def make_vnc_ticket(key_pem: str, userid: str, path: str, port: int, now: float) -> str:
    """A console ticket for `userid` on ACL `path` (`/vms/100`) and console `port`."""
    stamp = f"{int(now):08X}"
    sig = load_private_key(key_pem).sign(_vnc_signed(stamp, userid, path, port), padding.PKCS1v15(), hashes.SHA256())
    return f"PVEVNC:{stamp}::{base64.b64encode(sig).decode()}"


def verify_vnc_ticket(key_pem: str, ticket: str, userid: str, path: str, port: int, now: float) -> bool:
    """Whether `ticket` was made for exactly this user, path and port, and is fresh. A `PASSWORD:` prefix (the VNC
    password vncproxy puts before the ticket, as Proxmox) is dropped first."""
    m = re.fullmatch(r"(?:.{8}:)?PVEVNC:([0-9A-F]{8})::([A-Za-z0-9+/=]+)", ticket, re.S)
    if m is None:
        return False
    try:
        sig = base64.b64decode(m.group(2), validate=True)
        load_private_key(key_pem).public_key().verify(sig, _vnc_signed(m.group(1), userid, path, port),
                                                      padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature):
        return False
    return VNC_TICKET_MIN_AGE < now - int(m.group(1), 16) < VNC_TICKET_MAX_AGE


def vnc_ticket_id(ticket: str) -> str:
    """A digest naming one VNC ticket (its `PVEVNC:` part): what a console session keeps to know its own ticket."""
    return hashlib.sha256(ticket[ticket.find("PVEVNC:"):].encode()).hexdigest()


def vnc_password() -> str:
    """The VNC protocol password vncproxy answers: 8 random characters from '!' to '`' (PVE::Ticket's
    generate_vnc_password; VNC's DES authentication uses 8)."""
    return "".join(chr(0x21 + secrets.randbelow(0x60 - 0x21 + 1)) for _ in range(8))
