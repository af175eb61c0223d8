"""/nodes/{node}/qemu/{vmid}/agent/*: the QEMU guest agent (qemu-server's `PVE/API2/Qemu/Agent.pm`).

One endpoint per plain agent command, declared from `COMMANDS` (method and privileges as Proxmox registers
them; `VM.GuestAgent.Unrestricted` always suffices), the old `POST agent` with `command`, and the commands with
parameters: `exec`, `exec-status`, `file-read`, `file-write`, `set-user-password`. Rules and answers:
api/services/guest_agent.py.
"""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.schema import NODE, VMID_PATH, Param, Permission
from api.services import guest_agent

UNRESTRICTED = "VM.GuestAgent.Unrestricted"
AUDIT = ("VM.GuestAgent.Audit",)
FS_MGMT = ("VM.GuestAgent.FileSystemMgmt",)
POWER = ("VM.PowerMgmt",)
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {  # command -> (method, privileges besides Unrestricted)
    "ping": ("POST", AUDIT), "get-time": ("GET", AUDIT), "info": ("GET", AUDIT),
    "fsfreeze-status": ("POST", AUDIT + FS_MGMT), "fsfreeze-freeze": ("POST", FS_MGMT),
    "fsfreeze-thaw": ("POST", FS_MGMT), "fstrim": ("POST", FS_MGMT), "network-get-interfaces": ("GET", AUDIT),
    "get-vcpus": ("GET", AUDIT), "get-fsinfo": ("GET", AUDIT), "get-memory-blocks": ("GET", AUDIT),
    "get-memory-block-info": ("GET", AUDIT), "suspend-hybrid": ("POST", POWER), "suspend-ram": ("POST", POWER),
    "suspend-disk": ("POST", POWER), "shutdown": ("POST", POWER), "get-host-name": ("GET", AUDIT),
    "get-osinfo": ("GET", AUDIT), "get-users": ("GET", AUDIT), "get-timezone": ("GET", AUDIT),
}
WITH_PARAMETERS = ("exec", "exec-status", "file-read", "file-write", "set-user-password")
RESULT = {"type": "object", "description": "Returns an object with a single `result` property."}
BASE = "/nodes/{node}/qemu/{vmid}/agent"


def _may(*privileges: str) -> Permission:
    """Any one of `privileges` or VM.GuestAgent.Unrestricted on the guest."""
    wanted = tuple(dict.fromkeys((*privileges, UNRESTRICTED)))
    return Permission(wanted if len(wanted) > 1 else wanted[0], "/vms/{vmid}")


