"""The HTTP application: routes every /api2/json and /v1 request through its declaration.

Order per request: find the endpoint, authenticate (ticket cookie or header; CSRF on writes),
validate parameters, check the privilege, run the handler, shape `{"data": ...}`. Errors come out
in the spec's format with the message as the HTTP reason phrase, as Proxmox does.

The API's requests are served straight over ASGI (api/http.py); Quart serves the WebSockets (events,
consoles), the console pages and the API explorer.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import httpx
import structlog
from quart import Response, request, send_from_directory, websocket
from quart_trio import QuartTrio
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api import console_page
from api.bodies import PARAMS_BODY_LIMIT, merge, parse_body, parse_form, too_large
from api.console_ws import serve as console_stream
from api.context import Ctx, Reply, Runtime
from api.errors import ApiError, reason_phrase
from api.explorer import EXPLORER_PAGE
from api.forward import forward, target_node
from api.gate import Credentials, Gate, RateLimited, refusal
from api.http import Answer, Call, Receive, Send
from api.metrics import RequestMetrics
from api.native.events_ws import serve as events_stream
from api.pinning import member_client
from api.ratelimit import RateLimiter, Verdict
from api.schema import Endpoint, ParamErrors, Registry
from engine.errors import Rejection
from engine.jsontext import dump_json
from engine.node import Node

JSON_TYPE = "application/json;charset=UTF-8"
REASON_HEADER = "x-gpve-reason"
REPLAY_WAIT = 10.0  # s a request is held while a restarted node replays its committed log
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})  # what the API answers; any other method: 501
MAX_BODY = 64 * 1024 * 1024  # bytes of a body read at all (a larger one is cut off); streamed bodies have their own
log = structlog.get_logger("gpve.api")


async def drain(body, limit: int) -> None:
    """Read what is left of a refused request's body (at most `limit` bytes), so that a client still sending
    hears the refusal instead of a reset connection, and the connection stays usable for its next request
    (hypercorn drops a keep-alive connection whose request body was left unread)."""
    size = 0
    try:
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                return
    except (ApiError, RequestEntityTooLarge):
        return


def json_response(status: int, body: dict, reason: str | None = None, headers: dict | None = None) -> Answer:
    answer = Answer(status, dump_json(body), JSON_TYPE, dict(headers or {}))
    if reason:
        answer.headers[REASON_HEADER] = reason_phrase(reason)
    return answer


def error_response(err: Rejection, native: bool = False) -> Answer:
    body: dict[str, Any] = {"message": err.message, "status": err.status}
    if not native:
        body["data"] = None
    if err.errors:
        body["errors"] = err.errors
    return json_response(err.status, body, reason=err.message)


def quart_response(answer: Answer) -> Response:
    """An Answer as Quart's Response (for what Quart serves: WebSocket refusals, pages)."""
    return Response(answer.body, status=answer.status, content_type=answer.content_type, headers=answer.headers)


async def _read_body(call: Call, limit: int) -> bytes:
    """The whole body, at most `limit` bytes. A larger one is read to its end all the same (up to MAX_BODY), so
    that the client, still sending, hears the 413."""
    chunks, size = [], 0
    try:
        async for chunk in call.body:
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
    except RequestEntityTooLarge:
        raise too_large(limit) from None
    if size > limit:
        raise too_large(limit)
    return b"".join(chunks)


async def _raw_params(call: Call, endpoint: Endpoint, path_params: dict[str, str]) -> dict[str, Any]:
    """Parameters from the path, the query string and (for writes) the body; see api/bodies.py."""
    query = parse_form(call.query_string, "query string")
    body: dict[str, Any] = {}
    if call.method in ("POST", "PUT", "DELETE") and not endpoint.raw_body:
        body = parse_body(call.mimetype, call.mimetype_params, await _read_body(call, PARAMS_BODY_LIMIT))
    return merge(path_params, query, body)


