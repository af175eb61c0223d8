"""Users, groups, roles, ACLs, pools, API tokens and realms: Proxmox's access control, as log commands.

Secrets never enter the log in clear: passwords arrive scrypt-hashed and token secrets SHA-256
hashed, both made by the proposer.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from engine.commands import Command
from engine.decide import Decision, decide
from engine.errors import Rejection, bad_request, conflict, not_found
from engine.events import Event
from engine.state import State, apply

USERID = re.compile(r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+")
TOKENID = re.compile(r"[A-Za-z][A-Za-z0-9.\-_]+")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9.\-_]+")
ROOT_RECORD = {"enable": 1, "expire": 0, "groups": [], "tokens": {}}  # a new user, and root@pam's defaults
# The realms every Proxmox cluster has, with the comments its domains.cfg parser gives them when unset
# (pve-access-control `PVE::Auth::Plugin::parse_config`); the log keeps only what was changed.
BUILTIN_REALMS = {"pam": {"type": "pam", "comment": "Linux PAM standard authentication", "plugin": "PVE::Auth::PAM"},
                  "pve": {"type": "pve", "comment": "Proxmox VE authentication server"}}
REALM_OPTIONS = ("comment", "default", "tfa")  # the options of realm types pam and pve (`PVE::Auth::PVE::options`)
_SEG = r"[A-Za-z0-9.\-_]+"
# The paths an ACL may name: pve-access-control's `check_path` whitelist, and gpve's `/vclusters` (its ids:
# engine/vclusters.py `VC_ID`)
ACL_PATH = re.compile("|".join([
    "/", "/access", "/access/groups", f"/access/groups/{_SEG}", "/access/realm", f"/access/realm/{_SEG}",
    "/mapping", f"/mapping/{_SEG}", f"/mapping/{_SEG}/{_SEG}", "/nodes", f"/nodes/{_SEG}",
    "/pool", f"/pool/{_SEG}(/{_SEG}){{0,2}}", "/sdn", f"/sdn/(controllers|dns|ipams|zones|vnets)(/{_SEG})?",
    f"/sdn/zones/{_SEG}/{_SEG}(/[1-9][0-9]{{0,3}})?", "/storage", f"/storage/{_SEG}", "/vms", "/vms/[1-9][0-9]{2,}",
    "/vclusters", "/vclusters/vc-[a-z0-9]{4,32}"]))


def normalize_acl_path(path: str) -> str:
    """An ACL path as pve-access-control's `normalize_path` writes it: runs of `/` as one, no trailing `/`, a
    leading `/`. `check_path` (ACL_PATH) then decides whether it may be used."""
    path = re.sub(r"/+", "/", path).rstrip("/")
    return "/" + path.lstrip("/") if path else "/"


# ---- commands ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SetUser(Command):
    """Create (`create=True`) or change a user; `fields` holds what is given, `password_hash` if set."""

    TYPE = "access.set_user"
    userid: str
    create: bool = False
    fields: dict = field(default_factory=dict)
    password_hash: str | None = None
    append_groups: bool = False


@dataclass(frozen=True, kw_only=True)
class DeleteUser(Command):
    TYPE = "access.delete_user"
    userid: str


@dataclass(frozen=True, kw_only=True)
class SetGroup(Command):
    TYPE = "access.set_group"
    groupid: str
    create: bool = False
    comment: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteGroup(Command):
    TYPE = "access.delete_group"
    groupid: str


@dataclass(frozen=True, kw_only=True)
class SetRole(Command):
    TYPE = "access.set_role"
    roleid: str
    privs: list = field(default_factory=list)
    create: bool = False
    append: bool = False


@dataclass(frozen=True, kw_only=True)
class DeleteRole(Command):
    TYPE = "access.delete_role"
    roleid: str


@dataclass(frozen=True, kw_only=True)
class ChangeAcl(Command):
    """Add (or with `delete`, remove) roles on a path for users, groups and tokens."""

    TYPE = "access.change_acl"
    path: str
    roles: list = field(default_factory=list)
    users: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    propagate: bool = True
    delete: bool = False


@dataclass(frozen=True, kw_only=True)
class SetPool(Command):
    TYPE = "access.set_pool"
    poolid: str
    create: bool = False
    comment: str | None = None
    vms: list = field(default_factory=list)
    storage: list = field(default_factory=list)
    remove: bool = False
    allow_move: bool = False  # a guest in another pool moves here (Proxmox's `allow-move`)


@dataclass(frozen=True, kw_only=True)
class DeletePool(Command):
    TYPE = "access.delete_pool"
    poolid: str


@dataclass(frozen=True, kw_only=True)
class SetToken(Command):
    TYPE = "access.set_token"
    userid: str
    tokenid: str
    create: bool = False
    secret_hash: str | None = None
    privsep: bool | None = None
    expire: int | None = None
    comment: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeleteToken(Command):
    TYPE = "access.delete_token"
    userid: str
    tokenid: str


@dataclass(frozen=True, kw_only=True)
class SetRealm(Command):
    """Change realm `realm`'s settings (`PUT /access/domains/{realm}`): `fields` set (comment, default), `delete`
    names settings to drop, `digest` (of all realms, as `GET /access/domains/{realm}` answers it) guards."""

    TYPE = "access.set_realm"
    realm: str
    fields: dict = field(default_factory=dict)
    delete: list = field(default_factory=list)
    digest: str | None = None


# ---- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class AccessChanged(Event):
    """The new value of one access-control record (None: removed). `kind`: user|group|role|pool|acl|realm."""

    TYPE = "access.changed"
    kind: str
    key: str
    value: dict | list | None


@apply.register
def _(e: AccessChanged, s: State) -> State:
    table = s.access.setdefault(e.kind, {})
    if e.value is None:
        table.pop(e.key, None)
    else:
        table[e.key] = e.value
    return s


def _changed(kind: str, key: str, value) -> AccessChanged:
    return AccessChanged(kind=kind, key=key, value=value)


def _table(s: State, kind: str) -> dict:
    return s.access.get(kind, {})


def pool_with_guest(s: State, poolid: str, vmid: int) -> AccessChanged:
    """The event adding guest `vmid` to pool `poolid` (404 when the pool does not exist)."""
    pool = _table(s, "pool").get(poolid)
    if pool is None:
        raise not_found(f"pool '{poolid}' does not exist")
    return _changed("pool", poolid, {**pool, "vms": sorted(set(pool["vms"]) | {vmid})})


def realms(s: State) -> dict[str, dict]:
    """Every realm's settings: the built-in ones' defaults under what the log changed."""
    stored = _table(s, "realm")
    out = {}
    for realm in sorted(set(BUILTIN_REALMS) | set(stored)):
        merged = {**BUILTIN_REALMS.get(realm, {}), **stored.get(realm, {})}
        if not merged.get("comment") and realm in BUILTIN_REALMS:
            merged["comment"] = BUILTIN_REALMS[realm]["comment"]
        out[realm] = merged
    return out


def realms_digest(s: State) -> str:
    """The SHA-1 of every realm's settings, rendered one per line: Proxmox's domains.cfg digest, in spirit."""
    text = "".join(f"{r}:{k}={v}\n" for r, conf in realms(s).items() for k, v in sorted(conf.items()))
    return hashlib.sha1(text.encode()).hexdigest()


def check_new_realm(s: State, realm: str, realm_type: str) -> None:
    """`POST /access/domains` (pve-access-control `PVE::API2::Domains::create`): 409 for a realm that exists, 400
    for the reserved names and the built-in types. Nothing else can be created yet; the caller refuses the rest."""
    if realm in realms(s):
        raise conflict(f"domain '{realm}' already exists")
    if realm in BUILTIN_REALMS:
        raise bad_request(f"unable to use reserved name '{realm}'")
    if realm_type in BUILTIN_REALMS:
        raise bad_request(f"unable to create builtin type '{realm_type}'")


# ---- decide ------------------------------------------------------------------------------------
@decide.register
def _(c: SetUser, s: State) -> Decision:
    users = _table(s, "user")
    if not USERID.fullmatch(c.userid) or len(c.userid) > 64:
        raise bad_request("Parameter verification failed", {"userid": "value does not look like a valid user ID"})
    realm = c.userid.rsplit("@", 1)[1]
    if realm not in ("pam", "pve"):
        raise bad_request("Parameter verification failed", {"userid": f"unknown realm '{realm}'"})
    if c.create and c.userid in users:
        raise conflict(f"create user failed: user '{c.userid}' already exists")
    if not c.create and c.userid not in users and c.userid != "root@pam":  # root@pam always exists
        raise not_found(f"user '{c.userid}' does not exist")
    user = dict(users.get(c.userid, ROOT_RECORD))
    events: list[Event] = []
    fields = dict(c.fields)
    if c.userid == "root@pam" and (fields.get("enable", 1) == 0 or fields.get("expire")):
        raise bad_request("refusing to disable root@pam: it is the way back in")
    if "groups" in fields:
        groups = [g for g in fields.pop("groups") if g]
        unknown = [g for g in groups if g not in _table(s, "group")]
        if unknown:
            raise bad_request(f"group '{unknown[0]}' does not exist")
        user["groups"] = sorted(set(user["groups"]) | set(groups)) if c.append_groups else sorted(set(groups))
    user.update(fields)
    if c.password_hash is not None:
        if realm != "pve":
            raise bad_request(f"changing the password of a {realm} user is not supported here")
        user["password"] = c.password_hash
    events.append(_changed("user", c.userid, user))
    return events, {}


@decide.register
def _(c: DeleteUser, s: State) -> Decision:
    if c.userid == "root@pam":
        raise bad_request("refusing to delete root@pam")
    if c.userid not in _table(s, "user"):
        raise not_found(f"user '{c.userid}' does not exist")
    events: list[Event] = [_changed("user", c.userid, None)]
    prefix = c.userid + "!"
    for path, entries in sorted(_table(s, "acl").items()):
        kept = [e for e in entries if e["ugid"] != c.userid and not e["ugid"].startswith(prefix)]
        if kept != entries:
            events.append(_changed("acl", path, kept or None))
    return events, {}


@decide.register
def _(c: SetGroup, s: State) -> Decision:
    groups = _table(s, "group")
    if not NAME.fullmatch(c.groupid):
        raise bad_request("Parameter verification failed", {"groupid": "value does not look like a valid group ID"})
    if c.create and c.groupid in groups:
        raise conflict(f"create group failed: group '{c.groupid}' already exists")
    if not c.create and c.groupid not in groups:
        raise not_found(f"group '{c.groupid}' does not exist")
    group = dict(groups.get(c.groupid, {"comment": ""}))
    if c.comment is not None:
        group["comment"] = c.comment
    return [_changed("group", c.groupid, group)], {}


@decide.register
def _(c: DeleteGroup, s: State) -> Decision:
    if c.groupid not in _table(s, "group"):
        raise not_found(f"group '{c.groupid}' does not exist")
    events: list[Event] = [_changed("group", c.groupid, None)]
    for userid, user in sorted(_table(s, "user").items()):
        if c.groupid in user.get("groups", []):
            events.append(_changed("user", userid, {**user, "groups": [g for g in user["groups"] if g != c.groupid]}))
    for path, entries in sorted(_table(s, "acl").items()):
        kept = [e for e in entries if not (e["type"] == "group" and e["ugid"] == c.groupid)]
        if kept != entries:
            events.append(_changed("acl", path, kept or None))
    return events, {}


@decide.register
def _(c: SetRole, s: State) -> Decision:
    from engine.roles import ALL_PRIVILEGES, BUILTIN_ROLES

    if c.roleid in BUILTIN_ROLES:
        raise bad_request(f"cannot modify built-in role '{c.roleid}'")
    roles = _table(s, "role")
    if c.create and c.roleid in roles:
        raise conflict(f"role '{c.roleid}' already exists")
    if not c.create and c.roleid not in roles:
        raise not_found(f"role '{c.roleid}' does not exist")
    unknown = [p for p in c.privs if p not in ALL_PRIVILEGES]
    if unknown:
        raise bad_request("Parameter verification failed", {"privs": f"invalid privilege name '{unknown[0]}'"})
    privs = set(c.privs) | (set(roles.get(c.roleid, [])) if c.append else set())
    return [_changed("role", c.roleid, sorted(privs))], {}


@decide.register
def _(c: DeleteRole, s: State) -> Decision:
    if c.roleid not in _table(s, "role"):
        raise not_found(f"role '{c.roleid}' does not exist")
    events: list[Event] = [_changed("role", c.roleid, None)]
    for path, entries in sorted(_table(s, "acl").items()):
        kept = [e for e in entries if e["roleid"] != c.roleid]
        if kept != entries:
            events.append(_changed("acl", path, kept or None))
    return events, {}


@decide.register
def _(c: ChangeAcl, s: State) -> Decision:
    from engine.roles import BUILTIN_ROLES

    if not ACL_PATH.fullmatch(c.path):
        raise bad_request("Parameter verification failed", {"path": f"invalid ACL path '{c.path}'"})
    for role in c.roles:
        if role not in BUILTIN_ROLES and role not in _table(s, "role"):
            raise bad_request(f"role '{role}' does not exist")
    subjects = [("user", u) for u in c.users] + [("group", g) for g in c.groups] + [("token", t) for t in c.tokens]
    for kind, ugid in subjects:
        if c.delete:
            continue
        if kind == "user" and ugid not in _table(s, "user") and ugid != "root@pam":
            raise bad_request(f"user '{ugid}' does not exist")
        if kind == "group" and ugid not in _table(s, "group"):
            raise bad_request(f"group '{ugid}' does not exist")
        if kind == "token":
            userid, _, tokenid = ugid.partition("!")
            if tokenid not in _table(s, "user").get(userid, {}).get("tokens", {}):
                raise bad_request(f"token '{ugid}' does not exist")
    entries = [dict(e) for e in _table(s, "acl").get(c.path, [])]
    for kind, ugid in subjects:
        for role in c.roles:
            entries = [e for e in entries if not (e["type"] == kind and e["ugid"] == ugid and e["roleid"] == role)]
            if not c.delete:
                entries.append({"type": kind, "ugid": ugid, "roleid": role, "propagate": int(c.propagate)})
    entries.sort(key=lambda e: (e["type"], e["ugid"], e["roleid"]))
    return [_changed("acl", c.path, entries or None)], {}


@decide.register
def _(c: SetPool, s: State) -> Decision:
    pools = _table(s, "pool")
    if not NAME.fullmatch(c.poolid):
        raise bad_request("Parameter verification failed", {"poolid": "value does not look like a valid pool ID"})
    if c.create and c.poolid in pools:
        raise conflict(f"pool '{c.poolid}' already exists")
    if not c.create and c.poolid not in pools:
        raise not_found(f"pool '{c.poolid}' does not exist")
    pool = dict(pools.get(c.poolid, {"comment": "", "vms": [], "storage": []}))
    if c.comment is not None:
        pool["comment"] = c.comment
    vms = set(pool["vms"])
    moved: dict[str, set[int]] = {}
    for vmid in c.vms:
        if c.remove:
            vms.discard(vmid)
            continue
        if vmid not in s.guests:
            raise bad_request(f"VM {vmid} does not exist")
        other = next((p for p, v in sorted(pools.items()) if vmid in v["vms"] and p != c.poolid), None)
        if other and not c.allow_move:
            raise conflict(f"VM {vmid} belongs already to pool '{other}'")
        if other:
            moved.setdefault(other, set()).add(vmid)
        vms.add(vmid)
    storage = set(pool["storage"]) - set(c.storage) if c.remove else set(pool["storage"]) | set(c.storage)
    pool.update(vms=sorted(vms), storage=sorted(storage))
    left = [_changed("pool", p, {**pools[p], "vms": [v for v in pools[p]["vms"] if v not in gone]})
            for p, gone in sorted(moved.items())]
    return [*left, _changed("pool", c.poolid, pool)], {}


@decide.register
def _(c: DeletePool, s: State) -> Decision:
    pool = _table(s, "pool").get(c.poolid)
    if pool is None:
        raise not_found(f"pool '{c.poolid}' does not exist")
    if pool["vms"] or pool["storage"]:
        raise Rejection(400, f"pool '{c.poolid}' is not empty")
    return [_changed("pool", c.poolid, None)], {}


@decide.register
def _(c: SetToken, s: State) -> Decision:
    user = _table(s, "user").get(c.userid) or (dict(ROOT_RECORD) if c.userid == "root@pam" else None)
    if user is None:
        raise not_found(f"user '{c.userid}' does not exist")
    if not TOKENID.fullmatch(c.tokenid):
        raise bad_request("Parameter verification failed", {"tokenid": "value does not look like a valid token ID"})
    tokens = dict(user.get("tokens", {}))
    if c.create and c.tokenid in tokens:
        raise conflict(f"Token '{c.tokenid}' for user '{c.userid}' already exists.")
    if not c.create and c.tokenid not in tokens:
        raise not_found(f"no such token '{c.tokenid}' for user '{c.userid}'")
    token = dict(tokens.get(c.tokenid, {"privsep": 1, "expire": 0, "comment": ""}))
    for key, value in (("privsep", c.privsep), ("expire", c.expire), ("comment", c.comment),
                       ("secret", c.secret_hash)):
        if value is not None:
            token[key] = int(value) if key == "privsep" else value
    tokens[c.tokenid] = token
    return [_changed("user", c.userid, {**user, "tokens": tokens})], {}


@decide.register
def _(c: DeleteToken, s: State) -> Decision:
    user = _table(s, "user").get(c.userid)
    if user is None or c.tokenid not in user.get("tokens", {}):
        raise not_found(f"no such token '{c.tokenid}' for user '{c.userid}'")
    tokens = {k: v for k, v in user["tokens"].items() if k != c.tokenid}
    full = f"{c.userid}!{c.tokenid}"
    events: list[Event] = [_changed("user", c.userid, {**user, "tokens": tokens})]
    for path, entries in sorted(_table(s, "acl").items()):
        kept = [e for e in entries if e["ugid"] != full]
        if kept != entries:
            events.append(_changed("acl", path, kept or None))
    return events, {}


@decide.register
def _(c: SetRealm, s: State) -> Decision:
    """As `PVE::API2::Domains::update`: the digest first, 404 for an unknown realm, `no options specified` when
    nothing changes; `default=1` moves the default marker here from every other realm."""
    if c.digest and c.digest != realms_digest(s):
        raise bad_request("detected modified configuration - file changed by other user? Try again.")
    current = realms(s)
    if c.realm not in current:
        raise not_found(f"domain '{c.realm}' does not exist")
    if not c.fields and not c.delete:
        raise bad_request("no options specified")
    unknown = sorted(k for k in c.fields if k not in REALM_OPTIONS)
    if unknown:
        raise bad_request("Parameter verification failed", {unknown[0]: f"unexpected property '{unknown[0]}'"})
    stored = _table(s, "realm")
    conf = {k: v for k, v in stored.get(c.realm, {}).items() if k not in c.delete}
    conf.update(c.fields)
    events: list[Event] = []
    if conf.get("default"):
        for other, settings in sorted(stored.items()):
            if other != c.realm and settings.get("default"):
                events.append(_changed("realm", other, {k: v for k, v in settings.items() if k != "default"}))
    events.append(_changed("realm", c.realm, conf))
    return events, {}
