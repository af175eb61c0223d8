"""Answer shapes real clients read: /cluster/resources, /nodes and /access rows, validated against each endpoint's
own declared return schema (as /api2/json/openapi.json publishes it), the keys Proxmox always sends required
there, Ansible's user idempotence, and the realm endpoints. All against a real node."""

from __future__ import annotations

import hashlib
import ssl

import pytest
import requests
from jsonschema.exceptions import best_match
from openapi_schema_validator import OAS30Validator
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from tests.harness import Cluster

# What Proxmox VE 9.1 always sends in each row (pve-manager PVE/API2Tools.pm extract_*_stats, PVE/API2/Nodes.pm,
# pve-access-control PVE/API2/*.pm): the declarations must require at least these.
PROXMOX_ALWAYS = {
    ("/cluster/resources", "qemu"): {"id", "type", "vmid", "node", "status", "name", "uptime", "template", "maxcpu",
                                     "cpu", "maxmem", "mem", "memhost", "maxdisk", "disk", "netin", "netout",
                                     "diskread", "diskwrite"},
    ("/cluster/resources", "node"): {"id", "type", "node", "status", "level", "uptime", "cpu", "mem", "disk",
                                     "maxcpu", "maxmem", "maxdisk"},
    ("/cluster/resources", "storage"): {"id", "type", "storage", "node", "plugintype", "status", "shared", "content",
                                        "disk", "maxdisk"},
    ("/cluster/resources", "pool"): {"id", "type", "pool"},
    ("/nodes", "node"): {"id", "type", "node", "status", "level", "uptime", "cpu", "mem", "disk", "maxcpu", "maxmem",
                         "maxdisk", "ssl_fingerprint"},
    ("/access/users", None): {"userid", "enable", "expire"},
    ("/access/users/{userid}", None): {"enable", "expire", "groups", "tokens"},
    ("/access/users/{userid}/token", None): {"tokenid", "privsep", "expire"},
    ("/access/groups", None): {"groupid"},
    ("/access/groups/{groupid}", None): {"members"},
    ("/access/roles", None): {"roleid", "privs", "special"},
    ("/access/acl", None): {"path", "type", "ugid", "roleid", "propagate"},
    ("/access/domains", None): {"realm", "type"},
}


@pytest.fixture(scope="module")
def world(single_node):
    """Guests (a template, one tagged in a pool), a pool, groups, a user with groups and tokens, a custom role, ACLs,
    and `olga@pve`, who holds nothing but VM.Audit on one guest."""
    root = single_node.api()
    vmids = [int(root.cluster.nextid.get())]
    done(root, root.nodes("n1").qemu.create(vmid=vmids[0], name="plain", memory=64, tags="web;prod"))  # stored sorted
    vmids.append(int(root.cluster.nextid.get()))
    done(root, root.nodes("n1").qemu.create(vmid=vmids[1], name="golden", memory=64))
    done(root, root.nodes("n1").qemu(vmids[1]).template.post())
    root.pools.post(poolid="shapes", comment="pooled")
    root.pools("shapes").put(vms=str(vmids[0]))
    for group in ("ops", "dev"):
        root.access.groups.post(groupid=group, comment=f"the {group} team" if group == "ops" else None)
    root.access.users.post(userid="sam@pve", password="sam-secret", groups="ops,dev", email="sam@example.com")
    root.access.users("sam@pve").token("ci").post(privsep=1, comment="pipeline")
    root.access.users("sam@pve").token("bare").post(privsep=0)
    root.access.roles.post(roleid="Shapes", privs="VM.Audit,VM.Console")
    root.access.acl.put(path=f"/vms/{vmids[0]}", roles="Shapes", groups="ops")
    root.access.users.post(userid="olga@pve", password="olga-secret")
    root.access.acl.put(path=f"/vms/{vmids[0]}", roles="PVEAuditor", users="olga@pve")
    doc = requests.get(single_node.url + "/openapi.json", verify=False, timeout=10).json()
    return single_node, vmids, doc


def done(px: ProxmoxAPI, upid: str) -> None:
    status = Tasks.blocking_status(px, upid, timeout=60, polling_interval=0.1)
    assert status and status["exitstatus"] == "OK", status


def login(node, user: str, password: str) -> ProxmoxAPI:
    return ProxmoxAPI("127.0.0.1", port=node.api_port, user=user, password=password, verify_ssl=False)


