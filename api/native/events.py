"""/v1/events: the cluster's public events in log order, as JSON pages (long poll) and over a WebSocket
(`/v1/events/ws`, api/native/events_ws.py). Both take the same filters and the same ids."""

from __future__ import annotations

import trio

from api.context import Ctx
from api.errors import ApiError
from api.registry import API
from api.schema import Param, ParamErrors, split_list
from engine.hub import PER_ENTRY, PublicEvent, TooOld
from engine.public_events import PUBLIC_TYPES, type_matches, unknown_types

EVENT = {"type": "object", "properties": {"id": {"type": "integer"}, "type": {"type": "string", "enum":
                                                                                list(PUBLIC_TYPES)},
                                           "timestamp": {"type": "string", "format": "date-time"},
                                           "data": {"type": "object"}}}


def audit_path(event: PublicEvent) -> tuple[str, str]:
    """The privilege that lets a caller see `event`: guests' events need VM.Audit on the guest, the rest
    Sys.Audit on the node (or on `/` for cluster membership)."""
    vmid, node = event.data.get("vmid"), event.data.get("node")
    if vmid is not None:
        return "VM.Audit", f"/vms/{vmid}"
    return "Sys.Audit", f"/nodes/{node}" if event.type.startswith("task.") else "/"


def matches(event: PublicEvent, types: list[str], vmid: int | None, node: str | None) -> bool:
    """`types` entries are exact types or prefixes written `vm.*`."""
    if not type_matches(types, event.type):
        return False
    if vmid is not None and event.data.get("vmid") != vmid:
        return False
    return node is None or event.data.get("node") == node


def visible(ctx: Ctx, events: list[PublicEvent], types: list[str], vmid: int | None,
            node: str | None) -> list[PublicEvent]:
    return [e for e in events if matches(e, types, vmid, node) and ctx.can(*audit_path(e))]


FILTERS = [Param("types", description="Event types, comma-separated; `vm.*` selects a prefix."),
           Param("vmid", "integer", minimum=100, maximum=999_999_999),
           Param("node", format="pve-node")]


AHEAD = 1000  # log entries a `since` may be ahead of what this node knows committed (a node a little behind)


def check_since(node, since: int) -> None:
    """400 for an id no event of this cluster can have yet (from another cluster, or mistyped): rather than a
    stream that stays silent for ever."""
    if since // PER_ENTRY > max(node.replog.raftCommitIndex, node.hub.last_id() // PER_ENTRY) + AHEAD:
        raise ParamErrors({"since": f"no event {since} in this cluster's log yet (newest: {node.hub.last_id()})"})


def checked_types(p: dict) -> list[str]:
    """The `types` filter; 400 naming the first type no public event has."""
    types = split_list(p.get("types"))
    unknown = unknown_types(types)
    if unknown:
        raise ParamErrors({"types": f"unknown event type '{unknown[0]}'"})
    return types


@API.endpoint("GET", "/events", native=True, rate_class="read",
              params=[Param("since", "integer", minimum=0, default=0,
                            description="The id of the last event already seen (0: from the oldest kept)."),
                      Param("limit", "integer", minimum=1, maximum=500, default=100),
                      *FILTERS,
                      Param("wait", "integer", minimum=0, maximum=60, default=0,
                            description="Seconds to wait for a first event when there is none yet.")],
              returns={"type": "object", "properties": {"events": {"type": "array", "items": EVENT},
                                                         "last_id": {"type": "integer"},
                                                         "more": {"type": "boolean", "description":
                                                                  "events after last_id exist now: read on"}}})
async def list_events(ctx: Ctx, p: dict) -> dict:
    """Events after `since`, oldest first, that the caller may audit; `last_id` is the id to pass as `since`
    next time (it moves past events filtered out too). 410 when `since` is older than what the node keeps:
    resync from the current state, then read from the `last_id` of an empty read."""
    hub = ctx.node.hub
    since, limit = p.get("since", 0) or hub.floor, p.get("limit", 100)
    types = checked_types(p)
    check_since(ctx.node, since)
    with trio.move_on_after(p.get("wait", 0)):
        while True:
            changed = ctx.node.state_changed()
            try:
                events = hub.read(since, limit)
            except TooOld as exc:
                raise ApiError(410, str(exc)) from None
            shown = visible(ctx, events, types, p.get("vmid"), p.get("node"))
            if shown or not p.get("wait"):
                break
            if events:  # all filtered out: move on past them
                since = events[-1].id
                continue
            await changed.wait()
    last = events[-1].id if events else since
    return {"events": [e.to_dict() for e in shown], "last_id": last, "more": hub.last_id() > last}


@API.endpoint("GET", "/events/ws", native=True, rate_class="read",
              params=[Param("since", "integer", minimum=0,
                            description="The id of the last event already seen; without it, only new events."),
                      *FILTERS],
              returns={"type": "null", "description": "A WebSocket (RFC 6455) upgrade: one text message per "
                       "event, shaped as an item of `GET /v1/events`. Close codes: 4410 `since` is no longer "
                       "kept (resync), 4429 the client did not keep up, 1001 the node stops."})
async def events_ws(ctx: Ctx, p: dict) -> None:
    """The event stream over a WebSocket (api/native/events_ws.py); a plain HTTP request gets 400."""
    raise ApiError(400, "this endpoint needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)")
