"""Access-control requests of the simulated clients, through the access services (`api/services/access.py`, what
`/access/...` and `/pools` call), on small name pools so that they collide: users, groups, custom roles, ACLs,
pools and tokens, created, changed and deleted concurrently, with ACLs and pools naming guests that come and go.
Users get no password (the services would hash it with scrypt, in a thread: slow, and the simulation runs no
threads); token requests come from root or from a user, whose rights to the token's user the service checks."""

from __future__ import annotations

from api.services import access
from sim.node import ROOT

USERS = ("ann@pve", "bob@pve", "cy@pam")
GROUPS = ("ops", "dev")
ROLES = ("Operator", "Viewer")
POOLS = ("team", "lab")
TOKENS = ("ci", "tf")
PRIVS = ("VM.Audit", "VM.PowerMgmt", "VM.Console", "VM.Config.Memory", "Datastore.Audit")
BUILTIN = ("PVEVMUser", "PVEAuditor", "NoAccess")
ACCESS_OPS = ("user", "deluser", "group", "delgroup", "role", "delrole", "acl", "pool", "delpool", "token",
              "deltoken")


class AccessOps:
    """Mixed into `sim.workload.Client` (which provides `rng`, `call`, `vmid`, `known_guest`)."""

    def op_user(self) -> None:
        userid, groups = self.rng.choice(USERS), sorted(self.rng.sample(GROUPS, self.rng.randint(0, 2)))
        create, append = self.rng.random() < 0.5, self.rng.random() < 0.5
        fields = {"groups": groups, "comment": f"c{self.cid}"}
        if create:
            self.call(lambda node: lambda ctx: access.create_user(ctx, userid, dict(fields)))
        else:
            self.call(lambda node: lambda ctx: access.update_user(ctx, userid, dict(fields), append_groups=append))

    def op_deluser(self) -> None:
        userid = self.rng.choice(USERS)
        self.call(lambda node: lambda ctx: access.delete_user(ctx, userid))

    def op_group(self) -> None:
        groupid = self.rng.choice(GROUPS)
        self.call(lambda node: lambda ctx: access.set_group(ctx, groupid, "", create=True))

    def op_delgroup(self) -> None:
        groupid = self.rng.choice(GROUPS)
        self.call(lambda node: lambda ctx: access.delete_group(ctx, groupid))

    def op_role(self) -> None:
        roleid, privs = self.rng.choice(ROLES), sorted(self.rng.sample(PRIVS, 2))
        create = self.rng.random() < 0.6
        self.call(lambda node: lambda ctx: access.set_role(ctx, roleid, privs, create=create, append=not create))

    def op_delrole(self) -> None:
        roleid = self.rng.choice(ROLES)
        self.call(lambda node: lambda ctx: access.delete_role(ctx, roleid))

    def op_acl(self) -> None:
        roles, delete = [self.rng.choice(ROLES + BUILTIN)], self.rng.random() < 0.3
        kind = self.rng.choice(("users", "groups", "tokens"))
        subject = {"users": lambda: self.rng.choice(USERS), "groups": lambda: self.rng.choice(GROUPS),
                   "tokens": lambda: f"{self.rng.choice(USERS)}!{self.rng.choice(TOKENS)}"}[kind]()
        where = self.rng.choice(("/", "vm", "vm", "pool"))
        subjects = {k: [subject] if k == kind else [] for k in ("users", "groups", "tokens")}

        def build(node):
            path = {"/": "/", "vm": f"/vms/{self.known_guest(node)[0]}",
                    "pool": f"/pool/{self.rng.choice(POOLS)}"}[where]
            propagate = self.rng.random() < 0.5
            return lambda ctx: access.change_acl(ctx, path, roles, propagate=propagate, delete=delete, **subjects)
        self.call(build)

    def op_pool(self) -> None:
        poolid, create, remove = self.rng.choice(POOLS), self.rng.random() < 0.3, self.rng.random() < 0.3
        if create:
            self.call(lambda node: lambda ctx: access.create_pool(ctx, poolid))
            return

        def build(node):
            vmid = self.known_guest(node)[0]
            return lambda ctx: access.update_pool(ctx, poolid, vms=[vmid], remove=remove)
        self.call(build)

    def op_delpool(self) -> None:
        poolid = self.rng.choice(POOLS)
        self.call(lambda node: lambda ctx: access.delete_pool(ctx, poolid))

    def op_token(self) -> None:
        userid, tokenid = self.rng.choice(USERS), self.rng.choice(TOKENS)
        self.call(lambda node: lambda ctx: access.create_token(ctx, userid, tokenid), user=self.token_caller(userid))

    def op_deltoken(self) -> None:
        userid, tokenid = self.rng.choice(USERS), self.rng.choice(TOKENS)
        self.call(lambda node: lambda ctx: access.delete_token(ctx, userid, tokenid), user=self.token_caller(userid))

    def token_caller(self, userid: str) -> str:
        """root, the token's own user, or another user (who needs User.Modify on the token's user)."""
        return self.rng.choice((ROOT, userid, self.rng.choice(USERS)))
