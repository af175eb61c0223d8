"""Proxmox's privilege model for guest configs, on a real node: per-key privileges, root-only keys, storage
privileges and clone rights, one table run against create, update (PUT and POST config) and clone.

Expected answers follow qemu-server's `PVE/API2/Qemu.pm` (`$check_vm_modify_config_perm` and its option
groups, `$check_storage_access`, the serial/usb/hostpci/rng/virtiofs checks, `$check_storage_access_clone`)
and pve-storage's `check_volume_access`. Each row says what a key needs, each privilege set what it holds;
the expected status is derived from both, independently of the server's code.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import pytest
import requests

from engine.roles import BUILTIN_ROLES

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
GUEST, OTHER = 900, 901  # the guest every update row changes; another guest whose disk rows refer to
CREATE_BASE, SOURCE_BASE, CLONE_BASE = 2000, 4000, 6000
VM_ADMIN = frozenset(BUILTIN_ROLES["PVEVMAdmin"])
AUDITOR = frozenset(BUILTIN_ROLES["PVEAuditor"])
OPTIONS = frozenset({"VM.Config.Options"})
CONFIG_PRIVS = {p for p in VM_ADMIN if p.startswith("VM.Config.")}
EVERYTHING = "*"


@dataclass(frozen=True)
class Privset:
    """What a caller holds where: `vm` is the guest the request is about, `new` a clone's new id, `storage` is
    /storage/local, `root` is /, `mapping` any /mapping/..., `other` the guest OTHER."""

    name: str
    holds: dict = field(default_factory=dict)
    root: bool = False

    def has(self, where: str, privileges: str) -> bool:
        held = self.holds.get(where, frozenset())
        return self.root or held == EVERYTHING or any(p in held for p in privileges.split("|"))


ROOT = Privset("root", root=True)
ADMIN = Privset("admin", {w: EVERYTHING for w in ("vm", "new", "storage", "root", "mapping", "other")})
VMADMIN = Privset("vmadmin", {"vm": VM_ADMIN})  # PVEVMAdmin on /vms/N only
OPTS = Privset("options", {"vm": OPTIONS})  # a custom role with only VM.Config.Options on /vms/N
AUDIT = Privset("auditor", {w: AUDITOR | ({"Datastore.Audit"} if w == "storage" else set())
                            for w in ("vm", "new", "storage", "root", "mapping", "other")})
TOKEN = Privset("token", {"vm": OPTIONS})  # privsep token: its ACL (options only) is less than its user's (admin)
CLONER = Privset("cloner", {"vm": VM_ADMIN, "new": VM_ADMIN, "other": VM_ADMIN,
                            "storage": frozenset(BUILTIN_ROLES["PVEDatastoreUser"])})
PRIVSETS = [ROOT, ADMIN, VMADMIN, OPTS, AUDIT, TOKEN]

ROOT_ONLY = "root"
MEMORY, CPU, HW, OPT, DISK, CDROM, NET = (f"vm:VM.Config.{k}" for k in ("Memory", "CPU", "HWType", "Options", "Disk",
                                                                          "CDROM", "Network"))
CLOUD, SPACE = "vm:VM.Config.Cloudinit|VM.Config.Network", "storage:Datastore.AllocateSpace"
MAP = "mapping:Mapping.Use"
OTHER_DISK = f"local:{OTHER}/vm-{OTHER}-disk-0.qcow2"  # OTHER's disk
READ_STORAGE = "storage:Datastore.AllocateSpace|Datastore.Audit"


@dataclass(frozen=True)
class Row:
    """A key set (value) or deleted (value None) and what it needs on update; on create (`create`, default the
    same) and on clone of a guest that has it (`clone`; `400`: not clonable). `before`: the guest's value first."""

    key: str
    value: str | None
    needs: tuple[str, ...]
    create: tuple[str, ...] | None = None
    clone: tuple[str, ...] = ()
    before: str | None = None

    @property
    def create_needs(self) -> tuple[str, ...]:
        return self.needs if self.create is None else self.create


