"""gRPC clients of a test node: a TLS channel that trusts the cluster CA, and credentials as metadata."""

from __future__ import annotations

import os

import grpc
import requests

from api.rpc import pb


def ca_path(node) -> str:
    return os.path.join(node.data_dir, "ssl", "pve-root-ca.pem")


def channel(node, ca_of=None) -> grpc.Channel:
    """A channel to `node`'s gRPC port, trusting the CA in `ca_of`'s data dir (default: the node's own)."""
    with open(ca_path(ca_of or node), "rb") as f:
        return grpc.secure_channel(f"127.0.0.1:{node.grpc_port}", grpc.ssl_channel_credentials(f.read()))


def ticket(node, user: str = "root@pam", password: str | None = None) -> list[tuple[str, str]]:
    """Metadata with a ticket from `node`'s REST login, and its CSRF token (ticket writes need it)."""
    data = requests.post(node.url + "/access/ticket", data={"username": user, "password": password or node.password},
                         verify=False, timeout=10).json()["data"]
    return [("authorization", f"PVEAuthCookie={data['ticket']}"), ("csrfpreventiontoken", data["CSRFPreventionToken"])]


def token(tokenid: str, secret: str) -> list[tuple[str, str]]:
    """Metadata with an API token (`user@realm!name`)."""
    return [("authorization", f"PVEAPIToken={tokenid}={secret}")]


class Stubs:
    """The gpve.v1 stubs on one channel."""

    def __init__(self, chan: grpc.Channel) -> None:
        self.channel = chan
        self.guests = pb.guest_pb2_grpc.GuestServiceStub(chan)
        self.operations = pb.operation_pb2_grpc.OperationServiceStub(chan)
        self.cluster = pb.cluster_pb2_grpc.ClusterServiceStub(chan)
        self.vclusters = pb.vcluster_pb2_grpc.VClusterServiceStub(chan)

    def wait_ok(self, operation, metadata, timeout_s: int = 120):
        """Wait for an Operation to end; assert it ended OK; return it."""
        from google.protobuf.duration_pb2 import Duration

        done = self.operations.Wait(pb.operation_pb2.WaitOperationRequest(
            upid=operation.upid, timeout=Duration(seconds=timeout_s)), metadata=metadata, timeout=timeout_s + 10)
        assert done.done and done.status == pb.operation_pb2.OPERATION_STATUS_OK, done
        return done
