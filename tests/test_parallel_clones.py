"""Several VMs from one template at once, as Terraform makes them: parallel `POST …/clone` of one template all
succeed, on a real node over TLS (proxmoxer, one session per thread).

qemu-server's `clone_vm` holds a source that does not run with a shared flock (`lock_config_shared`) and writes no
lock into its config; what needs the source alone (a config change, say) fails `can't lock file
'/var/lock/qemu-server/lock-N.conf' - got timeout` until the last clone has ended.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from proxmoxer import ResourceException

from tests.guest import qemu_missing
from tests.harness import Cluster, ok

pytestmark = [pytest.mark.slow, pytest.mark.skipif(qemu_missing() is not None, reason=qemu_missing() or ""),
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]
DATA = 96 << 20  # written into the template's disk: each full clone copies it (the clones overlap the checks)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(str(tmp_path_factory.mktemp("clones")), 1).start()
    yield cluster.nodes[0]
    cluster.stop()


def template_with_data(node, px) -> int:
    vmid = int(px.cluster.nextid.get())
    ok(px, px.nodes("n1").qemu.create(vmid=vmid, name="tpl", memory=256, scsi0="local:1"))
    data = os.path.join(node.data_dir, "data.raw")
    with open(data, "wb") as f:
        f.write(os.urandom(DATA))
    image = os.path.join(node.data_dir, "storage", "local", "images", str(vmid), f"vm-{vmid}-disk-0.qcow2")
    subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "qcow2", data, image], check=True)
    os.unlink(data)
    ok(px, px.nodes("n1").qemu(vmid).template.post())
    return vmid


def test_parallel_clones_of_a_template_all_succeed_and_hold_it_until_the_last_ends(node):
    px = node.api()
    tpl = template_with_data(node, px)
    newids = [int(px.cluster.nextid.get()) + n for n in range(4)]

    def clone(newid: int) -> str:  # full and linked alike, each from its own client
        return node.api().nodes("n1").qemu(tpl).clone.post(newid=newid, name=f"vm{newid}", full=int(newid % 2 == 0))

    with ThreadPoolExecutor(len(newids)) as pool:
        upids = list(pool.map(clone, newids))
    assert all(u.startswith("UPID:n1:") and ":qmclone:" in u for u in upids), upids
    conf = px.nodes("n1").qemu(tpl).config.get()
    with pytest.raises(ResourceException) as exc:  # the full clones still copy their data
        px.nodes("n1").qemu(tpl).config.put(description="changed")
    assert exc.value.status_code == 423
    assert exc.value.content == f"can't lock file '/var/lock/qemu-server/lock-{tpl}.conf' - got timeout"
    assert "lock" not in conf  # as Proxmox: no lock written into the template's config
    for upid in upids:
        ok(px, upid)
    for newid in newids:
        assert px.nodes("n1").qemu(newid).config.get()["name"] == f"vm{newid}"
    px.nodes("n1").qemu(tpl).config.put(description="changed")  # free once the last clone has ended
    assert px.nodes("n1").qemu(tpl).config.get()["description"] == "changed"
    for newid in newids:
        ok(px, px.nodes("n1").qemu(newid).delete(purge=1))
    ok(px, px.nodes("n1").qemu(tpl).delete(purge=1))
