"""How every RPC runs: in the node's trio loop, through the REST declarations it mirrors.

Each RPC names its REST twin (`@unary("POST", "/nodes/{node}/qemu")`): the twin's declaration gives the rate
class and whether a ticket needs its CSRF token, as for REST. Per call, `RpcCore.begin` waits for a restarted
node's replay, authenticates the metadata through the shared gate (`authorization: PVEAPIToken=…` or
`PVEAuthCookie=…`, or a `cookie: PVEAuthCookie=…`, with `csrfpreventiontoken` for ticket writes) and counts
the rate class. The RPC's body then calls REST endpoints by their declaration (`Call.rest`): parameters
validated by the declaration, its permission checked by the gate, its handler run, so no rule exists twice.
Parameter errors are renamed to the request's field paths (`Call.fields`).

The asyncio side (`Runner`, used by the decorated servicer methods) only crosses to trio (api/rpc/portal.py)
and maps errors to statuses (api/rpc/errors.py).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from api.context import Ctx, Reply, Runtime
from api.gate import Credentials, Gate
from api.ratelimit import Verdict
from api.rpc.errors import status_of
from api.rpc.portal import TrioPortal
from api.schema import Endpoint, ParamErrors, Registry
from engine.errors import Rejection
from engine.node import Node

REPLAY_WAIT = 10.0  # s a call is held while a restarted node replays its committed log (as REST)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
log = structlog.get_logger("gpve.grpc")
Twin = tuple[str, str]  # (HTTP method, REST path template)


def credentials(metadata: dict[str, str]) -> Credentials:
    """The gate's credentials from gRPC metadata (keys are lower case)."""
    cookie = None
    for part in metadata.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "PVEAuthCookie":
            cookie = value
    return Credentials(cookie, metadata.get("authorization", ""), metadata.get("csrfpreventiontoken", ""))


@dataclass
class Call:
    """One RPC on the trio side: who calls, and the REST endpoints its body runs through."""

    core: RpcCore
    user: str
    request_id: str
    peer: str
    creds: Credentials
    twin: Twin
    fields: dict[str, str] = field(default_factory=dict)  # REST parameter -> request field, for errors

    @property
    def node(self) -> Node:
        return self.core.node

    def ctx(self) -> Ctx:
        core = self.core
        return Ctx(core.node, self.user, self.request_id, self.peer, time.time(), core.gate.check_local_password,
                   core.runtime)

    def check(self, method: str, path: str, params: dict[str, Any]) -> tuple[Endpoint, dict[str, Any]]:
        """Validate `params` by the REST declaration and check its permission; the validated values."""
        endpoint = self.core.endpoint(method, path)
        self.core.gate.check_node(endpoint, params)
        try:
            values = endpoint.validate({k: v for k, v in params.items() if v is not None})
        except ParamErrors as exc:
            raise ParamErrors(self._renamed(exc.errors)) from None
        self.core.gate.authorize(endpoint.permission, self.user, values)
        return endpoint, values

    async def rest(self, method: str, path: str, params: dict[str, Any]) -> Any:
        """What the REST endpoint `method path` answers to `params` (None values are left out): its `data`."""
        endpoint, values = self.check(method, path, params)
        try:
            result = await endpoint.handler(self.ctx(), values)
        except ParamErrors as exc:
            raise ParamErrors(self._renamed(exc.errors)) from None
        except Rejection as exc:
            if exc.errors:
                raise Rejection(exc.status, exc.message, self._renamed(exc.errors)) from None
            raise
        return result.data if isinstance(result, Reply) else result

    def _renamed(self, errors: dict[str, str]) -> dict[str, str]:
        return {self.fields.get(k, k): v for k, v in errors.items()}

    def owner(self, vmid: int) -> str:
        """The node a guest belongs to; the node answering for a VMID it does not know (its REST call then
        answers 404 with Proxmox's message)."""
        with self.node.read() as s:
            guest = s.guests.get(vmid)
        return guest["node"] if guest is not None else self.node.name


