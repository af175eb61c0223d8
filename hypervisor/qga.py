"""The QEMU guest agent client: QGA's JSON protocol over the guest's agent socket, on trio.

As Proxmox's `PVE::QMPClient` talks to a `qga` peer: one connection per command, and each command preceded by
`guest-sync-delimited` with a fresh id. The agent answers the sync with a 0xFF byte and `{"return": id}`;
whatever comes before (answers an earlier client gave up waiting for, the agent's complaint about the 0xFF we
send first to flush a partial command from its parser, as the QGA documentation advises) is dropped, so the next
line is this command's answer. QEMU serves one connection on the socket at a time; a second caller's connection
waits in the socket's backlog until the first one closes, within its own timeout.

`execute` returns the command's `return` value, or `{"error": {"class", "desc"}}` when the agent answers with an
error: Proxmox's `mon_cmd` hands QGA errors back as that result rather than failing (its GUI reads
`result.error.desc`). It raises `AgentUnavailable` when there is no answer: no socket, a timeout, a closed
connection. The timeouts are Proxmox's (`QMPClient::cmd`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import trio

DEFAULT_TIMEOUT = 5.0
TIMEOUTS = {"guest-fsfreeze-freeze": 3600.0, "guest-fsfreeze-thaw": 180.0, "guest-fstrim": 600.0,
            "guest-shutdown": 600.0}
# Commands after which the agent (or the whole guest) may go away without an answer (QMPClient's
# qga_allow_close_cmds): a closed connection is their success.
MAY_CLOSE = frozenset({"guest-shutdown", "guest-suspend-ram", "guest-suspend-disk", "guest-suspend-hybrid"})
MAX_ANSWER = 64 << 20  # bytes: a 16 MiB file-read chunk is far smaller once base64-encoded in one line
DELIMITER = b"\xff"


class AgentUnavailable(Exception):
    """No answer from the agent; the text is what Proxmox's client says (`got timeout`, `client closed
    connection`, `unable to connect to ... socket - ...`). It never holds the command's arguments."""


class _Closed(Exception):
    """The other end closed the connection."""


class _Reader:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise _Closed()
        self.buffer += data
        if len(self.buffer) > MAX_ANSWER:
            raise AgentUnavailable("answer too long")

    async def line(self) -> bytes:
        while b"\n" not in self.buffer:
            await self._more()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    async def synced(self, sync_id: int) -> None:
        """Skip to the answer of the sync with `sync_id`."""
        while True:
            while DELIMITER not in self.buffer:
                self.buffer = b""
                await self._more()
            self.buffer = self.buffer[self.buffer.index(DELIMITER) + 1:]
            line = await self.line()
            try:
                if json.loads(line).get("return") == sync_id:
                    return
            except (ValueError, AttributeError):
                continue


def _json(line: bytes) -> dict:
    try:
        answer = json.loads(line)
    except ValueError:
        raise AgentUnavailable("unable to parse the agent's answer") from None
    if not isinstance(answer, dict):
        raise AgentUnavailable("unable to parse the agent's answer")
    return answer


async def execute(connect: Callable[[], Awaitable[trio.abc.Stream]], command: str, arguments: dict | None = None,
                  timeout: float | None = None) -> Any:
    """Run one QGA `command` (`guest-...`) over a new connection from `connect()`; see the module docstring.
    For MAY_CLOSE commands a connection closed before an answer gives None."""
    sync_id = secrets.randbelow(1 << 31) + 1
    request = {"execute": command, **({"arguments": arguments} if arguments else {})}
    with trio.move_on_after(timeout or TIMEOUTS.get(command, DEFAULT_TIMEOUT)) as scope:
        try:
            stream = await connect()
        except OSError as exc:
            raise AgentUnavailable(f"unable to connect to qga socket - {exc.strerror or exc}") from None
        async with stream:
            reader, sent = _Reader(stream), False
            try:
                await stream.send_all(DELIMITER + json.dumps({"execute": "guest-sync-delimited",
                                                              "arguments": {"id": sync_id}}).encode() + b"\n")
                await reader.synced(sync_id)
                await stream.send_all(json.dumps(request).encode() + b"\n")
                sent = True
                answer = _json(await reader.line())
            except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                if sent and command in MAY_CLOSE:
                    return None
                raise AgentUnavailable("client closed connection") from None
    if scope.cancelled_caught:
        raise AgentUnavailable("got timeout")
    if "return" in answer:
        return answer["return"]
    if isinstance(answer.get("error"), dict):
        return {"error": answer["error"]}
    raise AgentUnavailable("unable to parse the agent's answer")