class Api:
    def __init__(self, node: Node, registry: Registry, root_password: str, runtime: Runtime,
                 limiter: RateLimiter) -> None:
        self.node = node
        self.runtime = runtime
        self.gate = Gate(node, limiter, root_password)
        self.http = member_client(node, httpx.Timeout(60.0, connect=3.0))  # verified: api/pinning.py
        self.registry = registry

    async def serve(self, scope: dict, receive: Receive, send: Send, path: str, native: bool) -> None:
        """One API request over ASGI: `path` below `/api2/json/` (`native`: below `/v1/`)."""
        call = Call(scope, receive, MAX_BODY)
        try:
            answer = await self.handle(call, path, native)
        except Exception:  # a bug outside the handler's own guard still answers in the API's format
            log.exception("request failed", path=path)
            answer = error_response(Rejection(500, "internal error"), native)
        if answer.status >= 400 and not call.body.done:
            await drain(call.body, MAX_BODY)  # what is left of a refused request's body, forwarded or not
        await answer.send(send)

    async def forward(self, call: Call, member: dict, path: str, request_id: str) -> Answer:
        """Hand the request to the node it is about (the body of an endpoint that reads it itself as a stream);
        502 if that node cannot be reached."""
        endpoint, _, _ = self.registry.resolve(call.method, "/" + path.strip("/"), False)
        try:
            if endpoint is not None and endpoint.raw_body:
                call.body.limit = None
                body = call.body
            else:
                body = await _read_body(call, PARAMS_BODY_LIMIT)
            status, reason, headers, body = await forward(
                self.http, member, call.method, path, call.query_string, call.headers, body, self.node.name)
        except ApiError as exc:
            answer = error_response(exc)
            answer.headers["X-Request-ID"] = request_id
            return answer
        except httpx.HTTPError as exc:
            log.info("forward failed", target=member["name"], error=str(exc))
            return error_response(Rejection(502, f"node '{member['name']}' is unreachable - {type(exc).__name__}"))
        answer = Answer(status, body, None, headers)
        answer.headers[REASON_HEADER] = reason_phrase(reason)
        answer.headers["X-Request-ID"] = request_id
        log.info("request forwarded", method=call.method, path="/" + path, target=member["name"], status=status)
        structlog.contextvars.clear_contextvars()
        return answer

    @staticmethod
    def credentials(call: Call) -> Credentials:
        return Credentials(call.cookies.get("PVEAuthCookie"), call.headers.get("Authorization", ""),
                           call.headers.get("CSRFPreventionToken", ""))

    def admit_websocket(self, endpoint: Endpoint | None, path: str, raw: dict[str, Any]) -> tuple[Ctx, dict]:
        """A WebSocket upgrade admitted as `handle` admits a request: authenticated by ticket cookie or
        `Authorization` header (no CSRF token: browsers cannot set headers on an upgrade, as Proxmox's
        vncwebsocket), counted against the caller's rate, validated from the endpoint's declaration, authorized;
        the caller's Ctx and the parameters. Raises Rejection: 404 (no endpoint), 401, 403, 400, 429."""
        now = time.time()
        try:
            if endpoint is None:
                raise Rejection(404, f"No 'GET' handler for '{path}'")
            creds = Credentials(websocket.cookies.get("PVEAuthCookie"), websocket.headers.get("Authorization", ""), "")
            user = self.gate.authenticate(creds, False, now)
            self.gate.count(endpoint.rate_class, user, now)
            params = endpoint.validate(raw)
            self.gate.authorize(endpoint.permission, user, params)
        except (RateLimited, ParamErrors) as exc:
            raise refusal(exc) from None
        return Ctx(self.node, user, self.node.new_request_id(), websocket.remote_addr or "", now,
                   rt=self.runtime), params

    @staticmethod
    def rate_key(call: Call, endpoint: Endpoint, user: str, raw: dict[str, Any]) -> str:
        """Logins count per source address and user name; everything else per user (or source)."""
        if endpoint.rate_class == "auth":
            return f"{call.remote_addr}|{str(raw.get('username', ''))[:64]}"
        return user or call.remote_addr

    async def handle(self, call: Call, path: str, native: bool = False) -> Answer:
        request_id = call.headers.get("X-Request-ID", "")
        client_id = REQUEST_ID.fullmatch(request_id) is not None
        if not client_id:
            request_id = self.node.new_request_id()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        verdict: Verdict | None = None
        if call.method not in METHODS:  # as pve-http-server (AnyEvent.pm: only these are known)
            return error_response(Rejection(501, f"method '{call.method}' not available"), native)
        if not self.node.caught_up() and not await self.node.wait_caught_up(REPLAY_WAIT):
            return error_response(Rejection(503, "node not ready - still replaying its log, try again"), native)
        if not native:
            with self.node.read() as s:
                members = {n: dict(m) for n, m in s.nodes.items()}
            member = target_node(path, call.headers, self.node.name, members)
            if member is not None:
                return await self.forward(call, member, path, request_id)
        endpoint, path_params, path_known = self.registry.resolve(call.method, "/" + path.strip("/"), native)
        try:
            if endpoint is None:
                if path_known:
                    raise ApiError(405, f"Method '{call.method} /{path}' not implemented")
                raise ApiError(404, f"No '{call.method}' handler for '/{path}'")
            now = time.time()
            user = "" if endpoint.permission.check == "public" else \
                self.gate.authenticate(self.credentials(call), endpoint.writes, now)
            if endpoint.unsupported:  # a feature gpve lacks, on a member: an unknown node is named first
                self.gate.check_node(endpoint, path_params)
                raise ApiError(501, f"Method '{call.method} /{path.strip('/')}' not implemented - "
                                    f"gpve has no {endpoint.absent}")
            if endpoint.raw_body:
                call.body.limit = None  # an upload: its handler holds it to the storage's limit
            raw = await _raw_params(call, endpoint, path_params)
            verdict = self.gate.count(endpoint.rate_class, self.rate_key(call, endpoint, user, raw), now)
            self.gate.check_node(endpoint, path_params)
            params = endpoint.validate(raw, partial=bool(endpoint.upload))
            self.gate.authorize(endpoint.permission, user, params)
            key = self.gate.request_key(request_id, call.method, endpoint.path, params) if client_id else request_id
            ctx = Ctx(self.node, user, key, call.remote_addr, now, self.gate.check_local_password,
                      self.runtime, call if endpoint.raw_body else None)
            result = await endpoint.handler(ctx, params)
            reply = result if isinstance(result, Reply) else Reply(result)
            if endpoint.paged:
                reply = page(call, reply, params, endpoint.default_limit)
            if reply.content_type:
                response = Answer(200, reply.data, reply.content_type, dict(reply.headers))
            else:
                data = reply.data if reply.encoded is None else reply.encoded  # kept rows' JSON is copied in
                body = data if native or endpoint.bare else {"data": data, **reply.extra}
                response = json_response(200, body, headers=reply.headers)
        except (RateLimited, ParamErrors, Rejection) as exc:
            verdict = exc.verdict if isinstance(exc, RateLimited) else verdict
            response = error_response(refusal(exc), native)
        except Exception:
            log.exception("handler failed", path=path)
            response = error_response(Rejection(500, "internal error"), native)
        if endpoint is not None and endpoint.rate_class == "auth" and verdict is not None and verdict.allowed \
                and response.status != 401:
            # only refused credentials count against the failed-login budget: not a login that worked, nor one
            # refused for another reason (a missing parameter, no quorum, a node not ready yet)
            self.gate.refund("auth", self.rate_key(call, endpoint, user, raw))
            verdict.remaining += 1
        for key, value in (verdict.headers() if verdict else {}).items():
            response.headers[key] = value
        elapsed = time.perf_counter() - started
        if self.runtime.request_metrics is not None:
            route = ("/v1" if native else "/api2/json") + (endpoint.path if endpoint is not None else "/<unmatched>")
            self.runtime.request_metrics.observe(route, call.method, response.status, elapsed)
        log.info("request", method=call.method, path="/" + path, status=response.status,
                 ms=round(elapsed * 1000, 2))
        structlog.contextvars.clear_contextvars()
        response.headers["X-Request-ID"] = request_id
        return response


