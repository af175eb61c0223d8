"""The node's gRPC server: grpc.aio on its asyncio thread, TLS with the node's certificate (from the cluster
CA), the gpve.v1 services, the standard health service and server reflection. Run by the node's runtime tree
(`GrpcServer.run`, one of `Node.run`'s servers); every RPC's work runs in the node's trio loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import structlog
import trio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from api.context import Runtime
from api.gate import Gate
from api.rpc import pb
from api.rpc.cluster import ClusterService
from api.rpc.core import REPLAY_WAIT, RpcCore, Runner
from api.rpc.guests import GuestService
from api.rpc.operations import OperationService
from api.rpc.portal import AsyncioThread, TrioPortal
from api.rpc.vclusters import VClusterService
from api.schema import Registry
from engine.node import Node

GRACE = 1.0  # s running calls get to finish when the server stops
log = structlog.get_logger("gpve.grpc")
SERVICES = [(GuestService, pb.guest_pb2_grpc, pb.guest_pb2), (OperationService, pb.operation_pb2_grpc,
                                                                pb.operation_pb2),
            (ClusterService, pb.cluster_pb2_grpc, pb.cluster_pb2), (VClusterService, pb.vcluster_pb2_grpc,
                                                                    pb.vcluster_pb2)]


def service_names() -> list[str]:
    """The full names of the gpve.v1 services, e.g. `gpve.v1.GuestService`."""
    return [module.DESCRIPTOR.services_by_name[cls.__name__].full_name for cls, _, module in SERVICES]


class GrpcServer:
    def __init__(self, node: Node, gate: Gate, runtime: Runtime, registry: Registry, bind: str) -> None:
        self.bind = bind
        self.core = RpcCore(node, gate, runtime, registry)
        self.portal = TrioPortal()
        runner = Runner(self.portal, self.core)
        self.servicers = [(cls(runner), stubs) for cls, stubs, _ in SERVICES]
        self.core.check_twins([servicer for servicer, _ in self.servicers])
        self._thread: AsyncioThread | None = None

    async def run(self, certfile: str, keyfile: str, shutdown_trigger: Callable[[], Awaitable[object]],
                  task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until `shutdown_trigger()` returns (or the call is cancelled), then stop: running calls end
        with UNAVAILABLE, the server waits GRACE s for them."""
        with open(certfile, "rb") as f:
            cert = f.read()
        with open(keyfile, "rb") as f:
            key = f.read()
        if self._thread is None:
            self._thread = AsyncioThread()
        async with trio.open_nursery() as nursery:
            self.portal.open(nursery)
            server, checker = await self._thread.call(self._start, cert, key)
            log.info("grpc listening", bind=self.bind)
            nursery.start_soon(self._serving_once_caught_up, checker)
            task_status.started()
            try:
                await shutdown_trigger()
            finally:
                self.portal.close()
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True), trio.move_on_after(GRACE + 5):
                    await self._thread.call(self._stop, server, checker)

    def close(self) -> None:
        """Stop the asyncio thread (once the server has stopped)."""
        if self._thread is not None:
            self._thread.close()
            self._thread = None

    async def _serving_once_caught_up(self, checker: health.aio.HealthServicer) -> None:
        """Health says NOT_SERVING while a restarted node replays its log (calls wait, then answer 503)."""
        node = self.core.node
        while not node.caught_up():
            await node.wait_caught_up(REPLAY_WAIT)
        await self._thread.call(_set_health, checker, health_pb2.HealthCheckResponse.SERVING)

    async def _start(self, cert: bytes, key: bytes) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
        """(asyncio) Build, bind and start the server; raises RuntimeError when the address cannot be bound."""
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        for servicer, stubs in self.servicers:
            getattr(stubs, f"add_{type(servicer).__name__}Servicer_to_server")(servicer, server)
        checker = health.aio.HealthServicer()
        await _set_health(checker, health_pb2.HealthCheckResponse.SERVING if self.core.node.caught_up() else
                          health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        reflection.enable_server_reflection([*service_names(), health.SERVICE_NAME, reflection.SERVICE_NAME],
                                            server)
        if not server.add_secure_port(self.bind, grpc.ssl_server_credentials([(key, cert)])):
            raise RuntimeError(f"cannot listen on {self.bind}")
        await server.start()
        return server, checker

    @staticmethod
    async def _stop(server: grpc.aio.Server, checker: health.aio.HealthServicer) -> None:
        await checker.enter_graceful_shutdown()
        await server.stop(GRACE)


async def _set_health(checker: health.aio.HealthServicer, status: int) -> None:
    """(asyncio) The status of the whole server (`""`) and of each gpve.v1 service."""
    for name in ["", *service_names()]:
        await checker.set(name, status)
