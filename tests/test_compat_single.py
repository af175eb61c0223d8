"""One real node over HTTPS, driven by proxmoxer and by plain HTTP where the wire format matters."""

from __future__ import annotations

import os
import stat
import time

import pytest
import requests
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks


def test_proxmoxer_creates_lists_and_reads_guests(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    upid = px.nodes("n1").qemu.create(vmid=vmid, name="web1", memory=2048, cores=2, sockets=1, ostype="l26",
                                      scsihw="virtio-scsi-single", net0="virtio,bridge=vmbr0")
    assert Tasks.blocking_status(px, upid, timeout=10)["exitstatus"] == "OK"
    decoded = Tasks.decode_upid(upid)
    assert decoded["node"] == "n1" and decoded["type"] == "qmcreate" and decoded["id"] == str(vmid)
    assert decoded["user"] == "root@pam"
    listed = {g["vmid"]: g for g in px.nodes("n1").qemu.get()}
    assert listed[vmid]["name"] == "web1" and listed[vmid]["maxmem"] == 2048 * 1024 * 1024
    assert listed[vmid]["status"] == "stopped"
    conf = px.nodes("n1").qemu(vmid).config.get()
    assert conf["memory"] == 2048 and conf["cores"] == 2 and conf["ostype"] == "l26"
    assert conf["net0"].startswith("virtio=BC:24:11:") and conf["net0"].endswith(",bridge=vmbr0")
    assert len(conf["digest"]) == 40
    resources = px.cluster.resources.get(type="vm")
    assert any(r["id"] == f"qemu/{vmid}" and r["node"] == "n1" for r in resources)
    assert int(px.cluster.nextid.get()) != vmid


def test_nextid_is_a_string_and_checks_a_given_vmid(single_node):
    px = single_node.api()
    nextid = px.cluster.nextid.get()
    assert isinstance(nextid, str) and int(nextid) >= 100
    vmid = int(nextid)
    px.nodes("n1").qemu.create(vmid=vmid, name="taken")
    with pytest.raises(ResourceException) as exc:
        px.cluster.nextid.get(vmid=vmid)
    assert exc.value.status_code == 400
    assert exc.value.errors == {"vmid": f"VM {vmid} already exists"}
    assert px.cluster.nextid.get(vmid=vmid + 1000) == str(vmid + 1000)


def test_duplicate_vmid_is_409_with_the_message_in_the_reason_phrase(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    px.nodes("n1").qemu.create(vmid=vmid)
    with pytest.raises(ResourceException) as exc:
        px.nodes("n1").qemu.create(vmid=vmid)
    assert exc.value.status_code == 409
    assert "already exists" in exc.value.content


def test_bad_parameters_get_one_message_each(single_node):
    s = single_node.session()
    r = s.post(single_node.url + "/nodes/n1/qemu", data={"vmid": "42", "memory": "lots", "cores": "0",
                                                          "ostype": "beos", "nosuchkey": "1"})
    assert r.status_code == 400
    body = r.json()
    assert body["message"] == "Parameter verification failed" and body["status"] == 400
    assert set(body["errors"]) == {"vmid", "memory", "cores", "ostype", "nosuchkey"}
    assert body["errors"]["vmid"] == "value must have a minimum value of 100"
    assert r.reason == "Parameter verification failed"
    r = s.post(single_node.url + "/nodes/n1/qemu", data={"vmid": "4243", "memory": "lots"})
    assert r.status_code == 400 and set(r.json()["errors"]) == {"memory"}
    assert 4243 not in {g["vmid"] for g in s.get(single_node.url + "/nodes/n1/qemu").json()["data"]}


def test_unknown_guest_config_is_404(single_node):
    s = single_node.session()
    r = s.get(single_node.url + "/nodes/n1/qemu/999999/config")
    assert r.status_code == 404
    assert r.json()["message"] == "Configuration file 'nodes/n1/qemu-server/999999.conf' does not exist"


def test_wire_format_matches_proxmox(single_node):
    s = single_node.session()
    r = s.get(single_node.url + "/version")
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert "Set-Cookie" not in r.headers
    assert set(r.json()) == {"data"}
    # JSON bodies are accepted too, and booleans as True/False strings
    vmid = int(s.get(single_node.url + "/cluster/nextid").json()["data"])
    r = s.post(single_node.url + "/nodes/n1/qemu", json={"vmid": vmid, "onboot": "True", "cores": 2})
    assert r.status_code == 200 and r.json()["data"].startswith("UPID:n1:")
    assert "Set-Cookie" not in r.headers
    conf = s.get(single_node.url + f"/nodes/n1/qemu/{vmid}/config").json()["data"]
    assert conf["onboot"] == 1 and conf["cores"] == 2


def test_login_failures_and_csrf(single_node):
    url = single_node.url
    r = requests.post(url + "/access/ticket", data={"username": "root@pam", "password": "wrong"}, verify=False)
    assert r.status_code == 401 and r.json()["message"] == "authentication failure"
    assert requests.get(url + "/nodes", verify=False).status_code == 401
    s = single_node.session()
    ticket = s.cookies["PVEAuthCookie"]
    # a write with the cookie but without the CSRF token is refused
    bare = requests.Session()
    bare.verify = False
    bare.trust_env = False
    bare.cookies.set("PVEAuthCookie", ticket)
    assert bare.get(url + "/nodes").status_code == 200
    refused = bare.post(url + "/nodes/n1/qemu", data={"vmid": 4242})
    assert refused.status_code == 401 and refused.json()["status"] == 401 and refused.json()["message"]
    assert 4242 not in {g["vmid"] for g in bare.get(url + "/nodes/n1/qemu").json()["data"]}  # nothing written
    # a forged ticket (changed user) is refused
    forged = ticket.replace("root@pam", "admin@pam")
    r = requests.get(url + "/nodes", cookies={"PVEAuthCookie": forged}, verify=False)
    assert r.status_code == 401 and r.reason == "invalid PVE ticket"
    # a well-formed ticket signed by another cluster's key, and an expired one, are refused
    from api.auth import make_ticket, new_ticket_key_pem
    foreign = make_ticket(new_ticket_key_pem(), "root@pam", time.time())
    assert requests.get(url + "/nodes", cookies={"PVEAuthCookie": foreign}, verify=False).status_code == 401
    with open(os.path.join(single_node.data_dir, "priv", "authkey.key")) as f:
        cluster_key = f.read()  # a single node's cluster key is its own
    fresh = make_ticket(cluster_key, "root@pam", time.time())
    assert requests.get(url + "/nodes", cookies={"PVEAuthCookie": fresh}, verify=False).status_code == 200
    stale = make_ticket(cluster_key, "root@pam", time.time() - 7300)
    assert requests.get(url + "/nodes", cookies={"PVEAuthCookie": stale}, verify=False).status_code == 401
    # the ticket also works in an Authorization header, as the Telmate provider sends it
    r = requests.get(url + "/nodes", headers={"Authorization": f"PVEAuthCookie={ticket}"}, verify=False)
    assert r.status_code == 200


def test_a_valid_ticket_posted_as_password_renews_it(single_node):
    s = single_node.session()
    ticket = s.cookies["PVEAuthCookie"]
    r = requests.post(single_node.url + "/access/ticket", data={"username": "root@pam", "password": ticket},
                      verify=False)
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["ticket"].startswith("PVE:root@pam:") and data["username"] == "root@pam"
    assert data["cap"]["vms"]["VM.Allocate"] == 1
    r = requests.post(single_node.url + "/access/ticket", data={"username": "other@pam", "password": ticket},
                      verify=False)
    assert r.status_code == 401


def test_retried_request_id_creates_once(single_node):
    s = single_node.session()
    vmid = int(s.get(single_node.url + "/cluster/nextid").json()["data"])
    headers = {"X-Request-ID": f"retry-test-{vmid}"}
    first = s.post(single_node.url + "/nodes/n1/qemu", data={"vmid": vmid, "name": "once"}, headers=headers)
    again = s.post(single_node.url + "/nodes/n1/qemu", data={"vmid": vmid, "name": "once"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["data"] == again.json()["data"]
    third = s.post(single_node.url + "/nodes/n1/qemu", data={"vmid": vmid, "name": "once"})
    assert third.status_code == 409


def test_a_request_id_reused_for_another_request_is_never_silently_dropped(single_node):
    s, url = single_node.session(), single_node.url
    s.post(url + "/access/users", data={"userid": "reuse@pve", "password": "first-pass"}).raise_for_status()
    for password in ("second-pass", "third-pass"):  # the same id, a different request each time: both apply
        r = s.put(url + "/access/password", data={"userid": "reuse@pve", "password": password},
                  headers={"X-Request-ID": "reused-id"})
        assert r.status_code == 200, r.text
        login = requests.post(url + "/access/ticket", data={"username": "reuse@pve", "password": password},
                              verify=False)
        assert login.status_code == 200
    # a retried token creation cannot show the secret again: it says so instead of a secret that does not work
    first = s.post(url + "/access/users/reuse@pve/token/t1", headers={"X-Request-ID": "token-id"})
    again = s.post(url + "/access/users/reuse@pve/token/t1", headers={"X-Request-ID": "token-id"})
    assert first.status_code == 200 and again.status_code == 409 and "shown only" in again.json()["message"]
    token = f"PVEAPIToken=reuse@pve!t1={first.json()['data']['value']}"
    assert requests.get(url + "/version", headers={"Authorization": token}, verify=False).status_code == 200


def test_first_start_created_secrets_privately(single_node):
    mode = stat.S_IMODE(os.stat(os.path.join(single_node.data_dir, "root-password")).st_mode)
    assert mode == 0o600
    assert len(single_node.password) >= 16
    for name in ("priv/authkey.key", "ssl/pve-ssl.key", "ssl/pve-root-ca.key"):
        assert stat.S_IMODE(os.stat(os.path.join(single_node.data_dir, name)).st_mode) == 0o600
    cluster = single_node.api().cluster.status.get()
    assert cluster[0]["type"] == "cluster" and cluster[0]["quorate"] == 1


def test_the_digest_read_with_a_guests_config_is_the_one_writes_check_also_with_snapshots(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    Tasks.blocking_status(px, px.nodes("n1").qemu.create(vmid=vmid, name="snappy", cores=1), timeout=10)
    Tasks.blocking_status(px, px.nodes("n1").qemu(vmid).snapshot.post(snapname="s1"), timeout=10)
    digest = px.nodes("n1").qemu(vmid).config.get()["digest"]
    px.nodes("n1").qemu(vmid).config.put(cores=2, digest=digest)
    assert px.nodes("n1").qemu(vmid).config.get()["cores"] == 2
    with pytest.raises(ResourceException) as exc:  # the digest read before the change is stale now
        px.nodes("n1").qemu(vmid).config.put(cores=3, digest=digest)
    assert exc.value.status_code == 400 and "detected modified configuration" in str(exc.value)
    snap = px.nodes("n1").qemu(vmid).config.get(snapshot="s1")
    assert snap["cores"] == 1 and snap["digest"] == px.nodes("n1").qemu(vmid).config.get()["digest"]


def test_post_config_with_background_delay_answers_null_when_the_task_ends_in_time(single_node):
    s = single_node.session()
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    Tasks.blocking_status(px, px.nodes("n1").qemu.create(vmid=vmid, name="delayed"), timeout=10)
    url = f"{single_node.url}/nodes/n1/qemu/{vmid}/config"
    r = s.post(url, data={"cores": 2, "background_delay": 5})
    assert r.status_code == 200 and r.json() == {"data": None}
    upid = s.post(url, data={"cores": 3}).json()["data"]
    assert upid.startswith("UPID:n1:") and ":qmconfig:" in upid
    assert Tasks.blocking_status(px, upid, timeout=10)["exitstatus"] == "OK"
    r = s.put(url, data={"cores": 4, "revert": "cores"})  # set and revert at once: refused (Proxmox names `delete`)
    assert r.status_code == 400 and "-revert cores" in r.json()["errors"]["delete"]
    assert px.nodes("n1").qemu(vmid).config.get()["cores"] == 3


def test_directory_indexes_name_only_what_exists(single_node):
    px = single_node.api()
    for index, path in ((px.nodes("n1").get(), "/nodes/n1"), (px.cluster.get(), "/cluster")):
        names = [row["name"] for row in index]
        assert {"qemu", "storage", "tasks", "status"} <= set(names) or {"resources", "status", "nextid"} <= set(names)
        for name in names:  # each is served (a read of it is no 404 "No handler")
            r = single_node.session().get(f"{single_node.url}{path}/{name}", timeout=10)
            assert "No 'GET' handler" not in r.text, (path, name, r.text)
    vmid = int(px.cluster.nextid.get())
    px.nodes("n1").qemu.create(vmid=vmid, memory=64)
    subdirs = [row["subdir"] for row in px.nodes("n1").qemu(vmid).get()]
    assert {"config", "status", "snapshot", "rrddata"} <= set(subdirs) and "rrd" not in subdirs
    # an option with a hyphen can be deleted (pve-configid allows '-')
    px.cluster.options.put(**{"tag-style": "ordering=alphabetical"})
    px.cluster.options.put(delete="tag-style")
    assert "tag-style" not in px.cluster.options.get()


def test_a_pool_read_answers_its_members_as_resource_rows(single_node):
    px = single_node.api()
    vmid = int(px.cluster.nextid.get())
    px.nodes("n1").qemu.create(vmid=vmid, memory=64, name="pooled")
    px.pools.post(poolid="shapes", comment="for the shapes")
    px.pools("shapes").put(vms=str(vmid), storage="local")
    [pool] = px.pools.get(poolid="shapes")  # Proxmox 8.1+: the non-deprecated read of one pool
    assert pool["poolid"] == "shapes" and pool["comment"] == "for the shapes"
    guest = next(m for m in pool["members"] if m["type"] == "qemu")
    assert (guest["vmid"], guest["name"], guest["status"], guest["maxmem"]) == (vmid, "pooled", "stopped",
                                                                                64 * 1024 * 1024)
    assert [m["storage"] for m in pool["members"] if m["type"] == "storage"] == ["local"]
    assert [m["type"] for m in px.pools.get(poolid="shapes", type="storage")[0]["members"]] == ["storage"]
    assert [m["type"] for m in px.pools("shapes").get(type="qemu")["members"]] == ["qemu"]
    with pytest.raises(ResourceException) as exc:
        px.pools.get(poolid="nope")
    assert exc.value.status_code == 404 and "pool 'nope' does not exist" in str(exc.value)
