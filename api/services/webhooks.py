"""Webhooks: configuring them (the spec's "Webhooks"), for every interface.

Rules: only `http`/`https` URLs with a host; `events` are public event types or `prefix.*` patterns;
the secret (at least 16 characters; one is made when none is given) is answered once, on creation, and
sealed before it enters the log with a key derived from the cluster's Raft key, which only members hold
(`seal`/`unseal`). A hook sends only events its owner (the creating user) may audit. Errors: 400
(parameters), 404 (no such hook), 409 (the id exists).
"""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from api.context import Ctx
from api.schema import ParamErrors
from engine import webhooks as wh
from engine.errors import Rejection, not_found
from engine.public_events import unknown_types

SECRET_MIN = 16
MAX_HOOKS = 100  # per cluster: each hook's attempts are written to the log
SHOWN = ("id", "name", "url", "events", "enabled", "owner", "created")


def _fernet(raft_key: str | None) -> Fernet:
    if not raft_key:
        raise Rejection(500, "webhook secrets need the cluster's Raft key")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"gpve webhook secrets").derive(raft_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(raft_key: str | None, secret: str) -> str:
    return _fernet(raft_key).encrypt(secret.encode()).decode()


def unseal(raft_key: str | None, sealed: str) -> str:
    """The clear secret; 500 when this node's key cannot open it."""
    try:
        return _fernet(raft_key).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise Rejection(500, "webhook secret cannot be opened with this node's cluster key") from None


def shown(hook: dict) -> dict:
    """A hook as answered: never its secret; the delivery state as `cursor` and `pending`."""
    return {**{k: hook[k] for k in SHOWN}, "enabled": bool(hook["enabled"]), "cursor": hook["cursor"],
            "pending": hook["pending"]}


def _checked(url: str | None, events: list[str] | None, secret: str | None) -> None:
    errors = {}
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors["url"] = "only http:// and https:// URLs with a host are allowed"
        elif parts.username or parts.password:
            errors["url"] = "credentials in the URL are not allowed; sign with the secret instead"
    if events is not None:
        bad = unknown_types(events)
        if bad:
            errors["events"] = f"unknown event type '{bad[0]}'"
    if secret is not None and len(secret) < SECRET_MIN:
        errors["secret"] = f"value must be at least {SECRET_MIN} characters long"
    if errors:
        raise ParamErrors(errors)


def _hook(ctx: Ctx, hook_id: str) -> dict:
    with ctx.node.read() as s:
        hook = s.webhooks.get(hook_id)
        hook = dict(hook) if hook else None
    if hook is None or not _may_manage(ctx, hook):
        raise not_found(f"webhook '{hook_id}' does not exist")
    return hook


def _may_manage(ctx: Ctx, hook: dict) -> bool:
    return hook["owner"] == ctx.user or ctx.can("Sys.Modify", "/")


def listing(ctx: Ctx) -> list[dict]:
    """The caller's hooks (every hook, with Sys.Modify on `/`), by id."""
    with ctx.node.read() as s:
        hooks = [dict(h) for _, h in sorted(s.webhooks.items())]
    return [shown(h) for h in hooks if _may_manage(ctx, h)]


def get(ctx: Ctx, hook_id: str) -> dict:
    return shown(_hook(ctx, hook_id))


async def create(ctx: Ctx, name: str, url: str, events: list[str], secret: str | None = None,
                 enabled: bool = True) -> dict:
    """`POST /v1/webhooks`: the hook, with its `secret` (the only time it is answered). It receives the
    events committed after this call."""
    _checked(url, events, secret)
    with ctx.node.read() as s:
        if len(s.webhooks) >= MAX_HOOKS:
            raise Rejection(400, f"too many webhooks (at most {MAX_HOOKS} per cluster)")
    result = await ctx.node.submit(wh.SetWebhook(
        request_id=ctx.command_id, ts=ctx.now, user=ctx.user, hook_id="wh-" + secrets.token_hex(6), create=True,
        name=name, url=url, events=list(events), enabled=enabled,
        sealed_secret=seal(ctx.node.raft_key, secret or secrets.token_urlsafe(32)), cursor=ctx.node.hub.last_id()))
    made = _hook(ctx, result["id"])  # a retried request: the hook (and secret) its first attempt made
    return {**shown(made), "secret": unseal(ctx.node.raft_key, made["secret"])}


async def update(ctx: Ctx, hook_id: str, *, name: str | None = None, url: str | None = None,
                 events: list[str] | None = None, secret: str | None = None, enabled: bool | None = None) -> dict:
    """`PUT /v1/webhooks/{id}`: the fields given. A new `secret` is not answered back."""
    _hook(ctx, hook_id)
    _checked(url, events, secret)
    await ctx.node.submit(wh.SetWebhook(
        request_id=ctx.command_id, ts=ctx.now, user=ctx.user, hook_id=hook_id, name=name, url=url,
        events=events, enabled=enabled, sealed_secret=seal(ctx.node.raft_key, secret) if secret else None))
    return get(ctx, hook_id)


async def delete(ctx: Ctx, hook_id: str) -> None:
    _hook(ctx, hook_id)
    await ctx.node.submit(wh.DeleteWebhook(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, hook_id=hook_id))


def deliveries(ctx: Ctx, hook_id: str) -> list[dict]:
    """`GET /v1/webhooks/{id}/deliveries`: the newest attempts first (`event`, `attempt`, `status`, `error`,
    `duration_ms`, `ts`, `node`, `outcome`)."""
    return list(reversed(_hook(ctx, hook_id)["deliveries"]))
