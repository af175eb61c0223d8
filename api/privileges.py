"""Proxmox's privileges, and the `cap` groups the login answer reports them in."""

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

ALL_PRIVILEGES = tuple(sorted(set(VM_PRIVS + DATASTORE_PRIVS + SYS_PRIVS + ACCESS_PRIVS + SDN_PRIVS + MAPPING_PRIVS
                                  + POOL_PRIVS + ("Permissions.Modify",))))

CAP_GROUPS = {
    "vms": VM_PRIVS + ("Permissions.Modify",),
    "storage": DATASTORE_PRIVS + ("Permissions.Modify",),
    "access": ACCESS_PRIVS + ("Permissions.Modify",),
    "nodes": SYS_PRIVS + ("Permissions.Modify",),
    "dc": ("Sys.Audit", "Sys.Modify") + SDN_PRIVS,
    "sdn": SDN_PRIVS + ("Permissions.Modify",),
    "mapping": MAPPING_PRIVS + ("Permissions.Modify",),
}


def privileges_on(user: str, path: str) -> frozenset[str]:
    """What `user` may do on ACL `path`. root@pam holds every privilege everywhere."""
    if user == "root@pam":
        return frozenset(ALL_PRIVILEGES)
    return frozenset()


def capabilities(user: str) -> dict[str, dict[str, int]]:
    paths = {"vms": "/vms", "storage": "/storage", "access": "/access", "nodes": "/nodes", "dc": "/",
             "sdn": "/sdn", "mapping": "/mapping"}
    caps = {}
    for group, privs in CAP_GROUPS.items():
        held = privileges_on(user, paths[group])
        caps[group] = {p: 1 for p in privs if p in held}
    return caps
