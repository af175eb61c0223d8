"""Generated gRPC modules of package gpve.v1 (see api/rpc/pb.py)."""