ROWS = [
    Row("memory", "256", (MEMORY,)), Row("balloon", "0", (MEMORY,)),
    Row("cores", "2", (CPU,)), Row("numa0", "cpus=0,memory=128", (CPU,)),
    Row("cpu", "custom-fast", (CPU, MAP), clone=(MAP,)),
    Row("vga", "qxl", (HW,)), Row("machine", "q35", (HW,)), Row("rng0", "source=/dev/urandom", (HW,)),
    Row("rng0", "source=/dev/hwrng", (HW, MAP), clone=(MAP,)),
    Row("name", "renamed", (OPT,)), Row("description", "hello", (OPT,)), Row("tags", "a;b", (OPT,)),
    Row("startup", "order=1", (OPT, "root:Sys.Modify")), Row("freeze", "1", ("vm:VM.PowerMgmt",)),
    Row("bootdisk", "scsi0", (DISK,)), Row("vmstatestorage", "local", (DISK, SPACE), clone=(SPACE,)),
    Row("net0", "virtio", (NET,)),
    Row("ipconfig0", "ip=dhcp", (CLOUD,)), Row("ciuser", "bob", (CLOUD,)), Row("cipassword", "s3cret", (CLOUD,)),
    Row("cicustom", "user=local:snippets/user.yaml", (CLOUD, "storage:Datastore.Allocate")),  # check_volume_access
    # a cloud-init drive: both privileges to attach it (update_vm's check_drive_perms), none more to allocate it
    Row("ide2", "local:cloudinit", ("vm:VM.Config.Cloudinit", CDROM), create=()),
    Row("scsi3", "local:cloudinit", ("vm:VM.Config.Cloudinit", CDROM), create=()),
    Row("scsi0", "local:1", (SPACE, DISK), create=(SPACE,), clone=(SPACE,)),
    Row("efidisk0", "local:1", (SPACE, DISK), create=(SPACE,), clone=(SPACE,)),
    Row("ide2", "local:iso/debian.iso,media=cdrom", (READ_STORAGE, CDROM), create=(READ_STORAGE,)),
    Row("ide2", "none,media=cdrom", (CDROM,), create=()),
    Row("ide2", "cdrom,media=cdrom", ("root:Sys.Console", CDROM), create=("root:Sys.Console",),
        clone=("root:Sys.Console",)),
    Row("cdrom", "none", (CDROM,), create=()),  # the alias of ide2
    Row("unused0", "local:{vmid}/vm-{vmid}-disk-9.qcow2", (), create=()),  # its own volume
    Row("scsi1", OTHER_DISK, ("storage:Datastore.Audit", "other:VM.Config.Disk", DISK),
        create=("storage:Datastore.Audit", "other:VM.Config.Disk"), clone=(SPACE,)),
    # a copy of another guest's disk needs VM.Clone on it; of an image to import, read access to its storage
    Row("scsi2", f"local:0,import-from={OTHER_DISK}", (SPACE, "other:VM.Clone", DISK), create=(SPACE, "other:VM.Clone"),
        clone=(SPACE,)),
    Row("scsi2", "local:0,import-from=local:import/seed.raw", (SPACE, READ_STORAGE, DISK),
        create=(SPACE, READ_STORAGE), clone=(SPACE,)),
    # deleting an unused volume of the guest destroys it: Datastore.AllocateSpace on its storage too
    Row("unused1", None, (DISK, SPACE), before=f"local:{GUEST}/vm-{GUEST}-disk-9.qcow2"),
    Row("serial0", "socket", (HW,)), Row("serial0", "/dev/ttyS0", (ROOT_ONLY,)),
    Row("parallel0", "/dev/parport0", (ROOT_ONLY,)),
    Row("usb0", "spice", (HW,)), Row("usb0", "host=1234:5678", (ROOT_ONLY,), clone=(ROOT_ONLY,)),
    Row("usb0", "mapping=stick", (HW, MAP), clone=(MAP,)),
    Row("hostpci0", "0000:01:00.0", (ROOT_ONLY,), clone=(ROOT_ONLY,)),
    Row("hostpci0", "mapping=gpu", (MAP, HW), clone=(MAP,)),
    Row("virtiofs0", "dirid=share", (DISK, MAP), clone=(MAP,)),
    Row("args", "-no-reboot", (ROOT_ONLY,)), Row("hookscript", "local:snippets/hook.sh", (ROOT_ONLY,)),
    Row("affinity", "0-1", (ROOT_ONLY,)), Row("vmgenid", "1", (ROOT_ONLY,)), Row("hugepages", "2", (ROOT_ONLY,)),
    Row("scsi1", "/dev/null", (ROOT_ONLY,), clone=("400",)),
    Row("ide2", "/dev/null,media=cdrom", (ROOT_ONLY,), clone=("400",)),
    # deleting, or changing from an old value: the old value counts too
    Row("memory", None, (MEMORY,), before="1024"), Row("args", None, (ROOT_ONLY,), before="-no-reboot"),
    Row("ide2", None, (CDROM,), before="none,media=cdrom"), Row("scsi1", None, (DISK,), before=OTHER_DISK),
    Row("serial0", None, (ROOT_ONLY,), before="/dev/ttyS0"), Row("serial0", None, (HW,), before="socket"),
    Row("usb0", None, (ROOT_ONLY,), before="host=1234:5678"), Row("usb0", None, (HW,), before="spice"),
    Row("serial0", "socket", (ROOT_ONLY,), before="/dev/ttyS0"),
    Row("ide2", "none,media=cdrom", (DISK, CDROM), before=OTHER_DISK),
]
SET_ROWS = [r for r in ROWS if r.value is not None and r.before is None]


