"""/nodes/{node}/qemu/{vmid}/{vncproxy,termproxy,vncwebsocket,spiceproxy}: consoles (qemu-server's `PVE/API2/Qemu.pm`).

Rules: api/services/consoles.py. The WebSocket upgrade of `vncwebsocket` is served by api/console_ws.py under this
same declaration (parameters, `VM.Console`); a plain `GET` checks the ticket and answers `{"port"}`, as Proxmox.
"""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.returns import INT, STR, obj
from api.schema import NODE, VMID_PATH, Param, Permission
from api.services import consoles

CONSOLE = Permission("VM.Console", "/vms/{vmid}")
PORT = Param("port", "integer", optional=False, minimum=5900, maximum=5999,
             description="Port number returned by previous vncproxy call.")
VNCTICKET = Param("vncticket", optional=False, max_length=512, description="Ticket from previous call to vncproxy.")


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/vncproxy",
              params=[NODE, VMID_PATH,
                      Param("websocket", "boolean", description="Prepare for websocket upgrade (only required when "
                                                                "using serial terminal, otherwise upgrade is always "
                                                                "possible)."),
                      Param("generate-password", "boolean", default=0,
                            description="Deprecated, do not use. Password is generated when required.")],
              permission=CONSOLE,
              returns=obj({"user": STR, "ticket": STR, "port": INT, "upid": STR, "cert": STR}, {"password": STR}))
async def vncproxy(ctx: Ctx, p: dict) -> dict:
    """Creates a VNC proxy for the guest's display, reached through `vncwebsocket` within 10 s: `ticket` (one-time,
    40 s), `password` (the VNC protocol's, also before the ticket as `PASSWORD:PVEVNC:...`), `port`, the task's
    `upid`, the cluster CA `cert`."""
    return await consoles.open_proxy(ctx, p["node"], p["vmid"], "vnc")


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/termproxy",
              params=[NODE, VMID_PATH,
                      Param("serial", enum=("serial0", "serial1", "serial2", "serial3"),
                            description="opens a serial terminal (defaults to display)")],
              permission=CONSOLE, returns=obj({"user": STR, "ticket": STR, "port": INT, "upid": STR}))
async def termproxy(ctx: Ctx, p: dict) -> dict:
    """Creates a terminal proxy for the guest's serial console (`serial`, else the one `vga: serialN` names, else the
    first `serialN: socket`), reached through `vncwebsocket` with xterm.js's protocol (api/console_ws.py)."""
    return await consoles.open_terminal(ctx, p["node"], p["vmid"], p.get("serial"))


@API.endpoint("GET", "/nodes/{node}/qemu/{vmid}/vncwebsocket", params=[NODE, VMID_PATH, PORT, VNCTICKET],
              permission=Permission("VM.Console", "/vms/{vmid}",
                                    description="You also need to pass a valid ticket (vncticket)."),
              returns=obj({"port": STR}))
async def vncwebsocket(ctx: Ctx, p: dict) -> dict:
    """Opens a websocket for VNC (or terminal) traffic: upgrade this request (api/console_ws.py); without the
    upgrade the ticket is only checked."""
    return consoles.check_ticket(ctx, p["node"], p["vmid"], p["port"], p["vncticket"])


@API.endpoint("POST", "/nodes/{node}/qemu/{vmid}/spiceproxy",
              params=[NODE, VMID_PATH,
                      Param("proxy", max_length=256, pattern=r"[A-Za-z0-9.:\-\[\]]+",
                            description="SPICE proxy server the client should use (default: this node).")],
              permission=CONSOLE,
              returns=obj({"host": STR, "password": STR, "proxy": STR, "tls-port": INT, "type": STR}, closed=False))
async def spiceproxy(ctx: Ctx, p: dict) -> dict:
    """Returns a SPICE configuration to connect to the VM (`vga: qxl`); `no spice port` for a guest without SPICE."""
    return await consoles.spice_config(ctx, p["node"], p["vmid"], p.get("proxy"))
