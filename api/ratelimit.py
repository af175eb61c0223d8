"""Rate limits per user or token (per source and user for failed logins), in fixed one-minute windows.

Each node counts on its own: a client spreading its requests over N nodes can make up to N times
the limit per minute (the documented tolerance); a client talking to one node gets exactly it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_LIMITS = {"auth": 10, "read": 1000, "write": 100, "bulk": 10}
WINDOW = 60.0


def parse_limits(text: str | None) -> dict[str, int] | None:
    """`auth=10,read=1000,write=100,bulk=10` (missing classes keep their default), or `off`."""
    if text is None:
        return dict(DEFAULT_LIMITS)
    if text.strip() == "off":
        return None
    limits = dict(DEFAULT_LIMITS)
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in limits or not value.strip().isdigit():
            raise ValueError(f"bad rate limit '{item}' (expected class=number with class in {sorted(limits)})")
        limits[name.strip()] = int(value)
    return limits


@dataclass
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # unix time the window ends
    retry_after: int

    def headers(self) -> dict[str, str]:
        out = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
               "X-RateLimit-Reset": str(self.reset)}
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


class RateLimiter:
    def __init__(self, limits: dict[str, int] | None) -> None:
        self.limits = limits
        self.windows: dict[tuple[str, str], list[float]] = {}  # key -> [window start, count]

    def check(self, klass: str, key: str, now: float) -> Verdict | None:
        """Count one request and say whether it may pass."""
        if self.limits is None:
            return None
        limit = self.limits[klass]
        window = self.windows.get((klass, key))
        if window is None or now >= window[0] + WINDOW:
            window = [now, 0]
            self.windows[(klass, key)] = window
            if len(self.windows) > 100_000:
                self._forget(now)
        reset = window[0] + WINDOW
        allowed = window[1] < limit
        if allowed:
            window[1] += 1
        return Verdict(allowed, limit, max(0, limit - int(window[1])), math.ceil(reset),
                       max(1, math.ceil(reset - now)))

    def refund(self, klass: str, key: str) -> None:
        """Give one counted request back (a login that succeeded)."""
        window = self.windows.get((klass, key))
        if window is not None and window[1] > 0:
            window[1] -= 1

    def _forget(self, now: float) -> None:
        for key in [k for k, w in self.windows.items() if now >= w[0] + WINDOW]:
            del self.windows[key]
