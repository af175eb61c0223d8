"""The guest agent protocol's framing, against a scripted peer on a socket pair (what a real qemu-ga does in
tests/test_guest_agent.py; here what it does rarely: answers a client that gave up left behind, silence,
closing after a shutdown)."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from hypervisor import qga


async def _lines(stream: trio.abc.Stream):
    """What the client sends, one JSON command at a time (a leading 0xFF dropped)."""
    buffer = b""
    while True:
        while b"\n" not in buffer:
            data = await stream.receive_some(4096)
            if not data:
                return
            buffer += data
        line, _, buffer = buffer.partition(b"\n")
        yield json.loads(line.lstrip(b"\xff"))


async def run(script, command: str, timeout: float | None = None):
    """qga.execute against a peer that runs `script(stream, lines)` on the other end of the connection."""
    outcome: list = []
    async with trio.open_nursery() as nursery:
        async def connect() -> trio.abc.Stream:
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(script, theirs, _lines(theirs))
            return ours
        try:
            outcome.append(await qga.execute(connect, command, None, timeout))
        except qga.AgentUnavailable as exc:
            outcome.append(exc)
        nursery.cancel_scope.cancel()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


async def test_answers_left_by_an_earlier_client_are_not_taken_for_this_one():
    async def script(stream, lines):
        await stream.send_all(b'{"return": {"from": "an earlier exec"}}\n\xff{"return": 4}\n')  # stale answers
        sync = await lines.__anext__()
        assert sync["execute"] == "guest-sync-delimited"
        await stream.send_all(b'{"error": {"class": "GenericError", "desc": "JSON parse error"}}\n')  # the 0xFF
        await stream.send_all(b"\xff" + json.dumps({"return": sync["arguments"]["id"]}).encode() + b"\n")
        assert (await lines.__anext__())["execute"] == "guest-get-host-name"
        await stream.send_all(b'{"return": {"host-name": "right"}}\n')

    assert await run(script, "guest-get-host-name") == {"host-name": "right"}


async def test_an_error_answer_is_the_result_and_silence_a_timeout():
    async def refuses(stream, lines):
        sync = await lines.__anext__()
        await stream.send_all(b"\xff" + json.dumps({"return": sync["arguments"]["id"]}).encode() + b"\n")
        await lines.__anext__()
        await stream.send_all(b'{"error": {"class": "CommandNotFound", "desc": "not here"}}\n')

    assert await run(refuses, "guest-get-users") == {"error": {"class": "CommandNotFound", "desc": "not here"}}

    async def silent(stream, lines):
        await trio.sleep_forever()

    with trio.fail_after(5), pytest.raises(qga.AgentUnavailable, match="got timeout"):
        await run(silent, "guest-ping", timeout=0.2)


async def test_a_shutdown_ends_with_the_connection_and_other_commands_fail():
    async def goes_away(stream, lines):
        sync = await lines.__anext__()
        await stream.send_all(b"\xff" + json.dumps({"return": sync["arguments"]["id"]}).encode() + b"\n")
        await lines.__anext__()
        await stream.aclose()

    assert await run(goes_away, "guest-shutdown") is None
    with pytest.raises(qga.AgentUnavailable, match="client closed connection"):
        await run(goes_away, "guest-info")
