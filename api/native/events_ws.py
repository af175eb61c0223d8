"""`GET /v1/events/ws`: the cluster's public events over a WebSocket (RFC 6455, served by hypercorn/wsproto).

One text message per event, `{"id", "type", "timestamp", "data"}` (engine/hub.py), in log order, only
events on objects the caller may audit (api/native/events.py `visible`). With `since` (the last id the
client saw, from any node) the stream starts right after it: every later event exactly once, then the
live stream; without it, only events after the connection. The server pings idle connections (hypercorn's
`websocket_ping_interval`). Close codes (documented in the endpoint's declaration and the README):

- 4410 `since` is older than what this node keeps: resync from the current state, then reconnect
  without `since` (or with the `last_id` of `GET /v1/events`).
- 4429 the client does not keep up: the stream has had events waiting for it for `BEHIND_LIMIT` seconds
  on end (a consumer catching up from an old `since` gets that long to reach the live stream). A client
  that reads nothing at all is dropped without a close frame after api/server.py's `UNREAD_TIMEOUT`
  (hypercorn waits for a send to complete, so only the kernel can end it). Either way the node never
  waits for a consumer: each stream is its own task reading the shared hub.
- 1001 the node is shutting down.

Refusals before the upgrade are plain HTTP answers in the native error format: 400 (parameters), 401, 429.
"""

from __future__ import annotations

import structlog
import trio
from quart import websocket

from api.bodies import parse_form
from api.context import Ctx
from api.gate import refusal
from api.native.events import check_since, checked_types, visible
from api.schema import ParamErrors
from engine.errors import Rejection
from engine.hub import TooOld

CLOSE_TOO_OLD = 4410
CLOSE_TOO_SLOW = 4429
BEHIND_LIMIT = 20.0  # s a stream may go on having events waiting for it
BATCH = 500  # events read from the hub at a time
log = structlog.get_logger("gpve.events")


async def serve(api) -> Rejection | None:
    """The WebSocket route's handler (`api`: api.app.Api). Returns the refusal when it refuses the upgrade (the
    route answers it as plain HTTP)."""
    endpoint, _, _ = api.registry.resolve("GET", "/events/ws", native=True)
    try:
        ctx, params = api.admit_websocket(endpoint, "/events/ws", parse_form(websocket.query_string, "query string"))
        types = checked_types(params)
        if "since" in params:
            check_since(api.node, params["since"])
    except (ParamErrors, Rejection) as exc:
        return refusal(exc)
    user = ctx.user
    await websocket.accept()
    hub = api.node.hub
    since = params["since"] if "since" in params else hub.last_id()
    log.info("events stream opened", user=user, since=since)
    try:
        await _stream(ctx, hub, since, types, params.get("vmid"), params.get("node"))
    finally:
        log.info("events stream closed", user=user)
    return None


async def _stream(ctx: Ctx, hub, since: int, types: list[str], vmid: int | None, node: str | None) -> None:
    behind_since: float | None = None
    while True:
        changed = ctx.node.state_changed()
        try:
            events = hub.read(since, BATCH)
        except TooOld as exc:
            await _close(CLOSE_TOO_OLD, str(exc))
            return
        if not events:
            await changed.wait()
            continue
        if hub.last_id() > events[-1].id:  # more waiting after this batch
            behind_since = behind_since if behind_since is not None else trio.current_time()
            if trio.current_time() - behind_since > BEHIND_LIMIT:
                await _close(CLOSE_TOO_SLOW, f"too slow: events waited for this client for {BEHIND_LIMIT:.0f} s")
                return
        else:
            behind_since = None
        for event in visible(ctx, events, types, vmid, node):
            await websocket.send(event.wire)
        since = events[-1].id


async def _close(code: int, reason: str) -> None:
    log.info("events stream cut off", code=code, reason=reason)
    with trio.move_on_after(2.0):
        await websocket.close(code, reason)