def expected(privset: Privset, base: tuple[str, ...], needs: tuple[str, ...]) -> int:
    """200 if the caller holds the base privileges and what the row needs, else 403 (or the row's 400)."""
    def held(need: str) -> bool:
        if need == ROOT_ONLY:
            return privset.root
        where, _, privileges = need.partition(":")
        return privset.has(where, privileges)
    if not all(held(n) for n in base):
        return 403
    if "400" in needs:
        return 400
    return 200 if all(held(n) for n in needs) else 403


class Caller:
    """One caller's HTTPS session: root@pam's ticket, a user's ticket or an API token."""

    def __init__(self, node, user: str = "", password: str = "", token: str = "") -> None:
        self.node = node
        if not user:
            self.s = node.session()
            return
        self.s = requests.Session()
        self.s.verify, self.s.trust_env = False, False
        if token:
            self.s.headers["Authorization"] = f"PVEAPIToken={user}={token}"
            return
        data = self.s.post(node.url + "/access/ticket", data={"username": user, "password": password},
                           timeout=10).json()["data"]
        self.s.cookies.set("PVEAuthCookie", data["ticket"])
        self.s.headers["CSRFPreventionToken"] = data["CSRFPreventionToken"]

    def call(self, method: str, url: str, /, **data) -> requests.Response:
        return self.s.request(method, self.node.url + url, data=data or None, timeout=60)

    def ok(self, method: str, url: str, /, **data):
        r = self.call(method, url, **data)
        assert r.status_code == 200, (method, url, data, r.status_code, r.text)
        return r.json()["data"]

    def wait(self, upid: str) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = self.ok("GET", f"/nodes/n1/tasks/{upid}/status")
            if status["status"] == "stopped":
                return status
            time.sleep(0.02)
        raise AssertionError(f"task {upid} did not end")


@pytest.fixture(scope="module")
def world(single_node):
    """Users, roles, ACLs and tokens made through the API, as an administrator would."""
    root = Caller(single_node)
    root.ok("POST", "/access/roles", roleid="OptionsOnly", privs="VM.Config.Options")
    for user, role, path in (("admin@pve", "Administrator", "/"), ("vmadmin@pve", None, None),
                             ("opts@pve", None, None), ("auditor@pve", "PVEAuditor", "/"),
                             ("tok@pve", "Administrator", "/"), ("cloner@pve", "PVEVMAdmin", "/vms")):
        root.ok("POST", "/access/users", userid=user, password="secret-" + user)
        if role:
            root.ok("PUT", "/access/acl", path=path, roles=role, users=user)
    root.ok("PUT", "/access/acl", path="/storage/local", roles="PVEDatastoreUser", users="cloner@pve")
    snippets = os.path.join(single_node.data_dir, "storage", "local", "snippets")  # as an operator copies it
    os.makedirs(snippets, exist_ok=True)
    with open(os.path.join(snippets, "user.yaml"), "w") as f:
        f.write("#cloud-config\n")
    secret = root.ok("POST", "/access/users/tok@pve/token/limited", privsep=1)["value"]
    callers = {p.name: Caller(single_node, f"{p.name.replace('options', 'opts')}@pve",
                              f"secret-{p.name.replace('options', 'opts')}@pve")
               for p in (ADMIN, VMADMIN, OPTS, AUDIT, CLONER)}
    callers["root"] = root
    callers["token"] = Caller(single_node, "tok@pve!limited", token=secret)
    root.ok("POST", "/nodes/n1/qemu", vmid=GUEST, name=f"g{GUEST}")
    root.wait(root.ok("POST", "/nodes/n1/qemu", vmid=OTHER, name=f"g{OTHER}", scsi0="local:1"))  # OTHER_DISK
    root.ok("PUT", "/storage/local", content="backup,images,import,iso,snippets,vztmpl")  # (not by default)
    os.makedirs(os.path.join(single_node.data_dir, "storage", "local", "import"), exist_ok=True)
    with open(os.path.join(single_node.data_dir, "storage", "local", "import", "seed.raw"), "wb") as f:
        f.truncate(1 << 20)  # an image to import
    return single_node, callers


