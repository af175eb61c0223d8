"""The generated modules of proto/gpve/v1 (package `gpve.v1`; regenerate with `scripts/gen_proto.sh`).

protoc's Python output imports its siblings as `gpve.v1.*`, so the `proto/` directory goes on the import path
here, once; everything else imports the messages and stubs from this module.
"""

from __future__ import annotations

import os
import sys

PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "proto")
if PROTO_DIR not in sys.path:
    sys.path.append(PROTO_DIR)

from gpve.v1 import (  # noqa: E402
    cluster_pb2,
    cluster_pb2_grpc,
    guest_pb2,
    guest_pb2_grpc,
    operation_pb2,
    operation_pb2_grpc,
    vcluster_pb2,
    vcluster_pb2_grpc,
)

__all__ = ["PROTO_DIR", "cluster_pb2", "cluster_pb2_grpc", "guest_pb2", "guest_pb2_grpc", "operation_pb2",
           "operation_pb2_grpc", "vcluster_pb2", "vcluster_pb2_grpc"]
