"""The QEMU guest agent's requests: what `/nodes/{node}/qemu/{vmid}/agent/*` does (qemu-server's
`PVE/API2/Qemu/Agent.pm` and `PVE/QemuServer/Agent.pm`).

Every request first asks Proxmox's `assert_agent_available`: the config has an `agent` key (else `No QEMU guest
agent configured`), the guest runs on this node (`VM N is not running`), its agent answers `guest-ping` within
3 s (`QEMU guest agent is not running`). These and every failure of the agent's (no answer: `VM N qga command
'guest-x' failed - got timeout`; a refusal: `Agent error: ...`) answer 409 with Proxmox's message, where Proxmox
answers 500 (as the other endpoints that ask a running guest: a state of the guest, not a server fault; clients
match on the message). The request runs on the guest's node: the API forwards `/nodes/{other}/...` there before
it gets here (api/forward.py).

Answers as Proxmox's: the plain commands `{"result": <the agent's return>}` (an error the agent answers with is
that result, `{"result": {"error": {"class", "desc"}}}`, not a failure); `exec`, `exec-status`, `file-read` and
`file-write` their own shapes, failing with `Agent error: <desc>` when the agent refuses. File and process
contents travel as Proxmox sends them: decoded bytes as the characters of those codes (Latin-1), so a client
gets exact bytes back by encoding the text as Latin-1. Arguments (a password, a file's content, a command's
input) appear in no error, log line or task log.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from api.context import Ctx
from api.services import guests
from engine.errors import Rejection
from hypervisor.qemu import GuestError

MAX_READ_SIZE = 16 << 20  # file-read's limit (Agent.pm $MAX_READ_SIZE)
READ_CHUNK = 1 << 20


def _failed(message: str) -> Rejection:
    return Rejection(409, message)


async def _available(ctx: Ctx, node: str, vmid: int):
    """The driver, once the agent may be asked (`assert_agent_available`)."""
    guest = guests.guest_or_404(ctx, node, vmid)
    if guest["conf"].get("agent") is None:
        raise _failed("No QEMU guest agent configured")
    driver = ctx.rt.driver
    if driver is None or guest["node"] != ctx.node.name or not driver.running(vmid):
        raise _failed(f"VM {vmid} is not running")
    if await driver.agent_running(vmid) is not None:
        raise _failed("QEMU guest agent is not running")
    return driver


async def _call(driver, vmid: int, command: str, arguments: dict | None = None) -> Any:
    try:
        return await driver.agent(vmid, command, arguments)
    except GuestError as exc:
        raise _failed(str(exc)) from None


async def _checked(driver, vmid: int, command: str, arguments: dict | None, errmsg: str) -> Any:
    """Proxmox's `agent_cmd` + `check_agent_error`: the result, or `Agent error: ...` for an error answer."""
    result = await _call(driver, vmid, command, arguments)
    if isinstance(result, dict) and isinstance(result.get("error"), dict) and result["error"].get("desc"):
        raise _failed(f"Agent error: {result['error']['desc']}")
    if result is None:
        raise _failed(f"Agent error: {errmsg}")
    return result


def _text(data: bytes) -> str:
    return data.decode("latin-1")


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return b""


async def command(ctx: Ctx, node: str, vmid: int, name: str) -> dict:
    """`guest-<name>` without arguments (`ping`, `info`, `network-get-interfaces`, `shutdown`, ...):
    `{"result": ...}`. `shutdown` and `suspend-*` answer `{"result": null}` once the guest has gone."""
    driver = await _available(ctx, node, vmid)
    return {"result": await _call(driver, vmid, f"guest-{name}")}