def page(call: Call, reply: Reply, params: dict[str, Any], default_limit: int | None) -> Reply:
    """Slice a list by `start`/`limit` (unless the handler did) and add `X-Total-Count` and `Link`."""
    start, limit = params.get("start", 0), params.get("limit", default_limit)
    if "total" in reply.extra:
        total = reply.extra["total"]
    else:
        rows = list(reply.data or [])
        total = len(rows)
        reply.data = rows[start:start + limit] if limit else rows[start:]
        if reply.encoded is not None:
            reply.encoded = reply.encoded[start:start + limit] if limit else reply.encoded[start:]
    reply.headers["X-Total-Count"] = str(total)
    if limit:
        links = []
        if start + limit < total:
            links.append(f'<{_page_url(call, start + limit, limit)}>; rel="next"')
        links.append(f'<{_page_url(call, max(0, (total - 1) // limit * limit), limit)}>; rel="last"')
        reply.headers["Link"] = ", ".join(links)
    return reply


def _page_url(call: Call, start: int, limit: int) -> str:
    args: dict[str, str] = {}
    for k, v in parse_qsl(call.query_string.decode("utf-8", "replace"), keep_blank_values=True):
        if k not in ("start", "limit"):
            args.setdefault(k, v)
    args.update(start=str(start), limit=str(limit))
    return quote(call.path) + "?" + urlencode(args)  # both escaped: never a control character in a header


