"""/v1/templates: a guest becomes a catalogue template and instantiates into running guests."""

from __future__ import annotations

import os

import pytest
from proxmoxer.tools import Tasks

from tests.guest import qemu_missing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or "")]


def v1(node) -> str:
    return f"https://127.0.0.1:{node.api_port}/v1"


def test_template_catalogue_and_instantiation(single_node):
    node, px = single_node, single_node.api()
    s = node.session()
    source = int(px.cluster.nextid.get())
    upid = px.nodes("n1").qemu.create(vmid=source, name="base", memory=128, kvm=0, scsi0="local:1")
    assert Tasks.blocking_status(px, upid, timeout=60, polling_interval=0.2)["exitstatus"] == "OK"

    r = s.post(f"{v1(node)}/templates", json={"source_vmid": source, "name": "debian-base",
                                               "description": "the base", "tags": ["debian", "base"]}, timeout=60)
    assert r.status_code == 200, r.text
    made = r.json()
    assert (made["id"], made["name"], made["tags"], made["disks"]) == (source, "debian-base", ["debian", "base"],
                                                                       ["scsi0"])
    conf = px.nodes("n1").qemu(source).config.get()
    assert conf["template"] == 1 and conf["tags"] == "debian;base" and conf["description"] == "the base"
    assert any(t["id"] == source for t in s.get(f"{v1(node)}/templates", timeout=10).json())
    assert s.get(f"{v1(node)}/templates/{source}", timeout=10).json()["name"] == "debian-base"

    r = s.post(f"{v1(node)}/templates/{source}/instantiate",
               json={"name": "web1", "start": True, "ciuser": "deploy", "memory": 256}, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    vmid = out["vmid"]
    assert out["node"] == "n1" and len(out["tasks"]) == 2
    conf = px.nodes("n1").qemu(vmid).config.get()
    assert (conf["name"], conf["ciuser"], conf["memory"]) == ("web1", "deploy", 256)
    assert conf["scsi0"].startswith(f"local:{source}/base-{source}-disk-0.qcow2/{vmid}/vm-{vmid}-disk-0")  # linked
    assert px.nodes("n1").qemu(vmid).status.current.get()["status"] == "running"
    # a full clone with its own VMID
    r = s.post(f"{v1(node)}/templates/{source}/instantiate", json={"newid": 4242, "full": True}, timeout=120)
    assert r.json()["vmid"] == 4242
    assert px.nodes("n1").qemu(4242).config.get()["scsi0"].startswith("local:4242/vm-4242-disk-0")

    # errors: no such template, a plain guest is no template, a running guest (refused before anything changes)
    r = s.post(f"{v1(node)}/templates", json={"source_vmid": vmid, "name": "renamed"}, timeout=60)
    assert r.status_code == 409 and px.nodes("n1").qemu(vmid).config.get()["name"] == "web1"
    assert s.get(f"{v1(node)}/templates/{vmid}", timeout=10).status_code == 404
    assert s.post(f"{v1(node)}/templates/{vmid}/instantiate", json={}, timeout=10).status_code == 404
    r = s.post(f"{v1(node)}/templates", json={"source_vmid": source, "tags": "Bad Tag!"}, timeout=10)
    assert r.status_code == 400 and "tags" in r.json()["errors"]
    r = s.post(f"{v1(node)}/templates/{source}/instantiate", json={"args": "-no-reboot"}, timeout=10)
    assert r.status_code == 400 and "args" in r.json()["errors"]

    # delete: refused while linked clones use its disks (their data lives on them), gone once they are
    r = s.delete(f"{v1(node)}/templates/{source}", timeout=10)
    assert r.status_code == 409, r.text
    assert r.json()["message"] == f"base volume 'local:{source}/base-{source}-disk-0.qcow2' is still in use by " \
                                  "linked cloned"
    assert os.path.exists(os.path.join(node.data_dir, "storage", "local", "images", str(source),
                                       f"base-{source}-disk-0.qcow2"))
    for clone in (vmid, 4242):
        stop = px.nodes("n1").qemu(clone).status.stop.post()
        Tasks.blocking_status(px, stop, timeout=60, polling_interval=0.2)
        done = px.nodes("n1").qemu(clone).delete()
        assert Tasks.blocking_status(px, done, timeout=60, polling_interval=0.2)["exitstatus"] == "OK"
    r = s.delete(f"{v1(node)}/templates/{source}", timeout=10)
    assert Tasks.blocking_status(px, r.json()["upid"], timeout=60, polling_interval=0.2)["exitstatus"] == "OK"
    assert s.get(f"{v1(node)}/templates/{source}", timeout=10).status_code == 404
