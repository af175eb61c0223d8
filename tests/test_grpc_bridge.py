"""The gRPC server's two pure-ish parts: REST errors as gRPC statuses, and the asyncio-to-trio portal."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
import trio
from google.rpc import error_details_pb2, status_pb2

from api.gate import RateLimited
from api.ratelimit import Verdict
from api.rpc.errors import DETAILS_KEY, status_of
from api.rpc.portal import AsyncioThread, TrioPortal
from api.schema import ParamErrors
from engine.errors import Rejection

C = grpc.StatusCode


@pytest.mark.parametrize(("status", "message", "code"), [
    (400, "bad", C.INVALID_ARGUMENT), (401, "invalid PVE ticket", C.UNAUTHENTICATED),
    (403, "Permission denied - missing 'VM.Audit' on '/vms/100'", C.PERMISSION_DENIED),
    (404, "Configuration file 'nodes/n1/qemu-server/1.conf' does not exist", C.NOT_FOUND),
    (409, "unable to create VM 100 - VM 100 already exists", C.ALREADY_EXISTS),
    (409, "VM 100 is running", C.ABORTED), (410, "events after 1 are no longer kept", C.OUT_OF_RANGE),
    (423, "VM 100 is locked (backup)", C.FAILED_PRECONDITION), (500, "TASK ERROR", C.INTERNAL),
    (502, "node 'n2' is unreachable", C.UNAVAILABLE), (503, "no quorum", C.UNAVAILABLE)])
def test_rest_statuses_map_to_grpc_codes_with_the_rest_message(status, message, code):
    got, detail, trailers = status_of(Rejection(status, message))
    assert (got, detail) == (code, message)
    rich = status_pb2.Status.FromString(dict(trailers)[DETAILS_KEY])
    assert (rich.code, rich.message) == (code.value[0], message)


def test_parameter_errors_carry_one_field_violation_each():
    code, message, trailers = status_of(ParamErrors({"memory": "value must have a minimum value of 16",
                                                     "disks[0].size": "not a size"}))
    assert (code, message) == (C.INVALID_ARGUMENT, "Parameter verification failed")
    [detail] = status_pb2.Status.FromString(dict(trailers)[DETAILS_KEY]).details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("disks[0].size", "not a size"), ("memory", "value must have a minimum value of 16")]


def test_rate_limited_calls_say_when_to_retry():
    code, message, trailers = status_of(RateLimited(Verdict(False, 100, 0, 1_700_000_060, 42)))
    assert (code, message) == (C.RESOURCE_EXHAUSTED, "Rate limit exceeded. Try again in 42 seconds.")
    meta = dict(trailers)
    assert meta["retry-after"] == "42" and meta["x-ratelimit-limit"] == "100"
    [detail] = status_pb2.Status.FromString(meta[DETAILS_KEY]).details
    retry = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry) and retry.retry_delay.seconds == 42


def test_unexpected_exceptions_say_nothing_about_themselves():
    code, message, _ = status_of(KeyError("secret detail"))
    assert (code, message) == (C.INTERNAL, "internal error")


async def test_the_portal_runs_work_in_trio_and_cancels_it_from_asyncio():
    aio = AsyncioThread("test-grpc-asyncio")
    portal = TrioPortal()
    trio_thread = threading.get_ident()
    cancelled = trio.Event()

    async def double(x: int) -> tuple[int, int]:
        await trio.sleep(0)
        return 2 * x, threading.get_ident()

    async def fails() -> None:
        raise Rejection(404, "nope")

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async def from_asyncio(fn, *args):
        assert threading.get_ident() != trio_thread
        try:
            return await portal.run(fn, *args)
        except Rejection as exc:
            return exc.status

    async def cancel_after_a_while():
        task = asyncio.ensure_future(portal.run(forever))
        await asyncio.sleep(0.1)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"

    try:
        async with trio.open_nursery() as nursery:
            portal.open(nursery)
            assert await aio.call(from_asyncio, double, 21) == (42, trio_thread)
            assert await aio.call(from_asyncio, fails) == 404
            assert await aio.call(cancel_after_a_while) == "cancelled"
            with trio.fail_after(5):
                await cancelled.wait()
            portal.close()
            assert await aio.call(from_asyncio, double, 1) == 503  # no nursery: the node is shutting down
    finally:
        aio.close()
