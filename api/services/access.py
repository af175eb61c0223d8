"""Access control: login, passwords, users, API tokens, groups, roles, ACLs and realms (Proxmox's
pve-access-control `PVE/API2/{AccessControl,User,Group,Role,ACL,Domains}.pm`), for every interface.

Passwords are hashed here (scrypt) and token secrets made here, so that no clear secret reaches the log;
who may manage tokens and passwords is api/services/access_rules.py. Errors: 401 (failed login, after
Proxmox's 3 s delay), 403, 404, 409 and 400 from the engine's access commands.
"""

from __future__ import annotations

import trio

from api import auth
from api.context import Ctx
from api.errors import ApiError, forbidden, unauthorized
from api.passwords import check_password, hash_password, hash_secret
from api.schema import ParamErrors, split_list
from api.services import access_rules as rules
from engine import access as acc
from engine.errors import Rejection
from engine.roles import capabilities, user_active

FAILED_LOGIN_DELAY = 3.0  # Proxmox delays a failed login by 3 s


async def _password_ok(ctx: Ctx, username: str, password: str) -> bool:
    if username.endswith("@pam"):
        return ctx.check_local_password(username, password)
    with ctx.node.read() as s:
        record = s.access.get("user", {}).get(username)
        active = user_active(s, username, ctx.now)
    if record is None or not active or "password" not in record:
        return False
    return await trio.to_thread.run_sync(check_password, password, record["password"])


async def login(ctx: Ctx, username: str, password: str) -> dict:
    """`POST /access/ticket`: a ticket, CSRF token and `cap` for `username` (`user@realm`); a still-valid ticket
    given as the password renews it. 401 `authentication failure` after 3 s otherwise."""
    key_pem, csrf_secret = ctx.node.auth_secrets()
    renewed = password.startswith("PVE:") and auth.verify_ticket(key_pem, password, ctx.now) == username
    with ctx.node.read() as s:
        renewed = renewed and user_active(s, username, ctx.now)
    if not renewed and not await _password_ok(ctx, username, password):
        await trio.sleep(FAILED_LOGIN_DELAY)
        raise unauthorized("authentication failure")
    with ctx.node.read() as s:
        cap = capabilities(s, username)
    return {"username": username, "ticket": auth.make_ticket(key_pem, username, ctx.now),
            "CSRFPreventionToken": auth.make_csrf_token(csrf_secret, username, ctx.now), "cap": cap}


async def change_password(ctx: Ctx, userid: str, password: str) -> None:
    """`PUT /access/password`: your own, or anyone's with User.Modify; never with a token."""
    with ctx.node.read() as s:
        rules.check_password_change(s, ctx.user, userid)
    if len(password) < 5:
        raise ParamErrors({"password": "value must be at least 5 characters long"})
    hashed = await trio.to_thread.run_sync(hash_password, password)
    await ctx.node.submit(acc.SetUser(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, userid=userid,
                                      password_hash=hashed))


async def create_user(ctx: Ctx, userid: str, fields: dict, password: str | None = None) -> None:
    """`POST /access/users`: realm `pve` keeps the password here, hashed."""
    hashed = await trio.to_thread.run_sync(hash_password, password) if password else None
    await ctx.node.submit(acc.SetUser(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, userid=userid,
                                      create=True, fields=fields, password_hash=hashed))


async def update_user(ctx: Ctx, userid: str, fields: dict, append_groups: bool = False) -> None:
    await ctx.node.submit(acc.SetUser(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, userid=userid,
                                      fields=fields, append_groups=append_groups))


async def delete_user(ctx: Ctx, userid: str) -> None:
    """The user goes with its tokens and its ACL entries."""
    await ctx.node.submit(acc.DeleteUser(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, userid=userid))


def check_token_rights(ctx: Ctx, userid: str) -> None:
    with ctx.node.read() as s:
        rules.check_token_management(s, ctx.user, userid)


