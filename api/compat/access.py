"""/version and /access: login with Proxmox tickets."""

from __future__ import annotations

import trio

from api import auth
from api.context import Ctx
from api.errors import unauthorized
from api.privileges import capabilities
from api.registry import API
from api.schema import Param, Permission

GPVE_VERSION = "9.1.1"
FAILED_LOGIN_DELAY = 3.0  # Proxmox delays a failed login by 3 s


@API.endpoint("GET", "/version", returns={"type": "object"})
async def version(ctx: Ctx, p: dict) -> dict:
    """API version details."""
    return {"version": GPVE_VERSION, "release": GPVE_VERSION.rsplit(".", 1)[0], "repoid": "gpve",
            "console": "xtermjs"}


@API.endpoint("GET", "/access/ticket", permission=Permission(check="public"))
async def ticket_dummy(ctx: Ctx, p: dict) -> None:
    """Dummy, so that the path answers GET as Proxmox's does."""
    return None


@API.endpoint(
    "POST", "/access/ticket", permission=Permission(check="public"),
    params=[Param("username", optional=False, max_length=64), Param("password", optional=False),
            Param("realm", max_length=32), Param("otp"), Param("path", max_length=64), Param("privs", max_length=64),
            Param("new-format", "boolean", default=1), Param("tfa-challenge")],
    returns={"type": "object", "properties": {"username": {"type": "string"}, "ticket": {"type": "string"},
                                               "CSRFPreventionToken": {"type": "string"},
                                               "cap": {"type": "object"}}},
)
async def create_ticket(ctx: Ctx, p: dict) -> dict:
    """Create or verify an authentication ticket; a still-valid ticket as password renews it."""
    username = p["username"]
    if "@" not in username and p.get("realm"):
        username = f"{username}@{p['realm']}"
    key_pem, csrf_secret = ctx.node.auth_secrets()
    password = p["password"]
    renewed = password.startswith("PVE:") and auth.verify_ticket(key_pem, password, ctx.now) == username
    if not renewed and not ctx.check_local_password(username, password):
        await trio.sleep(FAILED_LOGIN_DELAY)
        raise unauthorized("authentication failure")
    return {"username": username, "ticket": auth.make_ticket(key_pem, username, ctx.now),
            "CSRFPreventionToken": auth.make_csrf_token(csrf_secret, username, ctx.now),
            "cap": capabilities(username)}
