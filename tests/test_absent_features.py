"""Proxmox features gpve does not have, as clients meet them on a real node: every read in the declaration
(api/compat/absent.py) answers what an unconfigured Proxmox node answers, every write 501 naming the feature,
and the standard Prometheus exporter scrapes the node with all its default collectors."""

from __future__ import annotations

import os
import subprocess
import sys

import jsonschema
import pytest
import requests

from api.compat import absent
from tests.harness import free_ports, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guests(single_node):
    px = single_node.api()
    made = []
    for i, extra in enumerate(({"onboot": 1}, {})):
        vmid = int(px.cluster.nextid.get())
        px.nodes("n1").qemu.create(vmid=vmid, name=f"g{i}", memory=64, **extra)
        made.append(vmid)
    return made


def _path(row: absent.Row, vmid: int) -> str:
    return row.path.format(node="n1", vmid=vmid, sid=f"vm:{vmid}", id="influx")


def test_every_declared_read_answers_as_unconfigured_and_every_write_501(single_node, guests):
    s = single_node.session()
    doc = s.get(single_node.url + "/openapi.json").json()
    for row in absent.ROWS:
        url = single_node.url + _path(row, guests[0])
        declared = doc["paths"]["/api2/json" + row.path]
        if row.answer == absent.UNSUPPORTED:
            r = s.get(url)
            assert r.status_code == 501 and r.json()["message"].endswith(f"gpve has no {row.feature}"), (url, r.text)
        elif row.answer != absent.NO_READ and not callable(row.answer):
            r = s.get(url)
            assert r.status_code == 200, (url, r.text)
            schema = declared["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            jsonschema.validate(r.json(), schema)
            if isinstance(row.answer, absent.Index):
                children = [next(iter(entry.values())) for entry in r.json()["data"]]
                assert children and all(requests.get(f"{url}/{c}", verify=False).status_code == 401 for c in children)
            else:
                assert r.json()["data"] == row.answer, url
        for method in row.writes:
            r = s.request(method, url, data={"anything": "at all"})
            path = _path(row, guests[0])
            assert (r.status_code, r.json()["message"]) == (
                501, f"Method '{method} {path}' not implemented - gpve has no {row.feature}"), r.text
            assert r.reason.endswith(f"gpve has no {row.feature}")
            assert declared[method.lower()]["x-gpve-absent"] == row.feature


def test_what_the_clients_read_on_their_way(single_node, guests):
    px = single_node.api()
    s = single_node.session()
    url = single_node.url
    # Telmate's provider reads HA with every guest and accepts only an error starting "no such resource"
    for sid in (str(guests[0]), f"vm:{guests[0]}"):
        r = s.get(f"{url}/cluster/ha/resources/{sid}")
        assert (r.status_code, r.json()["message"]) == (404, f"no such resource 'vm:{guests[0]}'")
    r = s.get(f"{url}/cluster/ha/resources/999999")
    assert r.status_code == 404 and r.json()["message"].endswith("VM/CT 999999 does not exist")
    assert s.get(f"{url}/cluster/ha/resources/nonsense").status_code == 400
    assert px.cluster.ha.status.current.get() == [{"id": "quorum", "type": "quorum", "node": "n1", "quorate": 1,
                                                  "status": "OK"}]
    # with no backup job every guest is uncovered (the exporter's pve_not_backed_up_*)
    assert px.cluster("backup-info")("not-backed-up").get() == [
        {"vmid": guests[0], "type": "qemu", "name": "g0"}, {"vmid": guests[1], "type": "qemu", "name": "g1"}]
    # a guest's firewall exists only for a guest
    assert px.nodes("n1").qemu(guests[0]).firewall.options.get() == absent.NO_OPTIONS
    r = s.get(f"{url}/nodes/n1/qemu/999999/firewall/rules")
    assert r.status_code == 404 and "does not exist" in r.json()["message"]
    # the reads keep Proxmox's privileges: a user who may audit one guest and the system sees that guest only
    px.access.users.post(userid="mon@pve", password="monitor-pass")
    px.access.acl.put(path="/", roles="PVESysAdmin", users="mon@pve")
    px.access.acl.put(path=f"/vms/{guests[1]}", roles="PVEVMUser", users="mon@pve")
    mon = requests.post(f"{url}/access/ticket", data={"username": "mon@pve", "password": "monitor-pass"},
                        verify=False).json()["data"]
    cookie = {"PVEAuthCookie": mon["ticket"]}
    seen = requests.get(f"{url}/cluster/backup-info/not-backed-up", cookies=cookie, verify=False).json()["data"]
    assert seen == [{"vmid": guests[1], "type": "qemu", "name": "g1"}]
    denied = requests.get(f"{url}/nodes/n1/qemu/{guests[0]}/firewall/options", cookies=cookie, verify=False)
    assert (denied.status_code, denied.json()["message"]) == (
        403, f"Permission denied - missing 'VM.Audit' on '/vms/{guests[0]}'")


def test_prometheus_pve_exporter_scrapes_with_its_default_collectors(single_node, guests, tmp_path):
    config = tmp_path / "pve.yml"
    config.write_text(f"default:\n  user: root@pam\n  password: {single_node.password}\n  verify_ssl: false\n")
    [port] = free_ports(1)
    exporter = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "pve_exporter"), "--config.file",
                                 str(config), "--web.listen-address", f"127.0.0.1:{port}"],
                                stdout=open(tmp_path / "exporter.log", "wb"), stderr=subprocess.STDOUT)
    try:
        scrape = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/pve", timeout=60,
                                               params={"target": f"127.0.0.1:{single_node.api_port}"}))
    finally:
        exporter.terminate()
        exporter.wait(10)
    assert scrape.status_code == 200, (tmp_path / "exporter.log").read_text()[-3000:]
    series = set(scrape.text.splitlines())
    for i, vmid in enumerate(guests):
        assert f'pve_up{{id="qemu/{vmid}"}} 0.0' in series
        assert f'pve_not_backed_up_info{{id="qemu/{vmid}"}} 1.0' in series
        assert any(line.startswith(f'pve_guest_info{{id="qemu/{vmid}",name="g{i}",node="n1"') for line in series)
        assert f'pve_memory_size_bytes{{id="qemu/{vmid}"}} 6.7108864e+07' in series
    assert f'pve_onboot_status{{id="qemu/{guests[0]}",node="n1",type="qemu"}} 1.0' in series  # read the config
    assert 'pve_subscription_status{id="node/n1",status="notfound"} 1.0' in series
    assert 'pve_up{id="node/n1"} 1.0' in series and 'pve_not_backed_up_total{id="cluster/gpve"} 2.0' in series
