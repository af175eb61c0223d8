"""Requests for another node (`/nodes/{other}/...`) go to that node, with the caller's credentials.

Tickets are signed with the cluster's key and tokens live in the log, so the other node checks the
caller itself; the answer comes back as it was sent, reason phrase included. A name that is no member
is answered here, once for every interface (`require_member`, through `Gate.check_node`).
"""

from __future__ import annotations

import re

import httpx

from engine.errors import not_found

FORWARDED = "X-GPVE-Forwarded-From"
NODE_PATH = re.compile(r"nodes/([^/]+)/.+")
PASS_HEADERS = ("cookie", "csrfpreventiontoken", "authorization", "content-type", "x-request-id")
KEEP_HEADERS = ("content-type", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after",
                "x-total-count", "link", "x-request-id", "cache-control")


def target_node(path: str, headers, local: str, members: dict[str, dict]) -> dict | None:
    """The member this request belongs to, if it is another one (and the request was not forwarded yet)."""
    if headers.get(FORWARDED):
        return None
    m = NODE_PATH.fullmatch(path.strip("/"))
    if not m or m.group(1) == local or m.group(1) not in members:
        return None
    return members[m.group(1)]


def require_member(members, name: str) -> None:
    """A `/nodes/{node}/…` request (REST or gRPC) names a cluster member, else 404 `no such cluster node 'X'`.

    Proxmox's wording (`PVE::Cluster::remote_node_ip`, when pveproxy resolves `proxyto` before the handler checks
    the parameters); Proxmox answers it with 500, gpve with 404 as for every other unknown name. A member that is
    down is a member: its requests go on to the forwarding, which answers 502.
    """
    if name not in members:
        raise not_found(f"no such cluster node '{name}'")


async def forward(client: httpx.AsyncClient, member: dict, method: str, path: str, query: bytes, headers,
                  body: bytes, local: str) -> tuple[int, str, dict[str, str], bytes]:
    url = f"https://{member['ip']}:{member['api_port']}/api2/json/{path.strip('/')}"
    if query:
        url += "?" + query.decode()
    send = {k: v for k, v in headers.items() if k.lower() in PASS_HEADERS}
    send[FORWARDED] = local
    response = await client.request(method, url, headers=send, content=body)
    keep = {k: v for k, v in response.headers.items() if k.lower() in KEEP_HEADERS}
    return response.status_code, response.reason_phrase, keep, response.content
