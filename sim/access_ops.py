"""Access-control requests of the simulated clients (`engine/access.py` commands), on small name pools so
that they collide: users, groups, custom roles, ACLs, pools and tokens, created, changed and deleted
concurrently, with ACLs and pools naming guests that come and go."""

from __future__ import annotations

from engine import access
from engine import commands as cmd

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
        self.call(lambda node: access.SetUser(request_id="", ts=node.wall(), userid=userid, create=create,
                                              fields={"groups": groups, "comment": f"c{self.cid}"},
                                              append_groups=append))

    def op_deluser(self) -> None:
        userid = self.rng.choice(USERS)
        self.call(lambda node: access.DeleteUser(request_id="", ts=node.wall(), userid=userid))

    def op_group(self) -> None:
        groupid = self.rng.choice(GROUPS)
        self.call(lambda node: access.SetGroup(request_id="", ts=node.wall(), groupid=groupid, create=True))

    def op_delgroup(self) -> None:
        groupid = self.rng.choice(GROUPS)
        self.call(lambda node: access.DeleteGroup(request_id="", ts=node.wall(), groupid=groupid))

    def op_role(self) -> None:
        roleid, privs = self.rng.choice(ROLES), sorted(self.rng.sample(PRIVS, 2))
        create = self.rng.random() < 0.6
        self.call(lambda node: access.SetRole(request_id="", ts=node.wall(), roleid=roleid, privs=privs,
                                              create=create, append=not create))

    def op_delrole(self) -> None:
        roleid = self.rng.choice(ROLES)
        self.call(lambda node: access.DeleteRole(request_id="", ts=node.wall(), roleid=roleid))

    def op_acl(self) -> None:
        roles, delete = [self.rng.choice(ROLES + BUILTIN)], self.rng.random() < 0.3
        kind = self.rng.choice(("users", "groups", "tokens"))
        subject = {"users": lambda: self.rng.choice(USERS), "groups": lambda: self.rng.choice(GROUPS),
                   "tokens": lambda: f"{self.rng.choice(USERS)}!{self.rng.choice(TOKENS)}"}[kind]()
        where = self.rng.choice(("/", "vm", "vm", "pool"))

        def build(node) -> cmd.Command:
            path = {"/": "/", "vm": f"/vms/{self.known_guest(node)[0]}",
                    "pool": f"/pool/{self.rng.choice(POOLS)}"}[where]
            return access.ChangeAcl(request_id="", ts=node.wall(), path=path, roles=roles, delete=delete,
                                    propagate=self.rng.random() < 0.5, **{kind: [subject]})
        self.call(build)

    def op_pool(self) -> None:
        poolid, create, remove = self.rng.choice(POOLS), self.rng.random() < 0.3, self.rng.random() < 0.3

        def build(node) -> cmd.Command:
            vms = [] if create else [self.known_guest(node)[0]]
            return access.SetPool(request_id="", ts=node.wall(), poolid=poolid, create=create, vms=vms,
                                  remove=remove)
        self.call(build)

    def op_delpool(self) -> None:
        poolid = self.rng.choice(POOLS)
        self.call(lambda node: access.DeletePool(request_id="", ts=node.wall(), poolid=poolid))

    def op_token(self) -> None:
        userid, tokenid = self.rng.choice(USERS), self.rng.choice(TOKENS)
        self.call(lambda node: access.SetToken(request_id="", ts=node.wall(), userid=userid, tokenid=tokenid,
                                               create=True, secret_hash=f"sha256:{self.cid}", privsep=True))

    def op_deltoken(self) -> None:
        userid, tokenid = self.rng.choice(USERS), self.rng.choice(TOKENS)
        self.call(lambda node: access.DeleteToken(request_id="", ts=node.wall(), userid=userid, tokenid=tokenid))
