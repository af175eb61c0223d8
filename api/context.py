"""What a handler gets besides its parameters: the node, the caller and the request's ids."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from api.views import Grants, views
from engine.node import Node

if TYPE_CHECKING:
    from api.http import Call


@dataclass
class Runtime:
    """The node's guest machinery: QEMU driver, storages, reconciler, sampler of live figures (None where not
    set up)."""

    driver: Any = None
    storages: dict = field(default_factory=dict)
    reconciler: Any = None
    sampler: Any = None  # hypervisor/sampler.py: the latest host and guest figures and the RRD store
    request_metrics: Any = None  # api/metrics.py RequestMetrics: the API's latency histogram
    peer_figures: Any = None  # api/native/figures.py: the other members' figures, for cluster-wide lists
    adopt_ca: Any = None  # async (ca_cert_pem, ca_key_pem): make the cluster's CA this node's (on join)
    spawn: Any = None  # (async fn of no arguments) -> None: run it in the node's nursery, past the request
    network: Any = None  # the node's network configuration (hypervisor/network.py NodeNetwork)
    consoles: Any = None  # hypervisor.console.ConsoleSessions: the node's console proxies


@dataclass
class Ctx:
    node: Node
    user: str
    request_id: str
    remote: str = ""
    now: float = field(default_factory=time.time)
    check_local_password: Callable[[str, str], bool] = lambda user, password: False
    rt: Runtime = field(default_factory=Runtime)
    request: Call | None = None  # the HTTP request, given to an endpoint that reads its body itself (raw_body)

    def can(self, privilege: str, path: str) -> bool:
        with self.node.read() as s:
            return privilege in views(self.node).grants(s, self.user).on(path)

    def grants(self) -> Grants:
        """The caller's privileges at the current state (api/views.py), for checking many paths at once."""
        with self.node.read() as s:
            return views(self.node).grants(s, self.user)

    def derived(self, step: str) -> Ctx:
        """The same caller for one step of a compound request: its own request id, derived from this one's, so a
        retried request repeats no step."""
        return dataclasses.replace(self, request_id=f"{self.request_id}/{step}")

    @property
    def command_id(self) -> str:
        """The id a write's command carries: a retry with the same X-Request-ID applies once."""
        return f"{self.user}/{self.request_id}"


@dataclass
class Reply:
    """A handler's answer when it needs more than `data`: extra top-level keys or headers."""

    data: Any
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None  # `data` is the body itself (bytes or text) of this type, not JSON
    encoded: list | None = None  # a list `data` as it is answered: each row, or its JSON made before (api/views.py)