def grant(root: Caller, privset: Privset, vmid: int) -> None:
    """Give `privset` its guest-level roles on /vms/VMID."""
    if privset is VMADMIN:
        root.ok("PUT", "/access/acl", path=f"/vms/{vmid}", roles="PVEVMAdmin", users="vmadmin@pve")
    elif privset is OPTS:
        root.ok("PUT", "/access/acl", path=f"/vms/{vmid}", roles="OptionsOnly", users="opts@pve")
    elif privset is TOKEN:
        root.ok("PUT", "/access/acl", path=f"/vms/{vmid}", roles="OptionsOnly", tokens="tok@pve!limited")


def value_for(row: Row, vmid: int) -> str:
    return str(row.value).replace("{vmid}", str(vmid))


def test_create_checks_allocate_and_each_key(world):
    node, callers = world
    root, failures, vmid = callers["root"], [], CREATE_BASE
    for row in SET_ROWS:
        for privset in PRIVSETS:
            vmid += 1
            grant(root, privset, vmid)
            r = callers[privset.name].call("POST", "/nodes/n1/qemu", vmid=vmid, **{row.key: value_for(row, vmid)})
            want = expected(privset, ("vm:VM.Allocate",), row.create_needs)
            if r.status_code != want:
                failures.append((row.key, row.value, privset.name, want, r.status_code, r.text[:160]))
            if r.status_code != 200:  # nothing was created
                assert callers["root"].call("GET", f"/nodes/n1/qemu/{vmid}/config").status_code == 404
    assert not failures, "\n".join(map(str, failures))


def _reset(root: Caller, baseline: dict, row: Row) -> None:
    """Put the guest back to its baseline, with the row's old value where it has one."""
    conf = root.ok("GET", f"/nodes/n1/qemu/{GUEST}/config")
    extra = sorted(k for k in conf if k not in baseline and k != "digest")
    changed = {k: v for k, v in baseline.items() if conf.get(k) != v}
    key = "ide2" if row.key == "cdrom" else row.key
    if row.before is not None:
        changed[key] = row.before
        extra = [k for k in extra if k != key]
    if extra or changed:
        root.ok("PUT", f"/nodes/n1/qemu/{GUEST}/config", **changed, **({"delete": ",".join(extra)} if extra else {}))


def test_update_by_put_and_post_checks_each_key_and_old_value(world):
    node, callers = world
    root, failures = callers["root"], []
    for privset in PRIVSETS:
        grant(root, privset, GUEST)
    baseline = {k: v for k, v in root.ok("GET", f"/nodes/n1/qemu/{GUEST}/config").items() if k != "digest"}
    for row in ROWS:
        _reset(root, baseline, row)
        change = {"delete": row.key} if row.value is None else {row.key: value_for(row, GUEST)}
        for privset in PRIVSETS:
            want = expected(privset, ("vm:" + "|".join(sorted(CONFIG_PRIVS)),), row.needs)
            for method in ("PUT", "POST"):
                before = root.ok("GET", f"/nodes/n1/qemu/{GUEST}/config")
                r = callers[privset.name].call(method, f"/nodes/n1/qemu/{GUEST}/config", **change)
                if r.status_code != want:
                    failures.append((method, row.key, row.value, row.before, privset.name, want, r.status_code,
                                     r.text[:160]))
                if r.status_code == 200:
                    if method == "POST":
                        assert root.wait(r.json()["data"])["exitstatus"] == "OK"
                    _reset(root, baseline, row)
                else:  # a refusal writes nothing
                    assert root.ok("GET", f"/nodes/n1/qemu/{GUEST}/config") == before
    assert not failures, "\n".join(map(str, failures))


