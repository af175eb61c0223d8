"""The gate every interface passes: who is calling (ticket, API token), may they (privilege on path), and
are they within their rate. Transport-neutral: REST hands it the header values, gRPC its metadata.

Follows Proxmox's `PVE::APIServer::AnyEvent` and `PVE::RPCEnvironment`: tickets from the `PVEAuthCookie`
cookie or an `Authorization: PVEAuthCookie=…` header, with the CSRF token required on writes; API tokens
from `Authorization: PVEAPIToken=user@realm!tokenid=SECRET` (no CSRF). Errors: 401 (`invalid PVE ticket`,
`invalid token value!`, `Permission denied - invalid csrf token`), 403 (missing privilege), 429.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from api import auth
from api.errors import ApiError, forbidden, unauthorized
from api.forward import require_member
from api.passwords import hash_secret
from api.ratelimit import RateLimiter, Verdict
from api.schema import Endpoint, ParamErrors, Permission
from engine.errors import Rejection
from engine.node import Node
from engine.roles import privileges_on, user_active

ROOT = "root@pam"


@dataclass(frozen=True)
class Credentials:
    """What a request carries: the ticket cookie, the `Authorization` value, the CSRF token header."""

    cookie: str | None = None
    authorization: str = ""
    csrf: str = ""


class RateLimited(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__("rate limited")
        self.verdict = verdict


def refusal(exc: Exception) -> Rejection:
    """The answer every interface gives for what refused a call: 400 `Parameter verification failed` with the
    per-parameter messages (pve-common's), 429 with the wait, a Rejection as it is; anything else a 500."""
    if isinstance(exc, ParamErrors):
        return Rejection(400, "Parameter verification failed", exc.errors)
    if isinstance(exc, RateLimited):
        return Rejection(429, f"Rate limit exceeded. Try again in {exc.verdict.retry_after} seconds.")
    if isinstance(exc, Rejection):
        return exc
    return Rejection(500, "internal error")


class Gate:
    def __init__(self, node: Node, limiter: RateLimiter, root_password: str) -> None:
        self.node = node
        self.limiter = limiter
        self._root_password = root_password

    def check_local_password(self, user: str, password: str) -> bool:
        """The pam realm is node-local, as in Proxmox: root@pam's password is this node's own."""
        return user == ROOT and hmac.compare_digest(password.encode(), self._root_password.encode())

    def authenticate(self, creds: Credentials, writes: bool, now: float) -> str:
        """The caller's id (`user@realm`, or `user@realm!tokenid` for a token); raises 401."""
        header = creds.authorization
        ticket = creds.cookie
        if header.startswith("PVEAuthCookie="):
            ticket = header.removeprefix("PVEAuthCookie=")
        elif header.startswith("PVEAPIToken"):
            return self._token(header[len("PVEAPIToken"):].lstrip("= "), now)
        if not ticket:
            raise unauthorized("No ticket")
        key_pem, csrf_secret = self.node.auth_secrets()
        user = auth.verify_ticket(key_pem, ticket, now)
        if user is None:
            raise unauthorized("invalid PVE ticket")
        with self.node.read() as s:
            if not user_active(s, user, now):
                raise unauthorized("invalid PVE ticket")
        if writes and not auth.verify_csrf_token(csrf_secret, creds.csrf, user, now):
            raise unauthorized("Permission denied - invalid csrf token")
        return user

    def _token(self, value: str, now: float) -> str:
        """`user@realm!tokenid=SECRET`; secrets are stored hashed, expiry and revocation apply at once."""
        full, _, secret = value.partition("=")
        userid, _, tokenid = full.partition("!")
        with self.node.read() as s:
            token = s.access.get("user", {}).get(userid, {}).get("tokens", {}).get(tokenid)
            active = user_active(s, full, now)
        if not tokenid or token is None or not active or not hmac.compare_digest(
                token.get("secret", ""), hash_secret(secret)):
            raise unauthorized("invalid token value!")
        return full

    def authorize(self, permission: Permission, user: str, params: dict[str, Any]) -> None:
        """The declared (base) permission; raises 403 naming the missing privilege and path."""
        if permission.check == "root" and user != ROOT:
            raise ApiError(403, "Permission check failed (user != root@pam)")
        with self.node.read() as s:
            denied = permission.denial(lambda path: privileges_on(s, user, path), params)
        if denied:
            raise forbidden(*denied)

    def check_node(self, endpoint: Endpoint, params: dict[str, Any]) -> None:
        """A `/nodes/{node}/…` endpoint's node must be a cluster member, else 404 `no such cluster node 'X'`
        (api/forward.py). Checked once the caller is known, before its parameters: Proxmox resolves the node
        before its handler checks them, so every request to an unknown node gets this answer."""
        if endpoint.path.startswith("/nodes/{node}"):
            with self.node.read() as s:
                require_member(s.nodes, str(params.get("node", "")))

    def count(self, rate_class: str, key: str, now: float) -> Verdict | None:
        """Count one request of `rate_class` (auth, read, write, bulk) for `key` (the user, or for logins the
        source and user name); raises RateLimited over the limit."""
        verdict = self.limiter.check(rate_class, key, now)
        if verdict is not None and not verdict.allowed:
            raise RateLimited(verdict)
        return verdict

    def request_key(self, client_id: str, method: str, path: str, params: dict[str, Any]) -> str:
        """The id a client's write is deduplicated by: its own request id, bound to what it asks (method, path,
        parameters) by an HMAC under the cluster's secret, the same on every node. A retry with the same id
        and the same request applies once; the same id reused for a different request is a new request, never
        silently dropped (and no parameter, a password say, can be guessed from the key)."""
        try:
            _, secret = self.node.auth_secrets()
        except Rejection:
            return client_id
        canonical = json.dumps([method, path, sorted((k, str(v)) for k, v in params.items())], separators=(",", ":"))
        return f"{client_id}#{hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()[:16]}"

    def refund(self, rate_class: str, key: str) -> None:
        """Give back a counted request: a login counts against the failed-login budget only when its credentials
        were refused (401), not when it succeeded or was refused for another reason (400, 503)."""
        self.limiter.refund(rate_class, key)
