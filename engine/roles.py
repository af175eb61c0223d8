"""Privileges, Proxmox's built-in roles, and who may do what where (pure, over the state).

Evaluation follows Proxmox: walk the ACL path from `/` down; at each level, entries for the user
(or token) override those for its groups, and a level with entries replaces what the levels above
gave; entries above the target count only with `propagate`. `NoAccess` removes everything. A
guest or storage in a pool also gets what `/pool/<pool>` grants. A token with `privsep` gets the intersection
of its own ACLs and its user's privileges.
"""

from __future__ import annotations

VM_PRIVS = (
    "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Cloudinit",
    "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options",
    "VM.Console", "VM.GuestAgent.Audit", "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite", "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.PowerMgmt", "VM.Replicate",
    "VM.Snapshot", "VM.Snapshot.Rollback",
)
DATASTORE_PRIVS = ("Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit")
SYS_PRIVS = ("Sys.AccessNetwork", "Sys.Audit", "Sys.Console", "Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt",
             "Sys.Syslog")
ACCESS_PRIVS = ("Group.Allocate", "Realm.Allocate", "Realm.AllocateUser", "User.Modify")
SDN_PRIVS = ("SDN.Allocate", "SDN.Audit", "SDN.Use")
MAPPING_PRIVS = ("Mapping.Audit", "Mapping.Modify", "Mapping.Use")
POOL_PRIVS = ("Pool.Allocate", "Pool.Audit")
# gpve's own (issue 17): vClusters on `/vclusters/{id}` (`/vclusters` for creating one); Audit reads one, Allocate
# creates and deletes, Modify scales and reads its kubeconfig (the cluster's admin credentials)
VCLUSTER_PRIVS = ("VCluster.Allocate", "VCluster.Audit", "VCluster.Modify")

ALL_PRIVILEGES = tuple(sorted(set(VM_PRIVS + DATASTORE_PRIVS + SYS_PRIVS + ACCESS_PRIVS + SDN_PRIVS + MAPPING_PRIVS
                                  + POOL_PRIVS + VCLUSTER_PRIVS + ("Permissions.Modify",))))

_AUDIT = ("Datastore.Audit", "Mapping.Audit", "Pool.Audit", "SDN.Audit", "Sys.Audit", "VCluster.Audit", "VM.Audit",
          "VM.GuestAgent.Audit")
_VM_USER = ("VM.Audit", "VM.Console", "VM.Backup", "VM.PowerMgmt", "VM.Config.CDROM", "VM.Config.Cloudinit",
            "VM.GuestAgent.Audit", "VM.Snapshot", "VM.Snapshot.Rollback")
BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "Administrator": ALL_PRIVILEGES,
    "NoAccess": (),
    "PVEAdmin": tuple(p for p in ALL_PRIVILEGES if p not in ("Permissions.Modify", "Realm.Allocate",
                                                             "Sys.Modify", "Sys.PowerMgmt", "Sys.Incoming")),
    "PVEAuditor": _AUDIT,
    "PVEDatastoreAdmin": ("Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate",
                          "Datastore.Audit"),
    "PVEDatastoreUser": ("Datastore.AllocateSpace", "Datastore.Audit"),
    "PVEMappingAdmin": MAPPING_PRIVS,
    "PVEMappingUser": ("Mapping.Audit", "Mapping.Use"),
    "PVEPoolAdmin": ("Pool.Allocate", "Pool.Audit"),
    "PVEPoolUser": ("Pool.Audit",),
    "PVESDNAdmin": SDN_PRIVS,
    "PVESDNUser": ("SDN.Audit", "SDN.Use"),
    "PVESysAdmin": ("Sys.AccessNetwork", "Sys.Audit", "Sys.Console", "Sys.Syslog", "Permissions.Modify"),
    "PVETemplateUser": ("VM.Clone", "VM.Audit"),
    "PVEUserAdmin": ("User.Modify", "Group.Allocate", "Realm.AllocateUser", "Sys.Audit"),
    "PVEVMAdmin": VM_PRIVS,
    "PVEVMUser": _VM_USER,
}

CAP_GROUPS = {
    "vms": VM_PRIVS + ("Permissions.Modify",),
    "storage": DATASTORE_PRIVS + ("Permissions.Modify",),
    "access": ACCESS_PRIVS + ("Permissions.Modify",),
    "nodes": SYS_PRIVS + ("Permissions.Modify",),
    "dc": ("Sys.Audit", "Sys.Modify") + SDN_PRIVS,
    "sdn": SDN_PRIVS + ("Permissions.Modify",),
    "mapping": MAPPING_PRIVS + ("Permissions.Modify",),
}
CAP_PATHS = {"vms": "/vms", "storage": "/storage", "access": "/access", "nodes": "/nodes", "dc": "/",
             "sdn": "/sdn", "mapping": "/mapping"}