def test_clone_needs_allocate_on_the_new_id_and_storage_and_no_host_devices(world):
    node, callers = world
    root, failures, newid = callers["root"], [], CLONE_BASE
    clone_sets = [ROOT, ADMIN, VMADMIN, CLONER, OPTS, AUDIT, TOKEN]
    for i, row in enumerate(SET_ROWS):
        source = SOURCE_BASE + i
        upid = root.ok("POST", "/nodes/n1/qemu", vmid=source, **{row.key: value_for(row, source)})
        root.wait(upid)
        for privset in clone_sets:
            grant(root, privset, source)
        for privset in clone_sets:
            newid += 1
            r = callers[privset.name].call("POST", f"/nodes/n1/qemu/{source}/clone", newid=newid)
            want = expected(privset, ("vm:VM.Clone", "new:VM.Allocate"), row.clone)
            if r.status_code != want:
                failures.append((row.key, row.value, privset.name, want, r.status_code, r.text[:160]))
            if r.status_code == 200:
                root.wait(r.json()["data"])
            elif privset is VMADMIN:  # item 6 of the issue: VM.Clone on the source is not enough
                assert json.loads(r.text)["message"] == \
                    f"Permission denied - missing 'VM.Allocate' on '/vms/{newid}'"
            if r.status_code != 200:
                assert root.call("GET", f"/nodes/n1/qemu/{newid}/config").status_code == 404
    assert not failures, "\n".join(map(str, failures))


ONLY_ROOT_PATHS = "Only root can pass arbitrary filesystem paths."
FUZZ = [  # (key, value, status for a non-root administrator, message); root gets 200 where the status is 403
    ("scsi1", "/etc/shadow", 403, ONLY_ROOT_PATHS),
    ("ide2", "/etc/shadow,media=cdrom", 403, ONLY_ROOT_PATHS),
    ("scsi1", "media=disk,file=/etc/shadow", 403, ONLY_ROOT_PATHS),
    ("scsi1", "volume=/etc/shadow", 403, ONLY_ROOT_PATHS),
    ("scsi1", "local:1,file=/etc/shadow", 400,
     "invalid format - duplicate key in comma-separated list property: file"),
    ("ide2", "local:iso//etc/shadow,media=cdrom", 400, "unable to parse directory volume name 'iso//etc/shadow'"),
    ("ide2", "local:iso/../../../../etc/shadow.iso,media=cdrom", 400,
     "unable to parse directory volume name 'iso/../../../../etc/shadow.iso'"),
    ("ide2", "local:iso/./debian.iso,media=cdrom", 400, "unable to parse directory volume name 'iso/./debian.iso'"),
    ("ide2", "local:iso/%2e%2e%2f%2e%2e%2fetc%2fshadow.iso,media=cdrom", 400,
     "unable to parse directory volume name 'iso/%2e%2e%2f%2e%2e%2fetc%2fshadow.iso'"),
    ("scsi1", f"local:{GUEST}/../../../../etc/shadow", 400,
     f"unable to parse directory volume name '{GUEST}/../../../../etc/shadow'"),
    ("scsi1", f"local:{GUEST}/vm-{GUEST}-disk-0.qcow2/../../x", 400,
     f"unable to parse directory volume name '{GUEST}/vm-{GUEST}-disk-0.qcow2/../../x'"),
    ("scsi1", f"local:{GUEST}/vm-{OTHER}-disk-0.qcow2", 400,
     f"unable to parse directory volume name '{GUEST}/vm-{OTHER}-disk-0.qcow2'"),
    ("scsi1", f"local:images/{GUEST}/vm-{GUEST}-disk-0.qcow2", 400,
     f"unable to parse directory volume name 'images/{GUEST}/vm-{GUEST}-disk-0.qcow2'"),
    ("scsi1", "local:snippets/user.yaml", 400, "content type needs to be 'images' or 'iso'"),
    ("scsi1", f"local:backup/vzdump-qemu-{GUEST}-2024_01_01-00_00_00.vma.zst", 400,
     "content type needs to be 'images' or 'iso'"),
    ("scsi1", "local:vztmpl/debian.tar.zst", 400, "content type needs to be 'images' or 'iso'"),
    ("scsi1", "local:iso/debian.iso", 400, "explicit 'media=cdrom' is required for iso images"),
    ("scsi1", "etc/shadow", 400,
     "invalid format - format error\nscsi1.file: invalid format - unable to parse volume ID 'etc/shadow'"),
    ("scsi1", f"LOCAL:{GUEST}/vm-{GUEST}-disk-0.qcow2", 400,
     f"unable to parse volume ID 'LOCAL:{GUEST}/vm-{GUEST}-disk-0.qcow2'"),
    ("cicustom", "user=local:snippets/../../../x", 400, "unable to parse directory volume name 'snippets/../../../x'"),
    ("cicustom", "user=local:snippets/%2e%2e", 400, "unable to parse directory volume name 'snippets/%2e%2e'"),
    ("cicustom", "user=local:iso/debian.iso", 400, "local:iso/debian.iso is not in the snippets directory"),
    ("cicustom", "user=/etc/shadow", 400,
     "invalid format - format error\ncicustom.user: invalid format - unable to parse volume ID '/etc/shadow'"),
    ("hookscript", "local:snippets/../../x.sh", 400, "unable to parse directory volume name 'snippets/../../x.sh'"),
    ("hookscript", "local:iso/debian.iso", 400, "'local:iso/debian.iso' is not in the snippets directory"),
    ("scsi1", "local:0,import-from=local:iso/debian.iso", 400,
     "local:iso/debian.iso has wrong type 'iso' - needs to be 'images' or 'import'"),
    ("scsi1", "local:0,import-from=local:import/../../../etc/shadow.raw", 400,
     "unable to parse directory volume name 'import/../../../etc/shadow.raw'"),
    ("scsi1", "local:0,import-from=etc/shadow", 400,
     "invalid format - format error\nscsi1.import-from: invalid format - unable to parse volume ID 'etc/shadow'"),
    ("scsi1", "local:2,import-from=local:import/seed.raw", 400,
     "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"),
    ("scsi1", "local:0,import-from=local:import/missing.qcow2", 400,
     "cannot import from 'local:import/missing.qcow2' - could not get size of local:import/missing.qcow2"),
    ("efidisk0", "local:0,import-from=local:import/seed.raw", 400,
     "need to specify 'efitype' when using 'import-from'"),
    ("efidisk0", "local:1,efitype=3m", 400,
     "invalid format - format error\nefidisk0.efitype: value '3m' does not have a value in the enumeration '2m, 4m'"),
    ("unused0", "/etc/shadow", 400,
     "invalid format - format error\nunused0.file: invalid format - unable to parse volume ID '/etc/shadow'"),
    ("unused0", "local:iso/debian.iso", 400,
     "unable to use volume local:iso/debian.iso - content type needs to be 'images'"),
]