def declared(doc: dict, path: str, method: str = "get") -> dict:
    """The `data` schema an endpoint declares, as the served OpenAPI document has it."""
    schema = doc["paths"]["/api2/json" + path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    return schema["properties"]["data"]


def assert_matches(doc: dict, path: str, data) -> None:
    errors = [best_match(e.context) if e.context else e for e in OAS30Validator(declared(doc, path)).iter_errors(data)]
    assert not errors, f"{path} answers outside its declaration: " + \
        "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def row_schemas(doc: dict, path: str) -> list[dict]:
    items = declared(doc, path)
    items = items.get("items", items)
    return items.get("oneOf", [items])


def test_every_read_answers_inside_its_declaration(world):
    node, (plain, golden), doc = world
    root, olga = node.api(), login(node, "olga@pve", "olga-secret")
    reads = {
        "/cluster/resources": root.cluster.resources.get(), "/nodes": root.nodes.get(),
        "/access/users": root.access.users.get(full=1), "/access/users/{userid}": root.access.users("sam@pve").get(),
        "/access/users/{userid}/token": root.access.users("sam@pve").token.get(),
        "/access/users/{userid}/token/{tokenid}": root.access.users("sam@pve").token("ci").get(),
        "/access/groups": root.access.groups.get(), "/access/groups/{groupid}": root.access.groups("dev").get(),
        "/access/roles": root.access.roles.get(), "/access/roles/{roleid}": root.access.roles("Shapes").get(),
        "/access/acl": root.access.acl.get(), "/access/permissions": root.access.permissions.get(),
        "/access/domains": root.access.domains.get(), "/access/domains/{realm}": root.access.domains("pam").get(),
    }
    for path, data in reads.items():
        assert data, f"{path} answered nothing to check"
        assert_matches(doc, path, data)
    for path, data in {"/cluster/resources": olga.cluster.resources.get(), "/nodes": olga.nodes.get(),
                       "/access/users": olga.access.users.get(), "/access/permissions": olga.access.permissions.get(),
                       "/access/users/{userid}": olga.access.users("olga@pve").get()}.items():
        assert_matches(doc, path, data)
    # every kind of row was there to be checked, with what a caller without Sys.Audit may not see left out
    assert {r["type"] for r in reads["/cluster/resources"]} == {"qemu", "pool", "node", "storage", "network"}
    assert [r["vmid"] for r in olga.cluster.resources.get(type="vm")] == [plain]
    assert all("maxmem" not in r and "cpu" not in r for r in olga.nodes.get())


def test_declarations_require_every_key_proxmox_always_sends(world):
    _node, _vmids, doc = world
    for (path, kind), keys in PROXMOX_ALWAYS.items():
        variants = row_schemas(doc, path)
        if kind is not None:  # the variant of that type; for nodes, the one a caller with Sys.Audit gets
            variants = [v for v in variants if v["properties"]["type"]["enum"] == [kind] and
                        (kind != "node" or "cpu" in v["properties"])]
        assert len(variants) == 1, (path, kind)
        assert keys <= set(variants[0].get("required", [])), (path, kind, keys - set(variants[0]["required"]))


def test_resource_rows_carry_proxmoxs_keys_and_values(world):
    node, (plain, golden), _doc = world
    rows = {r["id"]: r for r in node.api().cluster.resources.get()}
    assert rows[f"qemu/{plain}"]["template"] == 0 and rows[f"qemu/{golden}"]["template"] == 1
    assert (rows[f"qemu/{plain}"]["tags"], rows[f"qemu/{plain}"]["pool"]) == ("prod;web", "shapes")
    assert rows[f"qemu/{plain}"]["maxmem"] == 64 << 20 and rows[f"qemu/{plain}"]["status"] == "stopped"
    n1 = rows["node/n1"]
    assert n1["level"] == "" and n1["cgroup-mode"] in (1, 2) and n1["maxcpu"] >= 1 and n1["maxmem"] > 0
    assert rows["/pool/shapes"] == {"id": "/pool/shapes", "type": "pool", "pool": "shapes"}  # nothing runs in it
    storage = rows["storage/n1/local"]
    assert (storage["plugintype"], storage["shared"], storage["status"]) == ("dir", 0, "available")
    assert storage["maxdisk"] > 0 and "images" in storage["content"].split(",")
    assert rows["network/n1/zone/localnetwork"]["status"] == "ok"
    # olga sees her guest but not the pool it is in (no Pool.Audit), nor any node figure
    olga = {r["id"]: r for r in login(node, "olga@pve", "olga-secret").cluster.resources.get()}
    assert "pool" not in olga[f"qemu/{plain}"] and "/pool/shapes" not in olga
    assert set(olga["node/n1"]) == {"id", "type", "node", "status", "level", "cgroup-mode"}


def test_node_rows_name_their_type_and_certificate_fingerprint(world):
    node, _vmids, _doc = world
    (row,) = node.api().nodes.get()
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", node.api_port)))
    presented = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    assert (row["type"], row["node"], row["status"], row["ssl_fingerprint"]) == ("node", "n1", "online", presented)
    assert "cgroup-mode" not in row and row["uptime"] > 0


def test_access_reads_have_proxmoxs_shapes(world):
    node, (plain, _golden), _doc = world
    root = node.api()
    sam = root.access.users("sam@pve").get()
    assert sam == {"enable": 1, "expire": 0, "email": "sam@example.com", "groups": ["dev", "ops"],
                   "tokens": {"bare": {"privsep": 0, "expire": 0},
                              "ci": {"privsep": 1, "expire": 0, "comment": "pipeline"}}}
    assert root.access.users("olga@pve").get()["tokens"] == {}
    listed = {u["userid"]: u for u in root.access.users.get()}
    assert "groups" not in listed["sam@pve"] and "tokens" not in listed["sam@pve"]  # only with `full`
    assert listed["sam@pve"]["realm-type"] == "pve" and listed["root@pam"]["realm-type"] == "pam"
    full = {u["userid"]: u for u in root.access.users.get(full=1)}
    assert full["sam@pve"]["groups"] == "dev,ops" and full["olga@pve"]["groups"] == ""
    assert [t["tokenid"] for t in full["sam@pve"]["tokens"]] == ["bare", "ci"]
    assert {g["groupid"]: g for g in root.access.groups.get()} == {
        "dev": {"groupid": "dev", "users": "sam@pve"},
        "ops": {"groupid": "ops", "comment": "the ops team", "users": "sam@pve"}}
    assert root.access.groups("dev").get() == {"members": ["sam@pve"]}
    roles = {r["roleid"]: r for r in root.access.roles.get()}
    assert roles["Shapes"] == {"roleid": "Shapes", "privs": "VM.Audit,VM.Console", "special": 0}
    assert roles["PVEAuditor"]["special"] == 1
    assert {"path": f"/vms/{plain}", "type": "group", "ugid": "ops", "roleid": "Shapes", "propagate": 1} in \
        root.access.acl.get()
    # a user without rights on /access/groups sees no group, and may not read one
    olga = login(node, "olga@pve", "olga-secret")
    assert olga.access.groups.get() == []
    with pytest.raises(ResourceException) as exc:
        olga.access.groups("ops").get()
    assert exc.value.status_code == 403


def test_ansibles_proxmox_user_finds_nothing_to_change_on_a_second_run(world):
    """community.proxmox's proxmox_user reads the user back and compares: its groups joined with ',' against the
    groups it sends, each token's comment, expire and privsep. A second run must report no change."""
    node, _vmids, _doc = world
    px = node.api()
    wanted_groups = ",".join(["dev", "ops"])  # what the module sends: the list given, joined
    wanted_tokens = [{"tokenid": "deploy", "comment": "from ansible", "expire": 0, "privsep": True}]
    px.access.users.post(userid="ansible@pve", groups=wanted_groups, enable=1, expire=0, comment="managed")
    for token in wanted_tokens:
        px.access.users("ansible@pve").token(token["tokenid"]).post(comment=token["comment"], expire=token["expire"],
                                                                    privsep=int(token["privsep"]))
    existing = px.access.users("ansible@pve").get()
    assert ",".join(existing.get("groups", [])) == wanted_groups
    assert (existing.get("comment", ""), existing.get("enable", 1), existing.get("expire", 0)) == ("managed", 1, 0)
    tokens = existing.get("tokens") or {}
    assert len(tokens) == len(wanted_tokens)
    for token in wanted_tokens:
        have = tokens[token["tokenid"]]
        assert (have.get("comment", ""), have.get("expire", 0), bool(have.get("privsep"))) == \
            (token["comment"], token["expire"], token["privsep"])


def test_realms_are_listed_without_login_and_changed_through_the_log(world):
    node, _vmids, _doc = world
    root = node.api()
    anonymous = requests.get(node.url + "/access/domains", verify=False, timeout=10)
    assert anonymous.status_code == 200
    assert anonymous.json()["data"] == [
        {"realm": "pam", "type": "pam", "comment": "Linux PAM standard authentication"},
        {"realm": "pve", "type": "pve", "comment": "Proxmox VE authentication server"}]
    before = root.access.domains("pve").get()
    root.access.domains("pve").put(comment="Local accounts", default=1, digest=before["digest"])
    after = root.access.domains("pve").get()
    assert (after["comment"], after["default"], after["type"]) == ("Local accounts", 1, "pve")
    assert {r["realm"]: r.get("default") for r in root.access.domains.get()} == {"pam": None, "pve": 1}
    with pytest.raises(ResourceException) as exc:  # the digest read before the change is stale now
        root.access.domains("pve").put(comment="again", digest=before["digest"])
    assert exc.value.status_code == 400 and "file changed by other user" in exc.value.content
    root.access.domains("pam").put(default=1)
    assert {r["realm"]: r.get("default") for r in root.access.domains.get()} == {"pam": 1, "pve": None}
    root.access.domains("pve").put(delete="comment")
    assert root.access.domains("pve").get()["comment"] == "Proxmox VE authentication server"


@pytest.mark.parametrize(("method", "path", "params", "status", "message"), [
    ("post", "", {"realm": "corp", "type": "ldap", "server1": "ldap.example", "base_dn": "dc=example",
                  "user_attr": "uid", "password": "bind-secret"}, 400, "realm type 'ldap' is not supported"),
    ("post", "", {"realm": "corp", "type": "pve"}, 400, "unable to create builtin type 'pve'"),
    ("post", "", {"realm": "pve", "type": "openid"}, 409, "domain 'pve' already exists"),
    ("delete", "/pve", {}, 400, "authentication domain 'pve' is built in and cannot be deleted"),
    ("delete", "/corp", {}, 404, "authentication domain 'corp' does not exist"),
    ("get", "/corp", {}, 404, "domain 'corp' does not exist"),
    ("put", "/pve", {"tfa": "type=oath"}, 400, "Parameter verification failed"),
    ("put", "/pve", {"server1": "ldap.example"}, 400, "Parameter verification failed"),
    ("put", "/pam", {"check-connection": 1}, 400, "'check-connection' parameter can only be set for realms"),
    ("put", "/pam", {}, 400, "no options specified"),
])
def test_realm_refusals_say_why_and_change_nothing(world, method, path, params, status, message):
    node, _vmids, _doc = world
    s = node.session()
    before = s.get(node.url + "/access/domains", timeout=10).json()["data"]
    r = getattr(s, method)(node.url + "/access/domains" + path, data=params, timeout=10)
    assert r.status_code == status and message in r.json()["message"], r.text
    assert s.get(node.url + "/access/domains", timeout=10).json()["data"] == before


def test_realm_settings_need_realm_privileges(world):
    node, _vmids, _doc = world
    olga = login(node, "olga@pve", "olga-secret")
    assert [r["realm"] for r in olga.access.domains.get()] == ["pam", "pve"]
    for call, missing in ((lambda: olga.access.domains("pve").get(), "Realm.Allocate|Sys.Audit"),
                          (lambda: olga.access.domains("pve").put(comment="mine"), "Realm.Allocate")):
        with pytest.raises(ResourceException) as exc:
            call()
        assert exc.value.status_code == 403
        assert exc.value.content == f"Permission denied - missing '{missing}' on '/access/realm'"


@pytest.mark.slow
def test_another_members_row_shows_its_registered_host_facts(tmp_path):
    cluster = Cluster(str(tmp_path), 2).start()
    try:
        n1, n2 = cluster.nodes
        doc = requests.get(n1.url + "/openapi.json", verify=False, timeout=10).json()
        rows = {r["node"]: r for r in n1.api().cluster.resources.get(type="node")}
        assert_matches(doc, "/cluster/resources", list(rows.values()))
        local = {k: rows["n1"][k] for k in ("maxcpu", "maxmem", "cgroup-mode")}
        assert {k: rows["n2"][k] for k in local} == local  # the same host: n2 registered the same facts
        assert rows["n2"]["status"] == "online"
        nodes = {r["node"]: r for r in n1.api().nodes.get()}
        der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", n2.api_port)))
        assert nodes["n2"]["ssl_fingerprint"] == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    finally:
        cluster.stop()
