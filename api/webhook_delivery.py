"""Webhook delivery: the leader sends each hook its events, one at a time, in log order, signed.

The payload is the spec's (`id` = `evt-<event id>`, `timestamp`, `type`, `data`), POSTed as JSON with
- `X-Webhook-Timestamp: <unix seconds>` and `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret,
  "{timestamp}.{body}")>` (the spec's scheme), and
- the Standard Webhooks headers `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
  HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>` (https://www.standardwebhooks.com; libraries take
  the secret as `whsec_` + base64 of its UTF-8 bytes).

A 2xx answer delivers; 410 Gone disables the hook; anything else (or no answer within `TIMEOUT`) is
retried with exponential backoff and jitter (`BACKOFF_BASE` doubling up to `BACKOFF_CAP`) for
`RETRY_WINDOW` seconds, then given up. Redirects are not followed. Every attempt and its outcome are
committed to the log (engine/webhooks.py), so a new leader resumes exactly where the old one stood:
at least once, never skipping an event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time

import httpx
import structlog
import trio

from api.native.events import audit_path
from api.services.webhooks import unseal
from engine import webhooks as wh
from engine.errors import Rejection
from engine.hub import PublicEvent, TooOld
from engine.public_events import type_matches
from engine.roles import privileges_on

TIMEOUT = 10.0  # s per attempt
BACKOFF_BASE = 1.0  # s before the second attempt
BACKOFF_CAP = 300.0
RETRY_WINDOW = 3600.0  # s from the first attempt, then the event is given up
SCAN = 500
log = structlog.get_logger("gpve.webhooks")


def backoff(attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential, capped, jittered 50-100%."""
    return min(BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_CAP) * rng.uniform(0.5, 1.0)


def payload(event: PublicEvent) -> bytes:
    body = event.to_dict()
    return json.dumps({**body, "id": f"evt-{event.id}"}, separators=(",", ":")).encode()


def signed_headers(secret: str, msg_id: str, ts: int, body: bytes) -> dict[str, str]:
    key = secret.encode()
    spec = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    standard = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return {"Content-Type": "application/json", "User-Agent": "gpve-webhooks/1",
            "X-Webhook-Timestamp": str(ts), "X-Webhook-Signature": f"sha256={spec}",
            "webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": f"v1,{standard}"}


class WebhookDeliverer:
    def __init__(self, node) -> None:
        self.node = node
        self.rng = random.Random()
        self.scanned: dict[str, int] = {}  # hook -> event id scanned up to with nothing to send (this run)
        self.due: dict[str, float] = {}
        self.busy: set[str] = set()  # hooks with an attempt under way

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Runs for the node's life; delivers only while this node leads the log. Each hook's attempt is its own
        task, so a slow receiver holds back only its own hook."""
        task_status.started()
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as http, \
                trio.open_nursery() as nursery:
            while True:
                changed = self.node.state_changed()
                wait = 5.0
                if self.node.is_leader():
                    wait = self.round(nursery, http)
                with trio.move_on_after(wait):
                    await changed.wait()

    def round(self, nursery: trio.Nursery, http: httpx.AsyncClient) -> float:
        """Start an attempt for each enabled hook that is due and idle. Returns seconds until the next due retry."""
        with self.node.read() as s:
            hooks = [dict(h) for _, h in sorted(s.webhooks.items()) if h["enabled"]]
        now = time.time()
        for hook in hooks:
            if hook["id"] not in self.busy and self.due.get(hook["id"], 0.0) <= now:
                self.busy.add(hook["id"])
                nursery.start_soon(self._attempt, http, hook)
        waits = [t - time.time() for t in self.due.values() if t > time.time()]
        return max(0.05, min(waits, default=5.0))

    async def _attempt(self, http: httpx.AsyncClient, hook: dict) -> None:
        try:
            await self.step(http, hook)
        except Exception:  # a fault here must not stop the node: log it, try again later
            log.exception("webhook delivery failed", hook=hook["id"])
            self.due[hook["id"]] = time.time() + 5.0
        finally:
            self.busy.discard(hook["id"])
            self.node.wake_waiters()  # look again: this hook may have more to send

    def _next(self, hook: dict) -> tuple[PublicEvent | None, int]:
        """The event to send next and its attempt number; (None, 0) when there is none."""
        pending = hook["pending"]
        start = max(hook["cursor"], self.scanned.get(hook["id"], 0))
        if pending:
            start = pending["event"] - 1
        while True:
            events = self.node.hub.read(start, SCAN)
            if not events:
                self.scanned[hook["id"]] = start
                return None, 0
            with self.node.read() as s:
                for event in events:
                    if event.id <= hook["cursor"]:
                        continue
                    if pending and event.id == pending["event"]:
                        return event, pending["attempt"] + 1
                    if type_matches(hook["events"], event.type) and \
                            audit_path(event)[0] in privileges_on(s, hook["owner"], audit_path(event)[1]):
                        return event, 1
            start = events[-1].id

    async def step(self, http: httpx.AsyncClient, hook: dict) -> None:
        try:
            event, attempt = self._next(hook)
        except TooOld as exc:
            await self._record(hook, exc.oldest, 0, "skipped", error=str(exc))
            return
        if event is None:
            return
        pending = hook["pending"]
        if pending and time.time() < pending["retry_at"]:
            self.due[hook["id"]] = pending["retry_at"]
            return
        first = pending["first"] if pending else time.time()
        msg_id, ts, body = f"evt-{event.id}", int(time.time()), payload(event)
        headers = signed_headers(unseal(self.node.raft_key, hook["secret"]), msg_id, ts, body)
        started = time.perf_counter()
        status, error = 0, ""
        try:
            response = await http.post(hook["url"], content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        duration = round((time.perf_counter() - started) * 1000, 1)
        outcome = "delivered" if 200 <= status < 300 else "disabled" if status == 410 else \
            "gave_up" if time.time() - first > RETRY_WINDOW else "failed"
        log.info("webhook attempt", hook=hook["id"], event_id=event.id, attempt=attempt, status=status,
                 outcome=outcome, ms=duration)
        retry_at = time.time() + backoff(attempt, self.rng) if outcome == "failed" else 0.0
        self.due[hook["id"]] = retry_at
        await self._record(hook, event.id, attempt, outcome, status=status, error=error, duration_ms=duration,
                           first=first, retry_at=retry_at)

    async def _record(self, hook: dict, event: int, attempt: int, outcome: str, **fields) -> None:
        try:
            await self.node.submit(wh.RecordAttempt(
                request_id=self.node.new_request_id(), ts=time.time(), user="root@pam", hook_id=hook["id"],
                event=event, attempt=attempt, outcome=outcome, node=self.node.name, attempt_ts=time.time(),
                **fields))
        except Rejection as exc:  # no quorum, or another leader recorded it first: the next round sees
            log.info("webhook attempt not recorded", hook=hook["id"], event_id=event, error=exc.message)
