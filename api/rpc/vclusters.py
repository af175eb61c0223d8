"""VClusterService (REST: /v1/vclusters): each RPC runs the REST endpoint it mirrors (api/native/vclusters.py)."""

from __future__ import annotations

import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from api.rpc.core import Call, Runner, unary
from api.rpc.operations import operation
from api.rpc.pb import vcluster_pb2 as pb
from api.rpc.pb import vcluster_pb2_grpc
from engine.vclusters import memory_mib

STATES = {"provisioning": pb.VCLUSTER_STATE_PROVISIONING, "running": pb.VCLUSTER_STATE_RUNNING,
          "scaling": pb.VCLUSTER_STATE_SCALING, "deleting": pb.VCLUSTER_STATE_DELETING,
          "failed": pb.VCLUSTER_STATE_FAILED}
ISOLATIONS = {"namespace": pb.ISOLATION_NAMESPACE, "vm": pb.ISOLATION_VM}
ONE = "/v1/vclusters/{id}"
FIELDS = {"resources.cpu": "resources.cpu", "resources.memory": "resources.memory_mib", "node_selector.node": "node"}


def message(row: dict) -> pb.VCluster:
    """A VCluster from REST's answer."""
    created = datetime.datetime.strptime(row["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    memory = memory_mib(row["resources"]["memory"])
    return pb.VCluster(id=row["id"], name=row["name"], state=STATES[row["status"]], k8s_version=row["k8s_version"],
                       node=row["node"], isolation=ISOLATIONS[row["isolation"]],
                       create_time=Timestamp(seconds=int(created.timestamp())),
                       api_server=row["endpoints"]["api_server"],
                       resources=pb.VClusterResources(cpu=row["resources"]["cpu"], memory_mib=memory),
                       reason=row.get("reason", ""), workers=row["workers"], upid=row["upid"])


def _isolation(value: int) -> str:
    """The REST value of an Isolation: unset is `namespace`; a number the enum lacks goes as it is, for REST's 400
    (INVALID_ARGUMENT naming `isolation`)."""
    if value == pb.ISOLATION_UNSPECIFIED:
        return "namespace"
    return {v: k for k, v in ISOLATIONS.items()}.get(value, str(value))


def _resources(resources: pb.VClusterResources) -> dict:
    return {k: v for k, v in (("cpu", resources.cpu or None),
                              ("memory", f"{resources.memory_mib}Mi" if resources.memory_mib else None)) if v}


class VClusterService(vcluster_pb2_grpc.VClusterServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @unary("POST", "/v1/vclusters")
    async def Create(self, call: Call, request: pb.CreateVClusterRequest) -> pb.CreateVClusterResponse:
        call.fields.update(FIELDS)
        network = request.network if request.HasField("network") else None
        row = await call.rest("POST", "/v1/vclusters", {
            "name": request.name, "k8s_version": request.k8s_version,
            "isolation": _isolation(request.isolation),
            "resources": _resources(request.resources), "workers": request.workers or None,
            "node_selector": {"node": request.node} if request.node else None,
            "network": {"bridge": network.bridge, "cidr": network.cidr, "gateway": network.gateway}
            if network is not None else None,
            "template": request.template or None})
        return pb.CreateVClusterResponse(vcluster=message(row), operation=await operation(call, row["upid"]))

    @unary("GET", ONE)
    async def Get(self, call: Call, request: pb.GetVClusterRequest) -> pb.VCluster:
        return message(await call.rest("GET", ONE, {"id": request.id}))

    @unary("GET", "/v1/vclusters")
    async def List(self, call: Call, request: pb.ListVClustersRequest) -> pb.ListVClustersResponse:
        rows = (await call.rest("GET", "/v1/vclusters", {}))["items"]
        return pb.ListVClustersResponse(vclusters=[message(r) for r in sorted(rows, key=lambda r: r["id"])])

    @unary("DELETE", ONE)
    async def Delete(self, call: Call, request: pb.DeleteVClusterRequest) -> pb.DeleteVClusterResponse:
        answer = await call.rest("DELETE", ONE, {"id": request.id})
        return pb.DeleteVClusterResponse(operation=await operation(call, answer["upid"]))

    @unary("GET", ONE + "/kubeconfig")
    async def GetKubeconfig(self, call: Call, request: pb.GetKubeconfigRequest) -> pb.GetKubeconfigResponse:
        return pb.GetKubeconfigResponse(kubeconfig=await call.rest("GET", ONE + "/kubeconfig", {"id": request.id}))

    @unary("POST", ONE + "/scale")
    async def Scale(self, call: Call, request: pb.ScaleVClusterRequest):
        call.fields.update(FIELDS)
        answer = await call.rest("POST", ONE + "/scale", {
            "id": request.id, "resources": _resources(request.resources) or None,
            "workers": request.workers if request.HasField("workers") else None})
        return await operation(call, answer["upid"])