async def exec_command(ctx: Ctx, node: str, vmid: int, argv: list[str], input_data: str | None) -> dict:
    """`guest-exec` with its output captured: `{"pid": N}` (Agent.pm `qemu_exec`)."""
    if not argv and input_data is None:
        raise Rejection(400, "command or input-data (or both) required")
    driver = await _available(ctx, node, vmid)
    arguments: dict[str, Any] = {"capture-output": True}
    if argv:
        arguments.update(path=argv[0], arg=list(argv[1:]))
    if input_data is not None:
        arguments["input-data"] = base64.b64encode(_bytes(input_data)).decode()
    errmsg = "can't execute command" + (" (input-data given)" if input_data is not None else "")
    return await _checked(driver, vmid, "guest-exec", arguments, errmsg)


async def exec_status(ctx: Ctx, node: str, vmid: int, pid: int) -> dict:
    """`guest-exec-status`: `exited`, `exitcode`/`signal`, `out-data`/`err-data` decoded, booleans as 0/1
    (Agent.pm `qemu_exec_status`)."""
    driver = await _available(ctx, node, vmid)
    result = dict(await _checked(driver, vmid, "guest-exec-status", {"pid": pid},
                                 f"can't get exec status for '{pid}'"))
    for key in ("out-data", "err-data"):
        if result.get(key):
            result[key] = _text(_b64decode(str(result[key])))
    return {k: int(v) if isinstance(v, bool) else v for k, v in result.items()}


async def file_read(ctx: Ctx, node: str, vmid: int, path: str, count: int | None, offset: int,
                    decode: bool) -> dict:
    """`content` (decoded unless `decode` is 0, then base64), `bytes-read`, and `truncated: 1` when the end of the
    file was not reached within `count` (at most 16 MiB) bytes."""
    driver = await _available(ctx, node, vmid)
    handle = await _checked(driver, vmid, "guest-file-open", {"path": path}, "can't open file")
    try:
        if offset > 0:
            await _checked(driver, vmid, "guest-file-seek", {"handle": handle, "offset": offset, "whence": "set"},
                           "can't seek to offset position")
        wanted = MAX_READ_SIZE if count is None else count
        done, eof, chunks = 0, False, []
        while done < wanted and not eof:
            read = await _checked(driver, vmid, "guest-file-read",
                                  {"handle": handle, "count": min(READ_CHUNK, wanted - done)}, "can't read from file")
            chunk = str(read.get("buf-b64", ""))
            chunks.append(_text(_b64decode(chunk)) if decode else chunk)
            done += int(read.get("count", 0))
            eof = bool(read.get("eof"))
    finally:
        try:
            await driver.agent(vmid, "guest-file-close", {"handle": handle})
        except GuestError:
            pass  # Proxmox only warns
    out: dict[str, Any] = {"content": "".join(chunks), "bytes-read": done}
    if not eof:
        out["truncated"] = 1
    return out


def _bytes(text: str) -> bytes:
    """Text to the bytes it stands for: Latin-1 as Proxmox (one byte per character), UTF-8 for text beyond it
    (where Proxmox fails)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


async def file_write(ctx: Ctx, node: str, vmid: int, path: str, content: str, encode: bool) -> None:
    """Write `content` (base64-encoded first unless `encode` is 0: then it is base64 already) to `path`,
    replacing the file."""
    driver = await _available(ctx, node, vmid)
    buf = base64.b64encode(_bytes(content)).decode() if encode else content
    handle = await _checked(driver, vmid, "guest-file-open", {"path": path, "mode": "wb"}, "can't open file")
    await _checked(driver, vmid, "guest-file-write", {"handle": handle, "buf-b64": buf}, "can't write to file")
    await _checked(driver, vmid, "guest-file-close", {"handle": handle}, "can't close file")


async def set_user_password(ctx: Ctx, node: str, vmid: int, username: str, password: str, crypted: bool) -> dict:
    """`guest-set-user-password`: `{"result": ...}`. The password goes to the agent only."""
    driver = await _available(ctx, node, vmid)
    arguments = {"username": username, "password": base64.b64encode(_bytes(password)).decode(),
                 "crypted": bool(crypted)}
    return {"result": await _checked(driver, vmid, "guest-set-user-password", arguments,
                                     "cannot set user password")}