async def create_token(ctx: Ctx, userid: str, tokenid: str, privsep: int = 1, expire: int = 0,
                       comment: str = "") -> dict:
    """`POST /access/users/{userid}/token/{tokenid}`: `{"full-tokenid", "info", "value"}`; the secret (a UUID) is
    in this answer only, the log keeps its hash."""
    check_token_rights(ctx, userid)
    secret = ctx.node.new_uuid()
    await ctx.node.submit(acc.SetToken(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, userid=userid,
                                       tokenid=tokenid, create=True, secret_hash=hash_secret(secret), privsep=privsep,
                                       expire=expire, comment=comment))
    info: dict = {"privsep": privsep, "expire": expire, **({"comment": comment} if comment else {})}
    with ctx.node.read() as s:
        stored = s.access.get("user", {}).get(userid, {}).get("tokens", {}).get(tokenid, {}).get("secret")
    if stored != hash_secret(secret):  # a retry answered from the first attempt: its secret was shown there only
        raise Rejection(409, f"token '{userid}!{tokenid}' was created by an earlier request with this request "
                             "id; its secret is shown only in that answer")
    return {"full-tokenid": f"{userid}!{tokenid}", "info": info, "value": secret}


async def update_token(ctx: Ctx, userid: str, tokenid: str, privsep: int | None = None, expire: int | None = None,
                       comment: str | None = None) -> None:
    check_token_rights(ctx, userid)
    await ctx.node.submit(acc.SetToken(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, userid=userid,
                                       tokenid=tokenid, privsep=privsep, expire=expire, comment=comment))


async def delete_token(ctx: Ctx, userid: str, tokenid: str) -> None:
    """Revoked at once on every node."""
    check_token_rights(ctx, userid)
    await ctx.node.submit(acc.DeleteToken(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, userid=userid,
                                          tokenid=tokenid))


async def set_group(ctx: Ctx, groupid: str, comment: str | None, create: bool = False) -> None:
    await ctx.node.submit(acc.SetGroup(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, groupid=groupid,
                                       create=create, comment=comment))


async def delete_group(ctx: Ctx, groupid: str) -> None:
    await ctx.node.submit(acc.DeleteGroup(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, groupid=groupid))


async def set_role(ctx: Ctx, roleid: str, privs: list[str], create: bool = False, append: bool = False) -> None:
    await ctx.node.submit(acc.SetRole(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, roleid=roleid,
                                      privs=privs, create=create, append=append))


async def delete_role(ctx: Ctx, roleid: str) -> None:
    await ctx.node.submit(acc.DeleteRole(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, roleid=roleid))


async def change_acl(ctx: Ctx, path: str, roles: list[str], users: list[str], groups: list[str], tokens: list[str],
                     propagate: bool = True, delete: bool = False) -> None:
    """`PUT /access/acl`: grant (or with `delete`, revoke) roles on `path`."""
    if not (users or groups or tokens):
        raise ParamErrors({"users": "no users, groups or tokens specified"})
    if not acc.ACL_PATH.fullmatch(acc.normalize_acl_path(path)):  # pve-access-control `update_acl`
        raise ParamErrors({"path": f"invalid ACL path '{path}'"})
    path = acc.normalize_acl_path(path)
    await ctx.node.submit(acc.ChangeAcl(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, path=path,
                                        roles=roles, users=users, groups=groups, tokens=tokens, propagate=propagate,
                                        delete=delete))


async def create_pool(ctx: Ctx, poolid: str, comment: str = "") -> None:
    await ctx.node.submit(acc.SetPool(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, poolid=poolid,
                                      create=True, comment=comment))


async def update_pool(ctx: Ctx, poolid: str, comment: str | None = None, vms: list[int] = (),
                      storage: list[str] = (), remove: bool = False, allow_move: bool = False) -> None:
    """`PUT /pools/{poolid}` (Pool.Allocate on the pool, declared): adding or removing a guest also needs
    VM.Allocate on it, a storage Datastore.Allocate on it, as Proxmox's `PVE/API2/Pool.pm`; with `allow_move`
    a guest in another pool moves here."""
    for vmid in vms:
        if not ctx.can("VM.Allocate", f"/vms/{vmid}"):
            raise forbidden("VM.Allocate", f"/vms/{vmid}")
    for sid in storage:
        if not ctx.can("Datastore.Allocate", f"/storage/{sid}"):
            raise forbidden("Datastore.Allocate", f"/storage/{sid}")
    await ctx.node.submit(acc.SetPool(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, poolid=poolid,
                                      comment=comment, vms=list(vms), storage=list(storage), remove=remove,
                                      allow_move=allow_move))