@pytest.fixture(scope="module")
def fuzzed(world) -> int:
    """The guest the fuzz cases aim at."""
    world[1]["root"].ok("POST", "/nodes/n1/qemu", vmid=970, name="fuzzed", memory=64)
    return 970


@pytest.mark.parametrize("key,value,status,message", FUZZ, ids=[f"{k}={v}" for k, v, _, _ in FUZZ])
def test_host_paths_and_malformed_volume_ids_are_refused_and_change_nothing(world, fuzzed, key, value, status,
                                                                            message):
    node, callers = world
    root, admin = callers["root"], callers["admin"]
    before = root.ok("GET", f"/nodes/n1/qemu/{fuzzed}/config")
    for method, path, data in (("PUT", f"/nodes/n1/qemu/{fuzzed}/config", {}),
                               ("POST", f"/nodes/n1/qemu/{fuzzed}/config", {}),
                               ("POST", "/nodes/n1/qemu", {"vmid": 990})):
        r = admin.call(method, path, **data, **{key: value})
        body = r.json()
        assert r.status_code == status, (method, path, r.text)
        assert (body["errors"][key] if status == 400 else body["message"]) == message
        r = root.call(method, path, **data, **{key: value})
        if status == 400:  # what does not parse is refused to root@pam too
            assert r.status_code == 400 and r.json()["errors"][key] == message
        else:  # root@pam may pass a host path, as in Proxmox; undo it
            assert r.status_code == 200, r.text
            if method == "POST":
                root.wait(r.json()["data"])
            if "vmid" in data:
                root.wait(root.ok("DELETE", "/nodes/n1/qemu/990"))
            else:
                root.ok("PUT", f"/nodes/n1/qemu/{fuzzed}/config", delete=key)
    assert root.ok("GET", f"/nodes/n1/qemu/{fuzzed}/config") == before
    assert root.call("GET", "/nodes/n1/qemu/990/config").status_code == 404


