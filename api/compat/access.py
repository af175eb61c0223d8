"""/version and /access: login, users, groups, roles, ACLs, permissions, passwords, API tokens."""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.returns import BOOL, INT, STR, array, map_of, obj
from api.schema import Param, Permission, split_list
from api.services import access
from api.services import access_rules as rules
from engine import access as acc
from engine.errors import not_found
from engine.roles import ALL_PRIVILEGES, BUILTIN_ROLES, privileges_on, role_privileges

GPVE_VERSION = "9.1.1"

USERID = Param("userid", optional=False, format="pve-userid", max_length=64, location="path")
TOKENID = Param("tokenid", optional=False, pattern=r"[A-Za-z][A-Za-z0-9.\-_]+", location="path")
GROUPID = Param("groupid", optional=False, pattern=r"[A-Za-z0-9.\-_]+", location="path")
ROLEID = Param("roleid", optional=False, pattern=r"[A-Za-z0-9.\-_]+", location="path")
USER_FIELDS = [Param("comment", max_length=2048), Param("email", max_length=254), Param("enable", "boolean"),
               Param("expire", "integer", minimum=0), Param("firstname"), Param("lastname"),
               Param("groups", format="pve-groupid-list"), Param("keys")]
USER_MODIFY = Permission("User.Modify", "/access/groups")
# Return shapes, as pve-access-control's `PVE/API2/{User,Group,Role,ACL,AccessControl}.pm` answer them.
USER_TEXT = {"firstname": STR, "lastname": STR, "email": STR, "comment": STR, "keys": STR}  # each only where set
TOKEN_INFO = obj({"privsep": BOOL, "expire": INT}, {"comment": STR})
TOKEN_ROW = obj({"tokenid": STR, "privsep": BOOL, "expire": INT}, {"comment": STR})
USER_ROW = obj({"userid": STR, "enable": BOOL, "expire": INT, "realm-type": STR},
               {**USER_TEXT, "groups": STR, "tokens": array(TOKEN_ROW)})  # groups, tokens: with `full`
USER = obj({"enable": BOOL, "expire": INT, "groups": array(STR), "tokens": map_of(TOKEN_INFO)}, USER_TEXT)
GROUP_ROW = obj({"groupid": STR}, {"comment": STR, "users": STR})
GROUP = obj({"members": array(STR)}, {"comment": STR})
ROLE_ROW = obj({"roleid": STR, "privs": STR, "special": BOOL})
PRIVILEGES = obj(optional={priv: BOOL for priv in ALL_PRIVILEGES})  # `{privilege: 1}`
ACL_ROW = obj({"path": STR, "type": {"type": "string", "enum": ["user", "group", "token"]}, "ugid": STR,
               "roleid": STR, "propagate": BOOL})


@API.endpoint("GET", "/version", returns=obj({"version": STR, "release": STR, "repoid": STR}, {"console": STR}))
async def version(ctx: Ctx, p: dict) -> dict:
    """API version details."""
    return {"version": GPVE_VERSION, "release": GPVE_VERSION.rsplit(".", 1)[0], "repoid": "gpve",
            "console": "xtermjs"}


@API.endpoint("GET", "/access", returns=array(obj({"subdir": STR})))
async def access_index(ctx: Ctx, p: dict) -> list:
    """Directory index."""
    return [{"subdir": d} for d in ("users", "groups", "roles", "acl", "domains", "permissions", "password",
                                    "ticket")]


@API.endpoint("GET", "/access/ticket", permission=Permission(check="public"))
async def ticket_dummy(ctx: Ctx, p: dict) -> None:
    """Dummy, so that the path answers GET as Proxmox's does."""
    return None