def role_privileges(state, roleid: str) -> frozenset[str]:
    if roleid in BUILTIN_ROLES:
        return frozenset(BUILTIN_ROLES[roleid])
    return frozenset(state.access.get("role", {}).get(roleid, ()))


def _prefixes(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _roles_on(state, subject: str, groups: list[str], path: str, own_type: str, below: bool = False) -> set[str]:
    acl = state.access.get("acl", {})
    roles: set[str] = set()
    for prefix in _prefixes(path):
        final = prefix == path and not below
        entries = [e for e in acl.get(prefix, []) if e["propagate"] or final]
        mine = {e["roleid"] for e in entries if e["type"] == own_type and e["ugid"] == subject}
        if mine:
            roles = mine
            continue
        theirs = {e["roleid"] for e in entries if e["type"] == "group" and e["ugid"] in groups}
        if theirs and own_type == "user":
            roles = theirs
    return set() if "NoAccess" in roles else roles


def _privileges_at(state, user: str, path: str, below: bool = False) -> frozenset[str]:
    name, _, tokenid = user.partition("!")
    if name == "root@pam" and not tokenid:
        return frozenset(ALL_PRIVILEGES)
    record = state.access.get("user", {}).get(name)
    groups = (record or {}).get("groups", [])
    if name == "root@pam":
        user_privs = frozenset(ALL_PRIVILEGES)
    else:
        user_privs = frozenset().union(*[role_privileges(state, r) for r in _roles_on(state, name, groups, path,
                                                                                     "user", below)])
    if not tokenid:
        return user_privs
    token = (record or {}).get("tokens", {}).get(tokenid)
    if token is None:
        return frozenset()
    if not token.get("privsep", 1):
        return user_privs
    own = frozenset().union(*[role_privileges(state, r) for r in _roles_on(state, user, [], path, "token", below)])
    return own & user_privs


def privileges_on(state, user: str, path: str) -> frozenset[str]:
    """What `user` (or `user@realm!token`) may do on ACL `path`."""
    privs = _privileges_at(state, user, path)
    if path.startswith("/vms/"):
        vmid = path.split("/")[2]
        for poolid, pool in sorted(state.access.get("pool", {}).items()):
            if vmid.isdigit() and int(vmid) in pool.get("vms", []):
                privs |= _privileges_at(state, user, f"/pool/{poolid}")
    elif path.startswith("/storage/") and path.count("/") == 2:  # Proxmox's pool roles: the storage's own path
        for poolid, pool in sorted(state.access.get("pool", {}).items()):
            if path[len("/storage/"):] in pool.get("storage", []):
                privs |= _privileges_at(state, user, f"/pool/{poolid}")
    return privs


def privileges_below(state, user: str, path: str) -> frozenset[str]:
    """What `user` holds on any path directly under `path` (`/vms` → `/vms/100`) that has no ACL entries of its
    own and is in no pool: `privileges_on` of such a path, computed once for all of them (only entries with
    `propagate` count, at `path` too)."""
    return _privileges_at(state, user, path, below=True)


def capabilities(state, user: str) -> dict[str, dict[str, int]]:
    """The `cap` object of the login answer: what the user holds in each area."""
    caps = {}
    for group, privs in CAP_GROUPS.items():
        held = privileges_on(state, user, CAP_PATHS[group])
        if group == "vms":  # privileges held on some guest count too, as the UI needs them
            for vmid in sorted(state.guests):
                held |= privileges_on(state, user, f"/vms/{vmid}")
        caps[group] = {p: 1 for p in privs if p in held}
    return caps


def user_active(state, user: str, now: float) -> bool:
    """The user (and token) exists, is enabled and has not expired at `now` (seconds since the epoch)."""
    name, _, tokenid = user.partition("!")
    record = state.access.get("user", {}).get(name)
    if record is None:
        return name == "root@pam" and not tokenid
    if not record.get("enable", 1):
        return False
    if record.get("expire") and record["expire"] < now:
        return False
    if tokenid:
        token = record.get("tokens", {}).get(tokenid)
        if token is None or (token.get("expire") and token["expire"] < now):
            return False
    return True