def test_a_literal_percent_sign_survives_the_form_encoding_once_and_is_refused(world, fuzzed):
    node, callers = world
    body = "ide2=local%3Aiso%2F%252e%252e%252f%252e%252e%252fetc%252fshadow.iso%2Cmedia%3Dcdrom"
    r = callers["admin"].s.put(node.url + f"/nodes/n1/qemu/{fuzzed}/config", data=body,
                               headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.status_code == 400
    assert r.json()["errors"]["ide2"] == \
        "unable to parse directory volume name 'iso/%2e%2e%2f%2e%2e%2fetc%2fshadow.iso'"


def test_resize_never_touches_a_host_file(world, tmp_path):
    node, callers = world
    root, admin, vmadmin = callers["root"], callers["admin"], callers["vmadmin"]
    host_file = tmp_path / "host.img"
    host_file.write_bytes(b"\0" * 4096)
    seen = host_file.stat()
    vmid = 980
    root.wait(root.ok("POST", "/nodes/n1/qemu", vmid=vmid, scsi0="local:1", scsi1=str(host_file),
                      ide2="local:iso/debian.iso,media=cdrom"))
    grant(root, VMADMIN, vmid)
    for caller in (admin, root):
        r = caller.call("PUT", f"/nodes/n1/qemu/{vmid}/resize", disk="scsi1", size="+1G")
        assert (r.status_code, r.json()["message"]) == (400, f"unable to parse volume ID '{host_file}'")
    r = root.call("PUT", f"/nodes/n1/qemu/{vmid}/resize", disk="ide2", size="+1G")
    assert (r.status_code, r.json()["message"]) == (400, "you can't resize a cdrom")
    now = host_file.stat()
    assert (now.st_size, now.st_mtime_ns) == (seen.st_size, seen.st_mtime_ns)
    # a delegated user can neither point a disk at a host file nor grow a volume without storage rights
    r = admin.call("PUT", f"/nodes/n1/qemu/{vmid}/config", scsi2=str(host_file))
    assert (r.status_code, r.json()["message"]) == (403, ONLY_ROOT_PATHS)
    r = vmadmin.call("PUT", f"/nodes/n1/qemu/{vmid}/resize", disk="scsi0", size="+1G")
    assert (r.status_code, r.json()["message"]) == \
        (403, "Permission denied - missing 'Datastore.AllocateSpace' on '/storage/local'")
    assert root.wait(root.ok("PUT", f"/nodes/n1/qemu/{vmid}/resize", disk="scsi0", size="+1G"))["exitstatus"] == "OK"
    assert root.ok("GET", f"/nodes/n1/qemu/{vmid}/config")["scsi0"].endswith("size=2G")


def test_migrate_options_for_root_and_storage_privileges_for_a_target_storage(world):
    node, callers = world
    vmadmin = callers["vmadmin"]
    r = vmadmin.call("POST", f"/nodes/n1/qemu/{GUEST}/migrate", target="n2", force=1)
    assert (r.status_code, r.json()["errors"]) == (400, {"force": "Only root may use this option."})
    r = vmadmin.call("POST", f"/nodes/n1/qemu/{GUEST}/migrate", target="n2", targetstorage="local")
    assert (r.status_code, r.json()["message"]) == \
        (403, "Permission denied - missing 'Datastore.AllocateSpace' on '/storage/local'")
    r = vmadmin.call("POST", f"/nodes/n1/qemu/{GUEST}/migrate", target="n2", targetstorage="1")
    assert r.status_code == 400 and "target" in r.json()["errors"]  # past the checks: n2 is not online


def test_the_openapi_document_states_the_declared_checks(world):
    node, _ = world
    doc = requests.get(node.url + "/openapi.json", verify=False, timeout=10).json()
    qemu = "/api2/json/nodes/{node}/qemu"
    create = doc["paths"][qemu]["post"]["x-permission"]
    assert (create["privilege"], create["path"], create["or"]["path"]) == ("VM.Allocate", "/vms/{vmid}",
                                                                           "/pool/{pool}")
    config = doc["paths"][qemu + "/{vmid}/config"]["put"]["x-permission"]
    assert set(config["any"]) == CONFIG_PRIVS and "VM.Config.Memory: memory" in config["description"]
    clone = doc["paths"][qemu + "/{vmid}/clone"]["post"]["x-permission"]
    assert (clone["privilege"], clone["and"]["privilege"], clone["and"]["path"]) == ("VM.Clone", "VM.Allocate",
                                                                                     "/vms/{newid}")
