"""Access control like Proxmox: users, roles, ACLs, pools, API tokens, checked on a real node."""

from __future__ import annotations

import pytest
import requests
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.core import AuthenticationError


def login(node, user: str, password: str) -> ProxmoxAPI:
    return ProxmoxAPI("127.0.0.1", port=node.api_port, user=user, password=password, verify_ssl=False)


def token_api(node, user: str, name: str, value: str) -> ProxmoxAPI:
    return ProxmoxAPI("127.0.0.1", port=node.api_port, user=user, token_name=name, token_value=value,
                      verify_ssl=False)


@pytest.fixture(scope="module")
def setup(single_node):
    root = single_node.api()
    vmids = []
    for name in ("audited", "hidden"):
        vmid = int(root.cluster.nextid.get())
        root.nodes("n1").qemu.create(vmid=vmid, name=name)
        vmids.append(vmid)
    root.access.users.post(userid="alice@pve", password="alice-secret", comment="auditor of one guest")
    root.access.acl.put(path=f"/vms/{vmids[0]}", roles="PVEAuditor", users="alice@pve")
    return single_node, vmids


def test_an_auditor_of_one_guest_sees_that_guest_only(setup):
    node, (audited, hidden) = setup
    alice = login(node, "alice@pve", "alice-secret")
    assert [g["vmid"] for g in alice.nodes("n1").qemu.get()] == [audited]
    assert [r["vmid"] for r in alice.cluster.resources.get(type="vm")] == [audited]
    assert alice.nodes("n1").qemu(audited).config.get()["name"] == "audited"
    with pytest.raises(ResourceException) as exc:
        alice.nodes("n1").qemu(hidden).config.get()
    assert exc.value.status_code == 403
    with pytest.raises(ResourceException) as exc:
        alice.nodes("n1").qemu(audited).status.start.post()
    assert exc.value.status_code == 403
    assert exc.value.content == f"Permission denied - missing 'VM.PowerMgmt' on '/vms/{audited}'"
    with pytest.raises(ResourceException) as exc:
        alice.nodes("n1").qemu.create(vmid=hidden + 100)
    assert exc.value.status_code == 403 and "VM.Allocate" in exc.value.content


def test_login_reports_real_capabilities(setup):
    node, (audited, _) = setup
    r = requests.post(node.url + "/access/ticket", data={"username": "alice@pve", "password": "alice-secret"},
                      verify=False)
    cap = r.json()["data"]["cap"]
    assert cap["vms"] == {"VM.Audit": 1, "VM.GuestAgent.Audit": 1}
    assert cap["storage"] == {} and cap["nodes"] == {}
    r = requests.post(node.url + "/access/ticket", data={"username": "alice@pve", "password": "wrong"}, verify=False)
    assert r.status_code == 401


