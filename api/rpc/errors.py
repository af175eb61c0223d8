"""REST errors as gRPC statuses: the code for the HTTP status, the REST message as the status message, and
the rich details (`google.rpc.Status` in the `grpc-status-details-bin` trailer): `BadRequest` with one field
violation per bad parameter (400), `RetryInfo` when rate limited (429).

400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 409 ALREADY_EXISTS (the
message says `already exists`) or ABORTED, 410 OUT_OF_RANGE (events no longer kept), 423
FAILED_PRECONDITION, 429 RESOURCE_EXHAUSTED, 501 UNIMPLEMENTED, 502 and 503 UNAVAILABLE, anything else
INTERNAL.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from api.gate import RateLimited, refusal
from engine.errors import Rejection

DETAILS_KEY = "grpc-status-details-bin"
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND, 409: grpc.StatusCode.ABORTED,
    410: grpc.StatusCode.OUT_OF_RANGE, 413: grpc.StatusCode.INVALID_ARGUMENT,
    423: grpc.StatusCode.FAILED_PRECONDITION, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED, 502: grpc.StatusCode.UNAVAILABLE, 503: grpc.StatusCode.UNAVAILABLE,
}

Status = tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]


def code_for(status: int, message: str) -> grpc.StatusCode:
    if status == 409 and "already exists" in message:
        return grpc.StatusCode.ALREADY_EXISTS
    return CODES.get(status, grpc.StatusCode.INTERNAL)


def _packed(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def rejection_of(exc: Exception) -> tuple[Rejection, list]:
    """The REST error an exception answers (as REST would) and its rich details."""
    rejection = refusal(exc)
    details: list = []
    if isinstance(exc, RateLimited):
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=exc.verdict.retry_after)))
    if rejection.errors:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=k, description=v)
            for k, v in sorted(rejection.errors.items())]))
    return rejection, details


def status_of(exc: Exception) -> Status:
    """(code, message, trailing metadata) for an exception an RPC ended with."""
    rejection, details = rejection_of(exc)
    code = code_for(rejection.status, rejection.message)
    rich = status_pb2.Status(code=code.value[0], message=rejection.message, details=[_packed(d) for d in details])
    trailers: list[tuple[str, str | bytes]] = [(DETAILS_KEY, rich.SerializeToString())]
    if isinstance(exc, RateLimited):
        trailers += [(k.lower(), v) for k, v in exc.verdict.headers().items()]
    return code, rejection.message, tuple(trailers)