class App:
    """The node's ASGI application: the API's requests (`/api2/json/…`, `/v1/…` over HTTP) go to `api`, the rest
    (WebSockets, console pages, the API explorer, anything unknown) to Quart."""

    def __init__(self, api: Api, quart: QuartTrio) -> None:
        self.api = api
        self.quart = quart

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path.startswith("/api2/json/") or path == "/api2/json":
                return await self.api.serve(scope, receive, send, path[len("/api2/json/"):], native=False)
            if path.startswith("/v1/") and len(path) > len("/v1/"):
                return await self.api.serve(scope, receive, send, path[len("/v1/"):], native=True)
        await self.quart(scope, receive, send)


def create_app(node: Node, registry: Registry, root_password: str, runtime: Runtime | None = None,
               limiter: RateLimiter | None = None) -> App:
    app = QuartTrio("gpve", root_path=os.path.dirname(os.path.abspath(__file__)))  # not the gpve.v1 stubs' package
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    runtime = runtime or Runtime()
    runtime.request_metrics = runtime.request_metrics or RequestMetrics(node.name)
    api = Api(node, registry, root_password, runtime, limiter or RateLimiter(None))

    @app.websocket("/v1/events/ws")
    async def events_ws() -> Response | None:
        refused = await events_stream(api)
        return quart_response(error_response(refused, native=True)) if refused else None

    @app.websocket("/api2/json/nodes/<node>/qemu/<vmid>/vncwebsocket")
    async def console_ws(node: str, vmid: str) -> Response | None:
        refused = await console_stream(api, node, vmid)
        return quart_response(error_response(refused)) if refused else None

    @app.route("/", methods=["GET"])
    async def index() -> Response:
        """Proxmox's console page (`?console=kvm&novnc=1&vmid=N&node=NODE`, or `xtermjs=1`); nothing else here."""
        if "console" not in request.args:
            return quart_response(error_response(Rejection(404, "Not Found")))
        try:
            return console_page.page(api)
        except Rejection as exc:
            return quart_response(error_response(exc))

    @app.route("/<any(novnc, xtermjs, 'xtermjs-fit'):prefix>/<path:name>", methods=["GET"])
    async def console_asset(prefix: str, name: str) -> Response:
        try:
            return await console_page.asset(prefix, name)
        except Rejection as exc:
            return quart_response(error_response(exc))

    @app.route("/api-explorer/", methods=["GET"])
    async def api_explorer() -> Response:
        return Response(EXPLORER_PAGE, content_type="text/html; charset=utf-8")

    @app.route("/api-explorer/<path:asset>", methods=["GET"])
    async def api_explorer_asset(asset: str) -> Response:
        return await send_from_directory(swagger_ui_path, asset)

    @app.errorhandler(404)
    async def not_found(_exc) -> Response:
        return quart_response(error_response(Rejection(404, "Not Found")))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        """Whatever Quart itself refuses (or fails at) answers in the spec's JSON format too, never HTML."""
        return quart_response(error_response(Rejection(exc.code or 500, exc.name)))

    return App(api, app)