class RpcCore:
    """The trio side of the gRPC server: authentication, rate limits and the REST declarations."""

    def __init__(self, node: Node, gate: Gate, runtime: Runtime, registry: Registry) -> None:
        self.node = node
        self.gate = gate
        self.runtime = runtime
        # REST twins by method and path; native ones under their full path (`/v1/vclusters`)
        self.endpoints = {(e.method, ("/v1" if e.native else "") + e.path): e for e in registry.endpoints}

    def endpoint(self, method: str, path: str) -> Endpoint:
        return self.endpoints[(method, path)]

    def check_twins(self, servicers: list[object]) -> None:
        """Every RPC's twin must be a declared REST endpoint (checked once, at start)."""
        for servicer in servicers:
            for name in dir(type(servicer)):
                twin = getattr(getattr(type(servicer), name), "twin", None)
                if twin is not None and twin not in self.endpoints:
                    raise LookupError(f"{type(servicer).__name__}.{name}: no REST endpoint {twin[0]} {twin[1]}")

    async def begin(self, metadata: dict[str, str], peer: str, twin: Twin) -> tuple[Call, Verdict | None]:
        """Authenticate and count one RPC; raises 401, 429, 503 (still replaying)."""
        node = self.node
        if not node.caught_up() and not await node.wait_caught_up(REPLAY_WAIT):
            raise Rejection(503, "node not ready - still replaying its log, try again")
        request_id = metadata.get("x-request-id", "")
        if not REQUEST_ID.fullmatch(request_id):
            request_id = node.new_request_id()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        endpoint = self.endpoint(*twin)
        creds = credentials(metadata)
        now = time.time()
        user = "" if endpoint.permission.check == "public" else \
            self.gate.authenticate(creds, endpoint.writes, now)
        verdict = self.gate.count(endpoint.rate_class, user or peer, now)
        return Call(self, user, request_id, peer, creds, twin), verdict

    def reauthenticate(self, call: Call) -> None:
        """A long stream's caller is checked again now and then: a revoked token or expired ticket ends it."""
        endpoint = self.endpoint(*call.twin)
        if endpoint.permission.check != "public":
            self.gate.authenticate(call.creds, False, time.time())

    async def unary(self, metadata: dict[str, str], peer: str, twin: Twin, fn: Callable, request: Any) -> tuple:
        call, verdict = await self.begin(metadata, peer, twin)
        return await fn(call, request), rate_trailers(verdict)

    async def open_stream(self, metadata: dict[str, str], peer: str, twin: Twin, fn: Callable,
                          request: Any) -> tuple:
        call, _verdict = await self.begin(metadata, peer, twin)
        messages, cursor, done = await fn(call, request)
        return call, messages, cursor, done

    async def step(self, call: Call, fn: Callable, cursor: Any) -> tuple:
        self.reauthenticate(call)
        return await fn(call, cursor)


def rate_trailers(verdict: Verdict | None) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), v) for k, v in verdict.headers().items()) if verdict else ()


class Runner:
    """The asyncio side of every RPC: cross to trio, answer, or end with the mapped status."""

    def __init__(self, portal: TrioPortal, core: RpcCore) -> None:
        self.portal = portal
        self.core = core

    async def unary(self, name: str, context, twin: Twin, fn: Callable, request: Any) -> Any:
        started = time.perf_counter()
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            response, trailers = await self.portal.run(self.core.unary, metadata, context.peer(), twin, fn, request)
        except Exception as exc:
            await self._abort(name, context, exc, started)
        context.set_trailing_metadata(trailers)
        log.info("rpc", method=name, code="OK", ms=round((time.perf_counter() - started) * 1000, 2))
        return response

    async def stream(self, name: str, context, twin: Twin, open_fn: Callable, step_fn: Callable, request: Any):
        started = time.perf_counter()
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            call, messages, cursor, done = await self.portal.run(self.core.open_stream, metadata, context.peer(),
                                                                 twin, open_fn, request)
            while True:
                for message in messages:
                    yield message
                if done:
                    break
                messages, cursor, done = await self.portal.run(self.core.step, call, step_fn, cursor)
        except Exception as exc:
            await self._abort(name, context, exc, started)
        log.info("rpc", method=name, code="OK", ms=round((time.perf_counter() - started) * 1000, 2))

    async def _abort(self, name: str, context, exc: Exception, started: float) -> None:
        code, message, trailers = status_of(exc)
        if code.name == "INTERNAL":
            log.error("rpc failed", method=name, exc_info=exc)
        log.info("rpc", method=name, code=code.name, ms=round((time.perf_counter() - started) * 1000, 2))
        await context.abort(code, message, trailers)


def unary(method: str, path: str) -> Callable:
    """Declare a unary RPC mirroring REST `method path`; the decorated `async fn(self, call, request)` runs in
    trio and answers the response message."""
    def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable:
        async def rpc(self, request, context):
            return await self.runner.unary(fn.__name__, context, (method, path), functools.partial(fn, self),
                                           request)
        rpc.__name__, rpc.__doc__, rpc.twin = fn.__name__, fn.__doc__, (method, path)  # type: ignore[attr-defined]
        return rpc
    return wrap


def stream(method: str, path: str, step: Callable[[Call, Any], Awaitable[tuple]]) -> Callable:
    """Declare a server-streaming RPC mirroring REST `method path`. In trio, the decorated
    `async fn(self, call, request)` answers `(messages, cursor, done)`, then `step(call, cursor)` does, again
    and again, until `done` (or the client cancels); the caller is authenticated again before each step."""
    def wrap(fn: Callable[..., Awaitable[tuple]]) -> Callable:
        async def rpc(self, request, context):
            async for message in self.runner.stream(fn.__name__, context, (method, path),
                                                    functools.partial(fn, self), step, request):
                yield message
        rpc.__name__, rpc.__doc__, rpc.twin = fn.__name__, fn.__doc__, (method, path)  # type: ignore[attr-defined]
        return rpc
    return wrap

