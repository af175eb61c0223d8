"""Calls from this node to another member's API, as root@pam with a ticket of the cluster's key."""

from __future__ import annotations

import json
import time

import httpx

from api.auth import make_csrf_token, make_ticket
from api.pinning import member_client
from engine.errors import Rejection


class PeerClient:
    def __init__(self, node) -> None:
        self.node = node
        self.http = member_client(node, httpx.Timeout(120.0, connect=5.0))  # verified: api/pinning.py

    def _headers(self) -> dict[str, str]:
        key, csrf = self.node.auth_secrets()
        now = time.time()
        return {"Cookie": f"PVEAuthCookie={make_ticket(key, 'root@pam', now)}",
                "CSRFPreventionToken": make_csrf_token(csrf, "root@pam", now)}

    def url(self, node_name: str, path: str) -> str:
        with self.node.read() as s:
            member = s.nodes.get(node_name)
        if member is None:
            raise Rejection(400, f"no such cluster node '{node_name}'")
        return f"https://{member['ip']}:{member['api_port']}{path}"

    def migration_target(self, node_name: str) -> RemoteMigrationTarget:
        return RemoteMigrationTarget(self, node_name)

    async def send_file(self, node_name: str, path: str, params: dict, file_path: str) -> dict:
        """PUT a file as the raw request body, streamed in chunks."""
        async def chunks():
            with open(file_path, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        headers = {"Content-Type": "application/octet-stream"}
        return await self.call(node_name, "PUT", path, params=params, content=chunks(), headers=headers)

    async def call(self, node_name: str, method: str, path: str, headers: dict | None = None, text: bool = False,
                   **kwargs):
        """`path` is absolute (`/v1/...`); answers the JSON body (`text`: the body as text), raises Rejection on an
        error answer."""
        try:
            response = await self.http.request(method, self.url(node_name, path),
                                               headers={**self._headers(), **(headers or {})}, **kwargs)
        except httpx.HTTPError as exc:
            raise Rejection(502, f"node '{node_name}' is unreachable - {type(exc).__name__}") from None
        if response.status_code != 200:
            raise Rejection(response.status_code, f"node '{node_name}': {response.reason_phrase}")
        return response.text if text else response.json()


class RemoteMigrationTarget:
    """`hypervisor.migration_target.MigrationTarget` of another member, through its `/v1/migration` API."""

    def __init__(self, peers: PeerClient, node_name: str) -> None:
        self.peers, self.node_name = peers, node_name

    async def incoming(self, vmid: int, volumes: list[dict]) -> dict:
        return await self.peers.call(self.node_name, "POST", f"/v1/migration/{vmid}/incoming",
                                     data={"volumes": json.dumps(volumes)})

    async def resume(self, vmid: int, exports: list[str]) -> None:
        await self.peers.call(self.node_name, "POST", f"/v1/migration/{vmid}/resume",
                              data={"exports": json.dumps(exports)})

    async def abort(self, vmid: int) -> None:
        await self.peers.call(self.node_name, "POST", f"/v1/migration/{vmid}/abort")

    async def receive_volume(self, vmid: int, volid: str, path: str) -> None:
        """Send the file at `path` (volume `volid` here) to be stored there under the same volume id."""
        await self.peers.send_file(self.node_name, f"/v1/migration/{vmid}/volume", {"volid": volid}, path)

    async def drop_volume(self, vmid: int, volid: str) -> None:
        await self.peers.call(self.node_name, "DELETE", f"/v1/migration/{vmid}/volume", params={"volid": volid})