@API.endpoint(
    "POST", "/access/ticket", permission=Permission(check="public"), rate_class="auth",
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
    return await access.login(ctx, username, p["password"])


@API.endpoint("PUT", "/access/password",
              params=[Param("userid", optional=False, format="pve-userid", max_length=64),
                      Param("password", optional=False, max_length=64), Param("confirmation-password")],
              returns={"type": "null"})
async def change_password(ctx: Ctx, p: dict) -> None:
    """Change a pve-realm user's password (your own, or anyone's with User.Modify; never with a token)."""
    await access.change_password(ctx, p["userid"], p["password"])


# ---- users ------------------------------------------------------------------------------------
def _user_data(record: dict, full: bool) -> dict:
    """A user's settings (Proxmox's `extract_user_data`): with `full`, `groups` (a sorted list) and `tokens`."""
    row = {"enable": record.get("enable", 1), "expire": record.get("expire", 0)}
    for key in USER_TEXT:
        if record.get(key):
            row[key] = record[key]
    if full:
        row["groups"] = sorted(record.get("groups", []))
        row["tokens"] = {t: _token_row(v) for t, v in sorted(record.get("tokens", {}).items())}
    return row


def _token_row(token: dict) -> dict:
    row = {"privsep": token.get("privsep", 1), "expire": token.get("expire", 0)}
    if token.get("comment"):
        row["comment"] = token["comment"]
    return row


@API.endpoint("GET", "/access/users", params=[Param("enabled", "boolean"), Param("full", "boolean", default=0)],
              paged=True, returns=array(USER_ROW))
async def list_users(ctx: Ctx, p: dict) -> list:
    """Users the caller may see (all with User.Modify or Sys.Audit, else only itself); with `full`, `groups` as a
    comma-separated string and `tokens` as a list, as Proxmox lists them."""
    with ctx.node.read() as s:
        see_all = rules.sees_all_users(s, ctx.user)
        users = {k: dict(v) for k, v in s.access.get("user", {}).items()}
        realm_types = {realm: conf["type"] for realm, conf in acc.realms(s).items()}
    users.setdefault("root@pam", dict(acc.ROOT_RECORD))
    rows = []
    for userid, record in sorted(users.items()):
        if not (see_all or userid == ctx.user):
            continue
        row = _user_data(record, bool(p.get("full")))
        if "groups" in row:
            row["groups"] = ",".join(row["groups"])
            row["tokens"] = [{"tokenid": t, **v} for t, v in row["tokens"].items()]
        row.update({"userid": userid, "realm-type": realm_types.get(userid.rsplit("@", 1)[1], "")})
        rows.append(row)
    if "enabled" in p:
        rows = [r for r in rows if r["enable"] == p["enabled"]]
    return rows


@API.endpoint("POST", "/access/users",
              params=[Param("userid", optional=False, format="pve-userid", max_length=64),
                      Param("password", max_length=64), *USER_FIELDS],
              permission=USER_MODIFY, returns={"type": "null"})
async def create_user(ctx: Ctx, p: dict) -> None:
    """Create a user (realm `pve` keeps its password here, hashed with scrypt)."""
    fields = {k: v for k, v in p.items() if k not in ("userid", "password")}
    if "groups" in fields:
        fields["groups"] = split_list(fields["groups"])
    await access.create_user(ctx, p["userid"], fields, p.get("password"))


@API.endpoint("GET", "/access/users/{userid}", params=[USERID], returns=USER)
async def get_user(ctx: Ctx, p: dict) -> dict:
    """A user's settings, `groups` as a list and `tokens` as `{tokenid: {privsep, expire, comment}}` (Proxmox's
    `read_user`; where it sends `null` for a user without tokens, this sends `{}`)."""
    with ctx.node.read() as s:
        rules.check_user_read(s, ctx.user, p["userid"])
        record = s.access.get("user", {}).get(p["userid"])
    if record is None and p["userid"] != "root@pam":
        raise not_found(f"user '{p['userid']}' does not exist")
    return _user_data(record or dict(acc.ROOT_RECORD), True)


@API.endpoint("PUT", "/access/users/{userid}", params=[USERID, *USER_FIELDS, Param("append", "boolean")],
              permission=USER_MODIFY, returns={"type": "null"})
async def update_user(ctx: Ctx, p: dict) -> None:
    """Change a user's settings."""
    fields = {k: v for k, v in p.items() if k not in ("userid", "append")}
    if "groups" in fields:
        fields["groups"] = split_list(fields["groups"])
    await access.update_user(ctx, p["userid"], fields, bool(p.get("append")))


@API.endpoint("DELETE", "/access/users/{userid}", params=[USERID], permission=USER_MODIFY, returns={"type": "null"})
async def delete_user(ctx: Ctx, p: dict) -> None:
    """Delete a user, its tokens and its ACL entries."""
    await access.delete_user(ctx, p["userid"])


# ---- tokens -----------------------------------------------------------------------------------
@API.endpoint("GET", "/access/users/{userid}/token", params=[USERID], returns=array(TOKEN_ROW))
async def list_tokens(ctx: Ctx, p: dict) -> list:
    """A user's API tokens (never their secrets)."""
    access.check_token_rights(ctx, p["userid"])
    with ctx.node.read() as s:
        tokens = dict(s.access.get("user", {}).get(p["userid"], {}).get("tokens", {}))
    return [{"tokenid": t, **_token_row(v)} for t, v in sorted(tokens.items())]


@API.endpoint("GET", "/access/users/{userid}/token/{tokenid}", params=[USERID, TOKENID], returns=TOKEN_INFO)
async def get_token(ctx: Ctx, p: dict) -> dict:
    """One token's settings."""
    access.check_token_rights(ctx, p["userid"])
    with ctx.node.read() as s:
        token = s.access.get("user", {}).get(p["userid"], {}).get("tokens", {}).get(p["tokenid"])
    if token is None:
        raise not_found(f"no such token '{p['tokenid']}' for user '{p['userid']}'")
    return _token_row(token)


TOKEN_FIELDS = [Param("privsep", "boolean", default=1), Param("expire", "integer", minimum=0),
                Param("comment", max_length=2048)]


@API.endpoint("POST", "/access/users/{userid}/token/{tokenid}", params=[USERID, TOKENID, *TOKEN_FIELDS],
              returns=obj({"full-tokenid": STR, "info": TOKEN_INFO, "value": STR}))
async def create_token(ctx: Ctx, p: dict) -> dict:
    """Create an API token; its secret is shown in this answer only."""
    return await access.create_token(ctx, p["userid"], p["tokenid"], p.get("privsep", 1), p.get("expire", 0),
                                     p.get("comment", ""))


@API.endpoint("PUT", "/access/users/{userid}/token/{tokenid}", params=[USERID, TOKENID, *TOKEN_FIELDS],
              returns=TOKEN_INFO)
async def update_token(ctx: Ctx, p: dict) -> dict:
    """Change a token's settings."""
    await access.update_token(ctx, p["userid"], p["tokenid"], p.get("privsep"), p.get("expire"), p.get("comment"))
    return await get_token(ctx, p)


@API.endpoint("DELETE", "/access/users/{userid}/token/{tokenid}", params=[USERID, TOKENID], returns={"type": "null"})
async def delete_token(ctx: Ctx, p: dict) -> None:
    """Revoke a token, at once on every node."""
    await access.delete_token(ctx, p["userid"], p["tokenid"])


# ---- groups and roles -------------------------------------------------------------------------
def _groups(ctx: Ctx) -> dict[str, dict]:
    """Every group as `{"comment"?, "members": [...]}`: a comment only where set, as Proxmox keeps them."""
    with ctx.node.read() as s:
        groups = {k: dict(v) for k, v in s.access.get("group", {}).items()}
        users = {k: list(v.get("groups", [])) for k, v in s.access.get("user", {}).items()}
    out = {}
    for groupid, record in sorted(groups.items()):
        out[groupid] = {"members": sorted(u for u, gs in users.items() if groupid in gs)}
        if record.get("comment"):
            out[groupid]["comment"] = record["comment"]
    return out


@API.endpoint("GET", "/access/groups", returns=array(GROUP_ROW), paged=True)
async def list_groups(ctx: Ctx, p: dict) -> list:
    """Groups where the caller holds User.Modify, Sys.Audit or Group.Allocate on `/access/groups/<group>`, with
    their members as a comma-separated `users` (where there are any)."""
    rows = []
    for groupid, group in _groups(ctx).items():
        if not any(ctx.can(priv, f"/access/groups/{groupid}") for priv in ("User.Modify", "Sys.Audit",
                                                                            "Group.Allocate")):
            continue
        row = {"groupid": groupid, **{k: v for k, v in group.items() if k == "comment"}}
        if group["members"]:
            row["users"] = ",".join(group["members"])
        rows.append(row)
    return rows


@API.endpoint("POST", "/access/groups", params=[Param("groupid", optional=False, pattern=r"[A-Za-z0-9.\-_]+"),
                                                 Param("comment", max_length=2048)],
              permission=Permission("Group.Allocate", "/access/groups"), returns={"type": "null"})
async def create_group(ctx: Ctx, p: dict) -> None:
    """Create a group."""
    await access.set_group(ctx, p["groupid"], p.get("comment", ""), create=True)


@API.endpoint("GET", "/access/groups/{groupid}", params=[GROUPID], returns=GROUP,
              permission=Permission(("Sys.Audit", "Group.Allocate"), "/access/groups"))
async def get_group(ctx: Ctx, p: dict) -> dict:
    """A group's `members` (a list) and comment."""
    group = _groups(ctx).get(p["groupid"])
    if group is None:
        raise not_found(f"group '{p['groupid']}' does not exist")
    return group


@API.endpoint("PUT", "/access/groups/{groupid}", params=[GROUPID, Param("comment", max_length=2048)],
              permission=Permission("Group.Allocate", "/access/groups"), returns={"type": "null"})
async def update_group(ctx: Ctx, p: dict) -> None:
    """Change a group's comment."""
    await access.set_group(ctx, p["groupid"], p.get("comment"))


@API.endpoint("DELETE", "/access/groups/{groupid}", params=[GROUPID],
              permission=Permission("Group.Allocate", "/access/groups"), returns={"type": "null"})
async def delete_group(ctx: Ctx, p: dict) -> None:
    """Delete a group (its members stay)."""
    await access.delete_group(ctx, p["groupid"])


@API.endpoint("GET", "/access/roles", returns=array(ROLE_ROW))
async def list_roles(ctx: Ctx, p: dict) -> list:
    """Built-in (`special: 1`) and custom roles with their privileges as a comma-separated `privs`."""
    with ctx.node.read() as s:
        custom = {k: list(v) for k, v in s.access.get("role", {}).items()}
    rows = [{"roleid": r, "privs": ",".join(sorted(privs)), "special": 1} for r, privs in BUILTIN_ROLES.items()]
    rows += [{"roleid": r, "privs": ",".join(sorted(privs)), "special": 0} for r, privs in sorted(custom.items())]
    return rows


@API.endpoint("POST", "/access/roles", params=[Param("roleid", optional=False, pattern=r"[A-Za-z0-9.\-_]+"),
                                                Param("privs")],
              permission=Permission("Sys.Modify", "/access"), returns={"type": "null"})
async def create_role(ctx: Ctx, p: dict) -> None:
    """Create a role from privileges."""
    await access.set_role(ctx, p["roleid"], split_list(p.get("privs")), create=True)


@API.endpoint("GET", "/access/roles/{roleid}", params=[ROLEID], returns=PRIVILEGES)
async def get_role(ctx: Ctx, p: dict) -> dict:
    """A role's privileges, as `{privilege: 1}`."""
    with ctx.node.read() as s:
        known = p["roleid"] in BUILTIN_ROLES or p["roleid"] in s.access.get("role", {})
        privs = role_privileges(s, p["roleid"])
    if not known:
        raise not_found(f"role '{p['roleid']}' does not exist")
    return {priv: 1 for priv in sorted(privs)}


@API.endpoint("PUT", "/access/roles/{roleid}", params=[ROLEID, Param("privs"), Param("append", "boolean")],
              permission=Permission("Sys.Modify", "/access"), returns={"type": "null"})
async def update_role(ctx: Ctx, p: dict) -> None:
    """Change a custom role's privileges."""
    await access.set_role(ctx, p["roleid"], split_list(p.get("privs")), append=bool(p.get("append")))


@API.endpoint("DELETE", "/access/roles/{roleid}", params=[ROLEID], permission=Permission("Sys.Modify", "/access"),
              returns={"type": "null"})
async def delete_role(ctx: Ctx, p: dict) -> None:
    """Delete a custom role (and the ACL entries using it)."""
    await access.delete_role(ctx, p["roleid"])


# ---- ACL and permissions ----------------------------------------------------------------------
@API.endpoint("GET", "/access/acl", returns=array(ACL_ROW), paged=True)
async def list_acl(ctx: Ctx, p: dict) -> list:
    """ACL entries on paths where the caller holds Sys.Audit or Permissions.Modify."""
    with ctx.node.read() as s:
        acl = {k: [dict(e) for e in v] for k, v in s.access.get("acl", {}).items()}
    rows = []
    for path, entries in sorted(acl.items()):
        if not (ctx.can("Sys.Audit", path) or ctx.can("Permissions.Modify", path)):
            continue
        rows += [{"path": path, "type": e["type"], "ugid": e["ugid"], "roleid": e["roleid"],
                  "propagate": e["propagate"]} for e in entries]
    return rows


@API.endpoint("PUT", "/access/acl",
              params=[Param("path", optional=False), Param("roles", optional=False, format="pve-roleid-list"),
                      Param("users", format="pve-userid-list"), Param("groups", format="pve-groupid-list"),
                      Param("tokens", format="pve-tokenid-list"), Param("propagate", "boolean", default=1),
                      Param("delete", "boolean", default=0)],
              permission=Permission("Permissions.Modify", "{path}"), returns={"type": "null"})
async def update_acl(ctx: Ctx, p: dict) -> None:
    """Grant (or with `delete`, revoke) roles on a path."""
    await access.change_acl(ctx, p["path"], split_list(p["roles"]), split_list(p.get("users")),
                            split_list(p.get("groups")), split_list(p.get("tokens")), bool(p.get("propagate", 1)),
                            bool(p.get("delete")))


@API.endpoint("GET", "/access/permissions", params=[Param("userid"), Param("path")], returns=map_of(PRIVILEGES))
async def permissions(ctx: Ctx, p: dict) -> dict:
    """What a user (by default the caller) holds: `{path: {privilege: 1}}`."""
    subject = p.get("userid") or ctx.user
    with ctx.node.read() as s:
        rules.check_permissions_read(s, ctx.user, subject)
        paths = [p["path"]] if p.get("path") else sorted({"/", "/access", "/nodes", "/storage", "/vms", "/sdn",
                                                            "/mapping", *s.access.get("acl", {}),
                                                            *(f"/vms/{v}" for v in s.guests)})
        out = {path: {priv: 1 for priv in sorted(privileges_on(s, subject, path))} for path in paths}
    return {path: privs for path, privs in out.items() if privs or p.get("path")}