def test_privsep_token_without_its_own_acl_sees_nothing_and_revocation_is_immediate(setup):
    node, (audited, _) = setup
    alice = login(node, "alice@pve", "alice-secret")
    created = alice.access.users("alice@pve").token("ci").post(privsep=1, comment="ci")
    assert created["full-tokenid"] == "alice@pve!ci" and len(created["value"]) == 36
    assert "value" not in alice.access.users("alice@pve").token("ci").get()
    tok = token_api(node, "alice@pve", "ci", created["value"])
    assert tok.nodes("n1").qemu.get() == []
    with pytest.raises(ResourceException) as exc:
        tok.nodes("n1").qemu(audited).config.get()
    assert exc.value.status_code == 403
    # with an ACL of its own the token sees the guest, but never more than its user
    node.api().access.acl.put(path="/", roles="PVEVMAdmin", tokens="alice@pve!ci")
    assert [g["vmid"] for g in tok.nodes("n1").qemu.get()] == [audited]
    with pytest.raises(ResourceException):
        tok.nodes("n1").qemu(audited).status.start.post()
    # a token without privilege separation has exactly its user's rights
    shared = alice.access.users("alice@pve").token("shared").post(privsep=0)
    assert [g["vmid"] for g in token_api(node, "alice@pve", "shared", shared["value"]).nodes("n1").qemu.get()] == \
        [audited]
    alice.access.users("alice@pve").token("ci").delete()
    with pytest.raises(ResourceException) as exc:
        tok.nodes("n1").qemu.get()
    assert exc.value.status_code == 401
    bad = token_api(node, "alice@pve", "shared", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(ResourceException) as exc:
        bad.nodes("n1").qemu.get()
    assert exc.value.status_code == 401


def test_expired_tokens_and_disabled_users_fail(setup):
    node, _ = setup
    root = node.api()
    root.access.users.post(userid="bob@pve", password="bob-secret")
    bob = login(node, "bob@pve", "bob-secret")
    expired = root.access.users("bob@pve").token("old").post(expire=1000)
    with pytest.raises(ResourceException) as exc:
        token_api(node, "bob@pve", "old", expired["value"]).version.get()
    assert exc.value.status_code == 401
    assert bob.version.get()["version"]
    root.access.users("bob@pve").put(enable=0)
    with pytest.raises(ResourceException) as exc:
        bob.version.get()
    assert exc.value.status_code == 401


def test_groups_roles_pools_and_propagation(setup):
    node, (audited, hidden) = setup
    root = node.api()
    root.access.groups.post(groupid="ops", comment="operators")
    root.access.roles.post(roleid="PowerOnly", privs="VM.Audit,VM.PowerMgmt")
    assert root.access.roles("PowerOnly").get() == {"VM.Audit": 1, "VM.PowerMgmt": 1}
    root.access.users.post(userid="carol@pve", password="carol-secret", groups="ops")
    assert root.access.groups("ops").get()["members"] == ["carol@pve"]
    root.pools.post(poolid="prod", comment="production")
    root.pools("prod").put(vms=str(hidden))
    root.access.acl.put(path="/pool/prod", roles="PowerOnly", groups="ops")
    carol = login(node, "carol@pve", "carol-secret")
    assert [g["vmid"] for g in carol.nodes("n1").qemu.get()] == [hidden]
    # propagate=0 on / grants nothing below it
    root.access.acl.put(path="/", roles="PVEAuditor", users="carol@pve", propagate=0)
    assert [g["vmid"] for g in carol.nodes("n1").qemu.get()] == [hidden]
    perms = carol.access.permissions.get(path=f"/vms/{hidden}")
    assert perms == {f"/vms/{hidden}": {"VM.Audit": 1, "VM.PowerMgmt": 1}}
    # a propagated grant reaches every guest; NoAccess on one guest takes it away there
    root.access.acl.put(path="/vms", roles="PVEAuditor", users="carol@pve")
    assert sorted(g["vmid"] for g in carol.nodes("n1").qemu.get()) == sorted([audited, hidden])
    root.access.acl.put(path=f"/vms/{audited}", roles="NoAccess", users="carol@pve")
    assert [g["vmid"] for g in carol.nodes("n1").qemu.get()] == [hidden]
    acl = root.access.acl.get()
    assert {"path": "/pool/prod", "type": "group", "ugid": "ops", "roleid": "PowerOnly", "propagate": 1} in acl
    with pytest.raises(ResourceException) as exc:
        root.pools("prod").delete()
    assert exc.value.status_code == 400


def test_password_change_and_user_listing(setup):
    node, _ = setup
    root = node.api()
    root.access.users.post(userid="dave@pve", password="dave-secret", email="dave@example.com")
    dave = login(node, "dave@pve", "dave-secret")
    assert [u["userid"] for u in dave.access.users.get()] == ["dave@pve"]
    dave.access.password.put(userid="dave@pve", password="dave-new-secret")
    login(node, "dave@pve", "dave-new-secret")
    with pytest.raises(AuthenticationError):
        login(node, "dave@pve", "dave-secret")
    with pytest.raises(ResourceException) as exc:
        dave.access.password.put(userid="root@pam", password="hijacked")
    assert exc.value.status_code == 403
    users = {u["userid"]: u for u in root.access.users.get()}
    assert users["dave@pve"]["email"] == "dave@example.com" and "root@pam" in users
    with pytest.raises(ResourceException) as exc:
        root.access.users.post(userid="dave@pve")
    assert exc.value.status_code == 409


def test_tokens_cannot_raise_themselves_touch_siblings_or_change_the_password(setup):
    """Proxmox: a token is never "self" for its user; token endpoints need User.Modify on /access/users/<user>,
    and no token changes a password (`allowtoken => 0`)."""
    node, (audited, _) = setup
    root = node.api()
    root.access.users.post(userid="erin@pve", password="erin-secret")
    root.access.acl.put(path="/", roles="PVEVMAdmin", users="erin@pve")
    erin = login(node, "erin@pve", "erin-secret")
    ci = erin.access.users("erin@pve").token("ci").post(privsep=1)["value"]
    sibling = erin.access.users("erin@pve").token("sibling").post(privsep=1)["value"]
    shared = erin.access.users("erin@pve").token("shared").post(privsep=0)["value"]
    root.access.acl.put(path="/", roles="PVEAuditor", tokens="erin@pve!ci")
    tok, full = token_api(node, "erin@pve", "ci", ci), token_api(node, "erin@pve", "shared", shared)
    before = root.access.users("erin@pve").token.get(), root.access.users("alice@pve").token.get()
    denied = "Permission denied - missing 'User.Modify' on '/access/users/erin@pve'"
    no_password = "Permission check failed (URI '/access/password' not available with API token, need proper ticket.)"
    for who in (tok, full):  # with or without privilege separation, the user holds no User.Modify
        mine = who.access.users("erin@pve")
        for call, args, message in [
            (mine.token("escalated").post, {"privsep": 0}, denied),
            (mine.token("ci").put, {"privsep": 0}, denied),
            (mine.token("sibling").put, {"comment": "taken over"}, denied),
            (mine.token("sibling").delete, {}, denied),
            (mine.token.get, {}, denied),
            (mine.token("ci").get, {}, denied),
            (who.access.users("alice@pve").token("planted").post, {"privsep": 0},
             "Permission denied - missing 'User.Modify' on '/access/users/alice@pve'"),
            (who.access.password.put, {"userid": "erin@pve", "password": "hijacked-pw"}, no_password),
            (who.access.password.put, {"userid": "alice@pve", "password": "hijacked-pw"}, no_password),
        ]:
            with pytest.raises(ResourceException) as exc:
                call(**args)
            assert (exc.value.status_code, exc.value.content) == (403, message)
    # nothing changed: the tokens, their settings, the password; the sibling still works
    assert (root.access.users("erin@pve").token.get(), root.access.users("alice@pve").token.get()) == before
    assert root.access.users("erin@pve").token("ci").get()["privsep"] == 1
    login(node, "erin@pve", "erin-secret")
    login(node, "alice@pve", "alice-secret")
    assert token_api(node, "erin@pve", "sibling", sibling).version.get()["version"]
    # what Proxmox lets a token do still works: its own ACL's rights (within its user's), reads of its own rights
    assert [g["vmid"] for g in tok.nodes("n1").qemu.get() if g["vmid"] == audited] == [audited]
    assert tok.access.permissions.get(path="/vms")["/vms"] == {"VM.Audit": 1, "VM.GuestAgent.Audit": 1}
    assert erin.access.permissions.get(userid="erin@pve!ci", path="/vms")["/vms"]["VM.Audit"] == 1
    assert tok.access.users.get() == [] and [u["userid"] for u in erin.access.users.get()] == ["erin@pve"]
    # ... and with User.Modify on its user, held by the user and granted to the token, it manages tokens;
    # a password still never
    root.access.acl.put(path="/access", roles="PVEUserAdmin", users="erin@pve")
    root.access.acl.put(path="/access", roles="PVEUserAdmin", tokens="erin@pve!ci")
    made = tok.access.users("erin@pve").token("made-by-ci").post(comment="by ci")
    assert made["full-tokenid"] == "erin@pve!made-by-ci"
    tok.access.users("erin@pve").token("made-by-ci").delete()
    with pytest.raises(ResourceException) as exc:
        tok.access.password.put(userid="erin@pve", password="hijacked-pw")
    assert (exc.value.status_code, exc.value.content) == (403, no_password)
    # the user herself (with a ticket) manages her tokens
    erin.access.users("erin@pve").token("ci").put(comment="mine")
    erin.access.users("erin@pve").token("sibling").delete()
    assert [t["tokenid"] for t in erin.access.users("erin@pve").token.get()] == ["ci", "shared"]


def test_acl_paths_are_normalized_and_checked_as_proxmox_does(setup):
    """pve-access-control's `normalize_path` then `check_path`: `//vms//N/` is `/vms/N`; a path outside its
    whitelist (and gpve's `/vclusters/vc-…`) is refused with 400 naming the path as given, and nothing is stored."""
    node, (audited, _hidden) = setup
    root = node.api()
    root.access.users.post(userid="dora@pve", password="dora-secret")
    root.access.acl.put(path=f"//vms//{audited}/", roles="PVEAuditor", users="dora@pve")
    root.access.acl.put(path="/vclusters/vc-0123456789", roles="PVEAuditor", users="dora@pve")
    mine = {(a["path"], a["roleid"]) for a in root.access.acl.get() if a["ugid"] == "dora@pve"}
    assert mine == {(f"/vms/{audited}", "PVEAuditor"), ("/vclusters/vc-0123456789", "PVEAuditor")}
    for bad in ("/vms/abc", "/vms/99", "/vclusters/../vms", "/vclusters/x/y", "/vclusters/vc-UPPER", "/meta/x",
                "/storage/a/b"):
        with pytest.raises(ResourceException) as exc:
            root.access.acl.put(path=bad, roles="PVEAuditor", users="dora@pve")
        assert exc.value.status_code == 400 and exc.value.errors == {"path": f"invalid ACL path '{bad}'"}, bad
    assert {(a["path"], a["roleid"]) for a in root.access.acl.get() if a["ugid"] == "dora@pve"} == mine