@API.endpoint("GET", BASE, params=[NODE, VMID_PATH], permission=Permission(check="all"),
              returns={"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}})
async def agent_index(ctx: Ctx, p: dict) -> list:
    """The guest agent commands there are endpoints for."""
    return [{"name": name} for name in sorted([*COMMANDS, *WITH_PARAMETERS])]


@API.endpoint("POST", BASE, params=[NODE, VMID_PATH, Param("command", optional=False, enum=tuple(sorted(COMMANDS)),
                                                           description="The QGA command.")],
              permission=_may(), returns=RESULT)
async def agent(ctx: Ctx, p: dict) -> dict:
    """Run a guest agent command (the old endpoint, kept as Proxmox keeps it)."""
    return await guest_agent.command(ctx, p["node"], p["vmid"], p["command"])


def _command_endpoint(name: str, method: str, privileges: tuple[str, ...]) -> None:
    async def handler(ctx: Ctx, p: dict) -> dict:
        return await guest_agent.command(ctx, p["node"], p["vmid"], name)

    handler.__name__ = "agent_" + name.replace("-", "_")
    handler.__doc__ = f"Run the guest agent's `guest-{name}`."
    API.endpoint(method, f"{BASE}/{name}", params=[NODE, VMID_PATH], permission=_may(*privileges),
                 returns=RESULT)(handler)


for _name, (_method, _privileges) in COMMANDS.items():
    _command_endpoint(_name, _method, _privileges)


@API.endpoint("POST", f"{BASE}/exec",
              params=[NODE, VMID_PATH, Param("command", "array", optional=False,
                                             description="The command as a list of program + arguments."),
                      Param("input-data", max_length=64 * 1024, description="Given to the command as its stdin.")],
              permission=_may(), returns={"type": "object", "properties": {"pid": {"type": "integer"}}})
async def agent_exec(ctx: Ctx, p: dict) -> dict:
    """Start a command in the guest; its output is kept for `exec-status`."""
    return await guest_agent.exec_command(ctx, p["node"], p["vmid"], p["command"], p.get("input-data"))


@API.endpoint("GET", f"{BASE}/exec-status", params=[NODE, VMID_PATH, Param("pid", "integer", optional=False)],
              permission=_may(),
              returns={"type": "object", "properties": {
                  "exited": {"type": "boolean"}, "exitcode": {"type": "integer"}, "signal": {"type": "integer"},
                  "out-data": {"type": "string"}, "err-data": {"type": "string"},
                  "out-truncated": {"type": "boolean"}, "err-truncated": {"type": "boolean"}}})
async def agent_exec_status(ctx: Ctx, p: dict) -> dict:
    """Whether a command started by `exec` has exited, with its exit code and output."""
    return await guest_agent.exec_status(ctx, p["node"], p["vmid"], p["pid"])


@API.endpoint("GET", f"{BASE}/file-read",
              params=[NODE, VMID_PATH, Param("file", optional=False, description="The path to the file."),
                      Param("count", "integer", minimum=1, maximum=guest_agent.MAX_READ_SIZE,
                            default=guest_agent.MAX_READ_SIZE, description="Number of bytes to read."),
                      Param("offset", "integer", minimum=0, default=0, description="Offset to start reading at."),
                      Param("decode", "boolean", default=1, description="Decode the agent's base64.")],
              permission=_may("VM.GuestAgent.FileRead"),
              returns={"type": "object", "properties": {"content": {"type": "string"},
                                                         "truncated": {"type": "boolean"}}})
async def agent_file_read(ctx: Ctx, p: dict) -> dict:
    """Read a file in the guest (at most 16 MiB)."""
    return await guest_agent.file_read(ctx, p["node"], p["vmid"], p["file"], p.get("count"), p.get("offset", 0),
                                       bool(p.get("decode", 1)))


@API.endpoint("POST", f"{BASE}/file-write",
              params=[NODE, VMID_PATH, Param("file", optional=False, description="The path to the file."),
                      Param("content", optional=False, max_length=60 * 1024,
                            description="The content to write into the file."),
                      Param("encode", "boolean", default=1,
                            description="Encode the content as base64 (else it must be base64 already).")],
              permission=_may("VM.GuestAgent.FileWrite"), returns={"type": "null"})
async def agent_file_write(ctx: Ctx, p: dict) -> None:
    """Write a file in the guest."""
    await guest_agent.file_write(ctx, p["node"], p["vmid"], p["file"], p["content"], bool(p.get("encode", 1)))


@API.endpoint("POST", f"{BASE}/set-user-password",
              params=[NODE, VMID_PATH, Param("username", optional=False, description="The user whose password it is."),
                      Param("password", optional=False, min_length=5, max_length=1024, description="The new password."),
                      Param("crypted", "boolean", default=0,
                            description="The password has already been passed through crypt().")],
              permission=Permission(UNRESTRICTED, "/vms/{vmid}"), returns=RESULT)
async def agent_set_user_password(ctx: Ctx, p: dict) -> dict:
    """Set a guest user's password through the agent."""
    return await guest_agent.set_user_password(ctx, p["node"], p["vmid"], p["username"], p["password"],
                                               bool(p.get("crypted", 0)))