async def delete_pool(ctx: Ctx, poolid: str) -> None:
    """Only an empty pool."""
    await ctx.node.submit(acc.DeletePool(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, poolid=poolid))


# ---- realms (`/access/domains`) -------------------------------------------------------------------
def realm_list(ctx: Ctx) -> list[dict]:
    """`GET /access/domains` (open to anyone, for the login box): `realm`, `type`, and `comment`, `default: 1`,
    `tfa` (its type) where set."""
    with ctx.node.read() as s:
        current = acc.realms(s)
    rows = []
    for realm, conf in current.items():
        row = {"realm": realm, "type": conf["type"]}
        if conf.get("comment"):
            row["comment"] = conf["comment"]
        if conf.get("default"):
            row["default"] = 1
        rows.append(row)
    return rows


def realm_settings(ctx: Ctx, realm: str) -> dict:
    """`GET /access/domains/{realm}`: its settings with the `digest` a change may give (404 if unknown)."""
    with ctx.node.read() as s:
        conf = acc.realms(s).get(realm)
        digest = acc.realms_digest(s)
    if conf is None:
        raise ApiError(404, f"domain '{realm}' does not exist")
    return {**conf, "digest": digest}


async def create_realm(ctx: Ctx, realm: str, realm_type: str) -> None:
    """`POST /access/domains`: Proxmox refuses an existing realm, the reserved names and the built-in types (pam
    and pve exist once); LDAP, AD and OpenID realms are not supported yet, so every creation is refused (nothing,
    not even a bind password, reaches the log)."""
    with ctx.node.read() as s:
        acc.check_new_realm(s, realm, realm_type)
    raise ApiError(400, f"realm type '{realm_type}' is not supported - only the built-in realms 'pam' and 'pve' "
                        "exist here")


async def update_realm(ctx: Ctx, realm: str, params: dict) -> None:
    """`PUT /access/domains/{realm}`: `comment`, `default` and `delete` (with `digest`) for the pam and pve realms.

    Refused (400): `tfa` (realm TFA is not enforced here, so it is not stored), `check-connection` (Proxmox: only
    for ldap and ad) and the options of other realm types (`unexpected property`); those never reach the log.
    """
    with ctx.node.read() as s:
        if realm not in acc.realms(s):
            raise ApiError(404, f"domain '{realm}' does not exist")
    if "check-connection" in params:
        raise ApiError(400, "'check-connection' parameter can only be set for realms of type 'ldap' or 'ad'")
    if "tfa" in params:
        raise ParamErrors({"tfa": "two-factor authentication for a realm is not supported here"})
    unexpected = sorted(k for k in params if k not in (*acc.REALM_OPTIONS, "delete", "digest"))
    if unexpected:
        raise ParamErrors({k: f"unexpected property '{k}'" for k in unexpected})
    if "\n" in params.get("comment", "") or "\r" in params.get("comment", ""):
        raise ParamErrors({"comment": "property contains a line feed"})
    fields = {k: params[k] for k in acc.REALM_OPTIONS if k in params}
    await ctx.node.submit(acc.SetRealm(request_id=ctx.command_id, ts=ctx.now, user=ctx.user, realm=realm,
                                       fields=fields, delete=split_list(params.get("delete")),
                                       digest=params.get("digest")))


def delete_realm(ctx: Ctx, realm: str) -> None:
    """`DELETE /access/domains/{realm}`: 404 for an unknown realm; pam and pve are always there (Proxmox re-adds
    them when its domains.cfg lacks them), so deleting them is refused with 400."""
    with ctx.node.read() as s:
        if realm not in acc.realms(s):
            raise ApiError(404, f"authentication domain '{realm}' does not exist")
    raise ApiError(400, f"authentication domain '{realm}' is built in and cannot be deleted")
