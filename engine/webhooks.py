"""Webhooks as log records: the hooks, where each one's delivery stands, and its recent attempts.

A hook's record: `id`, `name`, `url`, `events` (type patterns, `vm.*` style), `enabled`, `owner` (whose
audit rights filter what it is sent), `secret` (sealed by the proposer with a key only members hold:
never in clear in the log), `created`, `cursor` (the last event id done with: delivered, given up or not
for this hook), `pending` (the event being retried: `{event, attempt, first, last, retry_at}`, or None) and
`deliveries` (the newest `KEEP` attempts: `event`, `attempt`, `status`, `error`, `duration_ms`, `ts`,
`node`, `outcome`). Which node delivers is decided by the log too: the leader delivers, and because the
cursor and the retry state are committed, a new leader goes on where the old one stopped (at least
once: an attempt whose outcome did not commit is made again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.commands import Command
from engine.decide import Decision, decide
from engine.errors import bad_request, conflict, not_found
from engine.events import Event
from engine.state import State, apply, put_record

KEEP = 50  # attempts kept per hook
HOOK_ID = re.compile(r"[a-z0-9][a-z0-9\-]{0,63}")
OUTCOMES = ("delivered", "failed", "gave_up", "skipped", "disabled")


@dataclass(frozen=True, kw_only=True)
class SetWebhook(Command):
    """Create (`create`) or change a hook: the fields given (not None) are set. `cursor`: on create, the id
    of the newest event the proposer had seen (the hook gets what comes after)."""

    TYPE = "webhook.set"
    hook_id: str
    create: bool = False
    name: str | None = None
    url: str | None = None
    events: list | None = None
    enabled: bool | None = None
    sealed_secret: str | None = None
    cursor: int = 0


@dataclass(frozen=True, kw_only=True)
class DeleteWebhook(Command):
    TYPE = "webhook.delete"
    hook_id: str


@dataclass(frozen=True, kw_only=True)
class RecordAttempt(Command):
    """One delivery attempt of event `event` to hook `hook_id` and what it settled: `outcome` `delivered`,
    `gave_up`, `skipped` (the event is done with), `failed` (to be retried), `disabled` (the receiver
    answered 410: the hook is switched off)."""

    TYPE = "webhook.attempt"
    hook_id: str
    event: int
    attempt: int
    outcome: str
    status: int = 0
    error: str = ""
    duration_ms: float = 0.0
    node: str = ""
    attempt_ts: float = 0.0
    first: float = 0.0  # when the first attempt of this event was made
    retry_at: float = 0.0  # with `failed`: when the next attempt is due


@dataclass(frozen=True, kw_only=True)
class WebhookChanged(Event):
    TYPE = "webhook.changed"
    hook_id: str
    value: dict | None


@apply.register
def _(e: WebhookChanged, s: State) -> State:
    put_record(s.webhooks, e.hook_id, e.value)
    return s


@decide.register
def _(c: SetWebhook, s: State) -> Decision:
    if not HOOK_ID.fullmatch(c.hook_id):
        raise bad_request("Parameter verification failed", {"id": "value does not look like a valid webhook id"})
    hook = s.webhooks.get(c.hook_id)
    if c.create and hook is not None:
        raise conflict(f"webhook '{c.hook_id}' already exists")
    if not c.create and hook is None:
        raise not_found(f"webhook '{c.hook_id}' does not exist")
    if c.create:
        hook = {"id": c.hook_id, "name": "", "url": "", "events": [], "enabled": 1, "owner": c.user,
                "secret": "", "created": c.ts, "cursor": c.cursor, "pending": None, "deliveries": []}
    hook = dict(hook)
    for key, value in (("name", c.name), ("url", c.url), ("events", c.events), ("secret", c.sealed_secret)):
        if value is not None:
            hook[key] = list(value) if key == "events" else value
    if c.enabled is not None:
        hook["enabled"] = int(c.enabled)
    return [WebhookChanged(hook_id=c.hook_id, value=hook)], {"id": c.hook_id}


@decide.register
def _(c: DeleteWebhook, s: State) -> Decision:
    if c.hook_id not in s.webhooks:
        raise not_found(f"webhook '{c.hook_id}' does not exist")
    return [WebhookChanged(hook_id=c.hook_id, value=None)], {}


@decide.register
def _(c: RecordAttempt, s: State) -> Decision:
    hook = s.webhooks.get(c.hook_id)
    if hook is None:
        raise not_found(f"webhook '{c.hook_id}' does not exist")
    if c.outcome not in OUTCOMES:
        raise bad_request(f"unknown outcome '{c.outcome}'")
    if c.event <= hook["cursor"]:
        raise conflict(f"event {c.event} is already done with for webhook '{c.hook_id}'")  # a stale deliverer
    hook = dict(hook)
    record = {"event": c.event, "attempt": c.attempt, "status": c.status, "error": c.error,
              "duration_ms": c.duration_ms, "ts": c.attempt_ts, "node": c.node, "outcome": c.outcome}
    hook["deliveries"] = [*hook["deliveries"], record][-KEEP:]
    if c.outcome == "failed":
        hook["pending"] = {"event": c.event, "attempt": c.attempt, "first": c.first or c.attempt_ts,
                           "last": c.attempt_ts, "retry_at": c.retry_at}
    else:
        hook["cursor"], hook["pending"] = c.event, None
    if c.outcome == "disabled":
        hook["enabled"] = 0
    return [WebhookChanged(hook_id=c.hook_id, value=hook)], {}
