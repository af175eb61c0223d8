"""ClusterService (REST: /cluster/status, /cluster/config/join, DELETE /cluster/config/nodes/{node})."""

from __future__ import annotations

from api.rpc.core import Call, Runner, unary
from api.rpc.pb import cluster_pb2, cluster_pb2_grpc


def node_messages(rows: list[dict]) -> list[cluster_pb2.NodeStatus]:
    return [cluster_pb2.NodeStatus(name=r["name"], node_id=int(r["nodeid"]), ip=r["ip"], online=bool(r["online"]),
                                   local=bool(r["local"])) for r in rows if r["type"] == "node"]


class ClusterService(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @unary("GET", "/cluster/status")
    async def Status(self, call: Call, request: cluster_pb2.StatusRequest) -> cluster_pb2.ClusterStatus:
        rows = await call.rest("GET", "/cluster/status", {})
        cluster = next(r for r in rows if r["type"] == "cluster")
        return cluster_pb2.ClusterStatus(name=cluster["name"], version=int(cluster["version"]),
                                         quorate=bool(cluster["quorate"]), nodes=node_messages(rows))

    @unary("GET", "/cluster/status")
    async def ListNodes(self, call: Call, request: cluster_pb2.ListNodesRequest) -> cluster_pb2.ListNodesResponse:
        return cluster_pb2.ListNodesResponse(nodes=node_messages(await call.rest("GET", "/cluster/status", {})))

    @unary("POST", "/cluster/config/join")
    async def Join(self, call: Call, request: cluster_pb2.JoinRequest) -> cluster_pb2.JoinResponse:
        call.fields.update(hostname="hostname", password="password", fingerprint="fingerprint")
        message = await call.rest("POST", "/cluster/config/join", {
            "hostname": request.hostname, "password": request.password, "fingerprint": request.fingerprint})
        return cluster_pb2.JoinResponse(message=message)

    @unary("DELETE", "/cluster/config/nodes/{node}")
    async def Leave(self, call: Call, request: cluster_pb2.LeaveRequest) -> cluster_pb2.LeaveResponse:
        call.fields.update(node="node")
        await call.rest("DELETE", "/cluster/config/nodes/{node}", {"node": request.node})
        return cluster_pb2.LeaveResponse()
