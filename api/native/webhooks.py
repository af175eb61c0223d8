"""/v1/webhooks: configure hooks and read their recent delivery attempts (api/services/webhooks.py)."""

from __future__ import annotations

import dataclasses

from api.context import Ctx
from api.registry import API
from api.schema import Param, Permission
from api.services import webhooks

HOOK = {"type": "object", "required": ["id", "name", "url", "events", "enabled"], "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "url": {"type": "string"},
    "events": {"type": "array", "items": {"type": "string"}}, "enabled": {"type": "boolean"},
    "owner": {"type": "string"}, "created": {"type": "number"},
    "cursor": {"type": "integer", "description": "the last event id done with"},
    "pending": {"type": "object", "nullable": True, "description": "the event being retried"}}}
ID = Param("id", optional=False, location="path", pattern=r"[a-z0-9][a-z0-9\-]{0,63}")
FIELDS = [Param("name", max_length=128), Param("url", max_length=2048),
          Param("events", "array", items=Param("type", max_length=64), max_items=64,
                description="Event types or `prefix.*` patterns; empty: every event."),
          Param("secret", max_length=256, description="HMAC key, at least 16 characters; made when not given."),
          Param("enabled", "boolean")]


AUDIT = Permission("Sys.Audit", "/", description="And: only your own hooks, unless you have Sys.Modify on '/'.")
MODIFY = Permission("Sys.Modify", "/", description="A hook makes the cluster send requests where it points.")


@API.endpoint("GET", "/webhooks", native=True, permission=AUDIT, returns={"type": "array", "items": HOOK})
async def list_webhooks(ctx: Ctx, p: dict) -> list:
    """Your hooks (every hook with Sys.Modify on `/`); secrets are never shown."""
    return webhooks.listing(ctx)


@API.endpoint("POST", "/webhooks", native=True,
              params=[dataclasses.replace(f, optional=f.name not in ("name", "url", "events")) for f in FIELDS],
              permission=MODIFY,
              returns={**HOOK, "properties": {**HOOK["properties"], "secret": {"type": "string"}}})
async def create_webhook(ctx: Ctx, p: dict) -> dict:
    """A new hook; the answer holds its `secret`, which is never shown again."""
    return await webhooks.create(ctx, p["name"], p["url"], p["events"], p.get("secret"),
                                 bool(p.get("enabled", 1)))


@API.endpoint("GET", "/webhooks/{id}", native=True, params=[ID], permission=AUDIT, returns=HOOK)
async def get_webhook(ctx: Ctx, p: dict) -> dict:
    return webhooks.get(ctx, p["id"])


@API.endpoint("PUT", "/webhooks/{id}", native=True, params=[ID, *FIELDS], permission=MODIFY, returns=HOOK)
async def update_webhook(ctx: Ctx, p: dict) -> dict:
    """Change the fields given (a new `secret` is not answered)."""
    fields = {k: p[k] for k in ("name", "url", "events", "secret") if k in p}
    return await webhooks.update(ctx, p["id"], enabled=bool(p["enabled"]) if "enabled" in p else None, **fields)


@API.endpoint("DELETE", "/webhooks/{id}", native=True, params=[ID], permission=MODIFY)
async def delete_webhook(ctx: Ctx, p: dict) -> None:
    """Remove the hook; an attempt under way finishes, nothing more is sent."""
    await webhooks.delete(ctx, p["id"])


@API.endpoint("GET", "/webhooks/{id}/deliveries", native=True, params=[ID], permission=AUDIT,
              returns={"type": "array", "items": {"type": "object", "properties": {
                  "event": {"type": "integer"}, "attempt": {"type": "integer"}, "status": {"type": "integer"},
                  "error": {"type": "string"}, "duration_ms": {"type": "number"}, "ts": {"type": "number"},
                  "node": {"type": "string"}, "outcome": {"type": "string", "enum": [
                      "delivered", "failed", "gave_up", "skipped", "disabled"]}}}})
async def list_deliveries(ctx: Ctx, p: dict) -> list:
    """The newest delivery attempts first (the last 50)."""
    return webhooks.deliveries(ctx, p["id"])
