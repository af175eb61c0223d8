"""vClusters as log records: tenant Kubernetes clusters that gpve runs on guests cloned from a vCluster template.

A record (`State.vclusters[id]`):
`{id, name, k8s_version, isolation (namespace | vm), template (VMID), cpu (cores per guest), memory (MiB per guest),
workers, node, network {bridge, cidr, gateway}, addresses {role: IPv4}, guests {role: VMID}, status, reason, upid
(its current or last task), owner, created, api_server, pki}` where a role is `cp` (the control plane) or `wN`
(worker N, `vm` isolation only) and `pki` is the cluster's keys and certificates sealed by the proposer with a key
only members hold (api/vcluster_pki.py): never in clear in the log, never answered.

Decided here, at the command's log position, so nothing races: the template offering the Kubernetes version, the
node (the selected one, or the one with the most free memory) and the guests' addresses (the lowest free host
addresses of the network, none used by another vCluster, never the gateway). Status: `provisioning` → `running`,
`scaling` → `running`, `deleting` (then the record is forgotten), `failed` with `reason`; a record whose task ended in
an error shows `failed` with the task's exit status as reason (`task_status`), whatever ended it (a restart too); a
`running` one whose guest is gone or does not run shows `failed` with that reason (`shown_status`).

The tasks (declared in engine/tasks.py's table): `vccreate`, `vcscale`, `vcdelete` run on the node that took the
request and drive the guests through the guest services; `vcsnippet` runs on the vCluster's node and writes (or
removes) its cloud-init snippets there.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from engine import storage as storage_rules
from engine import tasks
from engine.commands import Command
from engine.decide import Decision, decide
from engine.errors import Rejection, bad_request, conflict, not_found
from engine.events import Event, TaskStarted
from engine.roles import privileges_on
from engine.state import State, apply, put_record
from engine.volumes import owned_volumes

ISOLATIONS = ("namespace", "vm")
TEMPLATE_TAG = "gpve-vcluster"  # a template carrying this tag is a vCluster template
VERSION_TAG = "k8s-"  # ... and each `k8s-<version>` tag names a Kubernetes version its image provides
VERSION = re.compile(r"[0-9a-z][0-9a-z_\-+.]*")  # what a tag can hold (Proxmox's pve-tag, lower case)
K8S_VERSION = re.compile(r"v?(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})")  # Kubernetes' MAJOR.MINOR.PATCH
VC_ID = re.compile(r"vc-[a-z0-9]{4,32}")
NAME = re.compile(r"[a-z0-9]([a-z0-9\-]{0,38}[a-z0-9])?")  # a DNS label: it names the guests (`NAME-cp`)
DEFAULT_NETWORK = {"bridge": "vmbr0", "cidr": "10.77.0.0/24", "gateway": "10.77.0.1"}
BUSY = ("provisioning", "scaling", "deleting")
MAX_WORKERS = 16
MIB = 1 << 20
MAX_MEMORY = 4 << 20  # MiB: 4Ti per guest, a bound that keeps every figure recordable
MAX_CORES = 512
CHANGEABLE = ("status", "reason", "guests", "uuids", "pki", "api_server", "cpu", "memory", "workers", "addresses",
              "previous_node")
_QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?")
_FACTORS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}


# ---- quantities (Kubernetes' resource.Quantity, the forms a pod spec takes) ----------------------------------
def memory_mib(text: str | int) -> int:
    """`8Gi`, `512Mi`, `1G`, `1500k` or plain bytes (no spaces), as MiB (rounded up: a guest gets at least what was
    asked). ValueError for anything else, under 16 MiB (Proxmox's minimum) or over 4Ti."""
    m = _QUANTITY.fullmatch(str(text))
    if not m:
        raise ValueError(f"invalid memory quantity '{text}' - use bytes or a suffix such as 512Mi, 8Gi, 1G")
    size = int(m.group(1)) * _FACTORS[m.group(2)]
    mib = -(-size // MIB)
    if mib < 16:
        raise ValueError(f"memory '{text}' is less than the minimum of 16Mi")
    if mib > MAX_MEMORY:
        raise ValueError(f"memory '{text}' is more than the maximum of {memory_text(MAX_MEMORY)}")
    return mib


def memory_text(mib: int) -> str:
    """MiB as shown: in the largest binary unit that states it exactly (`8Gi`, `1536Mi`, `4Ti`)."""
    for unit, factor in (("Ti", 1 << 20), ("Gi", 1 << 10)):
        if mib % factor == 0:
            return f"{mib // factor}{unit}"
    return f"{mib}Mi"


def cpu_cores(text: str | int) -> int:
    """A CPU quantity as whole cores: `4`, or millicores `500m` rounded up (no spaces). ValueError for anything
    else, 0, or more than MAX_CORES."""
    m = re.fullmatch(r"(\d+)(m?)", str(text))
    if not m:
        raise ValueError(f"invalid cpu quantity '{text}' - use cores (4) or millicores (500m)")
    cores = -(-int(m.group(1)) // 1000) if m.group(2) else int(m.group(1))
    if cores < 1:
        raise ValueError("cpu must be at least 1m")
    if cores > MAX_CORES:
        raise ValueError(f"cpu '{text}' is more than the maximum of {MAX_CORES} cores")
    return cores


def k8s_version(text: str) -> str | None:
    """`1.28.0` or `v1.28.0` as `1.28.0`; None for anything else."""
    m = K8S_VERSION.fullmatch(text)
    return ".".join(m.groups()) if m else None


# ---- templates -------------------------------------------------------------------------------------------
def template_versions(conf: dict) -> list[str] | None:
    """The Kubernetes versions a template's config offers; None when it is no vCluster template."""
    tags = [t for t in str(conf.get("tags", "")).replace(",", ";").split(";") if t]
    if not conf.get("template") or TEMPLATE_TAG not in tags:
        return None
    return sorted(t[len(VERSION_TAG):] for t in tags if t.startswith(VERSION_TAG) and len(t) > len(VERSION_TAG))


def offered_versions(s: State) -> dict[str, list[int]]:
    """version -> the vCluster templates (VMIDs, ascending) offering it."""
    out: dict[str, list[int]] = {}
    for vmid, guest in sorted(s.guests.items()):
        for version in template_versions(guest["conf"]) or ():
            out.setdefault(version, []).append(vmid)
    return out


def clone_nodes(s: State, template: int) -> list[str]:
    """The nodes a template can be cloned onto: every node when all its volumes are on shared storage, else its
    own (another node cannot reach its local storage; Proxmox: `can't clone to node ... VM uses local storage`)."""
    guest = s.guests[template]
    shared = storage_rules.definitions(s)
    local = [v for v in owned_volumes(template, guest["conf"])
             if str(shared.get(v.partition(":")[0], {}).get("shared", "0")) not in ("1", "True")]
    return [guest["node"]] if local else sorted(s.nodes)


def choose_template(s: State, version: str, template: int | None, selector: str | None = None) -> int:
    """The template to clone: `template` if given (it must offer `version`), else the lowest VMID offering it that
    can be cloned onto `selector` (if given). 400 naming the versions available otherwise."""
    offered = offered_versions(s)
    available = ", ".join(sorted(offered)) or "none (register a template with kind 'vcluster')"
    if template is not None:
        versions = template_versions(s.guests.get(template, {}).get("conf", {}))
        if versions is None:
            raise bad_request("Parameter verification failed",
                              {"template": f"VM {template} is no vCluster template"})
        if version not in versions:
            raise bad_request("Parameter verification failed", {
                "k8s_version": f"template {template} does not offer Kubernetes {version} - available: "
                               f"{', '.join(versions)}"})
        return template
    if version not in offered:
        raise bad_request("Parameter verification failed",
                          {"k8s_version": f"unsupported Kubernetes version '{version}' - available: {available}"})
    reachable = [t for t in offered[version] if selector is None or selector in clone_nodes(s, t)]
    if not reachable:
        raise bad_request("Parameter verification failed", {
            "node_selector.node": f"no vCluster template offering Kubernetes {version} can be cloned onto node "
                             f"'{selector}' (their disks are on another node's local storage)"})
    return reachable[0]


# ---- its guests ------------------------------------------------------------------------------------------
def guest_tag(vc_id: str) -> str:
    """The tag (Proxmox's tag syntax) its guests carry: `vcluster-<id>`."""
    return f"vcluster-{vc_id}"


def smbios_uuid(conf: dict) -> str:
    m = re.search(r"(?:^|,)uuid=([0-9a-fA-F-]+)", str(conf.get("smbios1", "")))
    return m.group(1).lower() if m else ""


def not_own_guest(s: State, vc: dict, role: str) -> str | None:
    """None while the guest recorded for `role` still is the vCluster's: its SMBIOS uuid the one recorded once it
    was cloned (`uuids`), or else its name `NAME-ROLE` and tag `vcluster-<id>`; else why not (it is gone, or its
    VMID now belongs to another guest: a guest destroyed behind the vCluster's back, its VMID reused)."""
    vmid, name = vc["guests"].get(role), f"{vc['name']}-{role}"
    guest = s.guests.get(vmid) if vmid is not None else None
    if guest is None:
        return f"VM {vmid} ({name}) no longer exists"
    conf, uuid = guest["conf"], vc.get("uuids", {}).get(role)
    tags = str(conf.get("tags", "")).replace(",", ";").split(";")
    if (smbios_uuid(conf) != uuid) if uuid else (conf.get("name") != name or guest_tag(vc["id"]) not in tags):
        return f"VM {vmid} is no longer {name} of vCluster {vc['id']} (another guest has its VMID)"
    return None


# ---- the vCluster's snippets -----------------------------------------------------------------------------
SNIPPET = re.compile(r"(vc-[a-z0-9]{4,32})-(cp|w[1-9][0-9]*)\.yaml")  # `<id>-<role>.yaml`: it holds the keys


def check_snippet_use(s: State, vmid: int, cicustom: str | None) -> None:
    """A `cicustom` naming a vCluster's snippet (`STORAGE:snippets/<id>-<role>.yaml`) is for that vCluster's guest of
    that role only, which its service sets: anyone else (root@pam too) gets 403 naming it, whether it exists or
    not (no oracle). A gpve rule (Proxmox has no vClusters)."""
    for volid in re.findall(r"(?:^|,)\s*(?:meta|network|user|vendor)=([^,]+)", str(cicustom or "")):
        m = SNIPPET.fullmatch(volid.strip().partition(":")[2].removeprefix("snippets/"))
        if m and s.vclusters.get(m.group(1), {}).get("guests", {}).get(m.group(2)) != vmid:
            raise Rejection(403, f"volume '{volid.strip()}' is a vCluster's cloud-init snippet - only that "
                                 "vCluster's own guests can use it")


# ---- placement -------------------------------------------------------------------------------------------
def roles(workers: int) -> list[str]:
    return ["cp", *(f"w{n}" for n in range(1, workers + 1))]


def task_status(s: State, vc: dict) -> tuple[str, str]:
    """(status, reason) as its tasks left it: a busy record whose task ended in an error is `failed`, the task's
    exit status its reason (a handler that could not say so itself: its node restarted, say)."""
    task = s.tasks.get(vc.get("upid", ""))
    if vc["status"] in BUSY and task is not None and task["status"] == "stopped" and task["exitstatus"] != "OK":
        return "failed", task["exitstatus"]
    return vc["status"], vc.get("reason", "")


def shown_status(s: State, vc: dict) -> tuple[str, str]:
    """(status, reason) as answered: `task_status`, and a `running` vCluster whose guest is gone, another guest's
    now or not running is `failed` with that as reason (`VM 105 (dev-cp) no longer exists`, `VM 105 (dev-cp) is
    stopped`); it is `running` again once its guests run again."""
    status, reason = task_status(s, vc)
    if status != "running":
        return status, reason
    for role in sorted(vc.get("guests", {}), key=lambda r: (r != "cp", r)):
        why = not_own_guest(s, vc, role)
        if why is not None:
            return "failed", why
        vmid = vc["guests"][role]
        if s.guests[vmid].get("status") != "running":
            return "failed", f"VM {vmid} ({vc['name']}-{role}) is {s.guests[vmid].get('status') or 'stopped'}"
    return status, reason


def committed_mib(s: State, node: str, skip: str | None = None) -> int:
    """Memory promised on `node`: every vCluster's guests placed there (but `skip`'s, and failed ones'), and the
    running guests that belong to no vCluster."""
    owned = {v for vc in s.vclusters.values() for v in vc.get("guests", {}).values()}
    total = sum(int(g["conf"].get("memory", 512)) for v, g in s.guests.items()
                if g["node"] == node and g.get("status") == "running" and v not in owned)
    for vc_id, vc in s.vclusters.items():
        if vc["node"] == node and vc_id != skip and task_status(s, vc)[0] != "failed":
            total += vc["memory"] * (1 + vc["workers"])
    return total


def free_mib(s: State, node: str, skip: str | None = None) -> tuple[int, int]:
    """(free, total) MiB of `node` for vCluster guests."""
    total = int(s.nodes[node].get("static", {}).get("memory", 0)) // MIB
    return total - committed_mib(s, node, skip), total


def place(s: State, selector: str | None, cpu: int, memory: int, guests: int, skip: str | None = None,
          among: list[str] | None = None) -> str:
    """The node for `guests` guests of `cpu` cores and `memory` MiB each: `selector`, or the node (of `among`, default
    all) with the most free memory. A guest may not have more cores than its node has CPUs (Proxmox: `MAX N vcpus
    allowed per VM on this node`). 400 for an unknown node or one the template cannot be cloned onto, 409 naming
    each node's free memory when none fits."""
    if selector is not None and selector not in s.nodes:
        raise bad_request("Parameter verification failed",
                          {"node_selector.node": f"no such cluster node '{selector}'"})
    if selector is not None and among is not None and selector not in among:
        raise bad_request("Parameter verification failed", {
            "node_selector.node": f"the template cannot be cloned onto node '{selector}' (its disks are on local "
                                  f"storage of node {', '.join(among)})"})
    need = memory * guests
    fits, seen = [], []
    for name in [selector] if selector else sorted(among if among is not None else s.nodes):
        free, total = free_mib(s, name, skip)
        cpus = int(s.nodes[name].get("static", {}).get("cpus", 0))
        seen.append(f"{name}: {max(free, 0)} MiB free of {total} MiB, {cpus} CPUs")
        if free >= need and cpu <= cpus:
            fits.append((-free, name))
    if not fits:
        raise conflict(f"no node can take the vCluster: it needs {guests} guest(s) of {cpu} core(s) and {memory} MiB "
                       f"({need} MiB in all) - {'; '.join(seen)}")
    return min(fits)[1]


# ---- addresses -------------------------------------------------------------------------------------------
def check_network(network: dict) -> dict:
    """`{bridge, cidr, gateway}` checked: an IPv4 network with room for guests, the gateway inside it. 400."""
    errors = {}
    bridge = str(network.get("bridge", ""))
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.\-]{0,14}", bridge):
        errors["network.bridge"] = f"invalid bridge name '{bridge}'"
    try:
        net = ipaddress.IPv4Network(str(network.get("cidr", "")), strict=True)
        if net.prefixlen > 29:
            errors["network.cidr"] = "network too small (at most /29)"
    except ValueError as exc:
        errors["network.cidr"] = f"invalid IPv4 network - {exc}"
        net = None
    try:
        gateway = ipaddress.IPv4Address(str(network.get("gateway", "")))
        if net is not None and (gateway not in net or gateway in (net.network_address, net.broadcast_address)):
            errors["network.gateway"] = f"gateway {gateway} is no host address of {net}"
    except ValueError:
        errors["network.gateway"] = f"invalid IPv4 address '{network.get('gateway', '')}'"
    if errors:
        raise bad_request("Parameter verification failed", errors)
    return {"bridge": bridge, "cidr": str(net), "gateway": str(gateway)}


def allocate(s: State, network: dict, wanted: list[str], keep: dict | None = None, skip: str | None = None) -> dict:
    """role -> address for the roles `wanted`: those in `keep` keep theirs, the others get the lowest host addresses
    of `network` that no vCluster (but `skip`) uses and that are not the gateway. 409 when the network is full."""
    net = ipaddress.IPv4Network(network["cidr"])
    used = {network["gateway"]}
    for vc_id, vc in s.vclusters.items():
        if vc_id != skip:
            used |= set(vc.get("addresses", {}).values())
    out = {r: a for r, a in (keep or {}).items() if r in wanted}
    used |= set(out.values())
    hosts = (str(h) for h in net.hosts())
    for role in wanted:
        if role in out:
            continue
        address = next((h for h in hosts if h not in used), None)
        if address is None:
            raise conflict(f"no free address left in {net} for the vCluster's guests")
        out[role] = address
        used.add(address)
    return out


# ---- commands and events ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CreateVCluster(Command):
    """A new vCluster (or a failed one of the same name provisioned anew) and its `vccreate` task, run by
    `orchestrator`. `cpu` cores and `memory` MiB per guest; `selector` the node asked for, if any."""

    TYPE = "vcluster.create"
    vc_id: str
    name: str
    k8s_version: str
    isolation: str
    cpu: int
    memory: int
    workers: int = 0
    selector: str | None = None
    network: dict = field(default_factory=dict)
    template: int | None = None
    orchestrator: str
    upid: str
    starttime: int


@dataclass(frozen=True, kw_only=True)
class StartVClusterTask(Command):
    """`vcscale` (intent: `cpu`, `memory`, `workers`, any of them), `vcdelete`, or `vcsnippet` (intent `storage`,
    `roles`, `remove`) for vCluster `vc_id`, run by `node` (`vcsnippet`: the vCluster's node, or that of its failed
    attempt)."""

    TYPE = "vcluster.task"
    vc_id: str
    type: str
    node: str
    upid: str
    starttime: int
    intent: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class UpdateVCluster(Command):
    """What a vCluster task learnt or made: the `CHANGEABLE` fields given."""

    TYPE = "vcluster.update"
    vc_id: str
    values: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ForgetVCluster(Command):
    """The end of a deletion: the record and its keys go."""

    TYPE = "vcluster.forget"
    vc_id: str


@dataclass(frozen=True, kw_only=True)
class VClusterChanged(Event):
    TYPE = "vcluster.changed"
    vc_id: str
    value: dict | None


@apply.register
def _(e: VClusterChanged, s: State) -> State:
    put_record(s.vclusters, e.vc_id, e.value)
    return s


def _record(s: State, vc_id: str) -> dict:
    vc = s.vclusters.get(vc_id)
    if vc is None:
        raise not_found(f"vCluster '{vc_id}' does not exist")
    return vc


@decide.register
def _(c: CreateVCluster, s: State) -> Decision:
    if not NAME.fullmatch(c.name):
        raise bad_request("Parameter verification failed",
                          {"name": "value must be a lowercase DNS label of at most 40 characters"})
    if c.isolation not in ISOLATIONS:
        raise bad_request("Parameter verification failed", {
            "isolation": f"value '{c.isolation}' does not have a value in the enumeration '{', '.join(ISOLATIONS)}'"})
    if not 0 <= c.workers <= MAX_WORKERS:
        raise bad_request("Parameter verification failed", {"workers": f"value must be between 0 and {MAX_WORKERS}"})
    if c.workers and c.isolation != "vm":
        raise bad_request("Parameter verification failed",
                          {"workers": "workers need isolation 'vm' (with 'namespace' the control plane runs the "
                                      "workloads)"})
    if c.orchestrator not in s.nodes:
        raise not_found(f"no such cluster node '{c.orchestrator}'")
    same = next((v for v in s.vclusters.values() if v["name"] == c.name), None)
    if same is not None:
        # its id only to who may audit it; provisioning it anew (a failed one) needs VCluster.Allocate on it
        held = privileges_on(s, c.user, f"/vclusters/{same['id']}")
        if shown_status(s, same)[0] != "failed" or "VCluster.Allocate" not in held:
            raise conflict(f"vCluster '{c.name}' already exists" +
                           (f" ({same['id']})" if "VCluster.Audit" in held else ""))
    vc_id = same["id"] if same is not None else c.vc_id
    if same is None and not VC_ID.fullmatch(vc_id):
        raise bad_request(f"invalid vCluster id '{vc_id}'")
    if same is None and vc_id in s.vclusters:
        raise conflict(f"vCluster id '{vc_id}' is taken")
    if c.selector is not None and c.selector not in s.nodes:
        raise bad_request("Parameter verification failed",
                          {"node_selector.node": f"no such cluster node '{c.selector}'"})
    template = choose_template(s, c.k8s_version, c.template, c.selector)
    network = check_network(c.network or DEFAULT_NETWORK)
    wanted = roles(c.workers)
    if c.template is None and c.selector is None:  # every template offering the version, and where it can go
        candidates = offered_versions(s)[c.k8s_version]
        among = sorted({n for t in candidates for n in clone_nodes(s, t)})
        node = place(s, None, c.cpu, c.memory, len(wanted), skip=vc_id, among=among)
        template = next(t for t in candidates if node in clone_nodes(s, t))
    else:
        node = place(s, c.selector, c.cpu, c.memory, len(wanted), skip=vc_id, among=clone_nodes(s, template))
    keep = same["addresses"] if same is not None and same["network"] == network else None
    addresses = allocate(s, network, wanted, keep, skip=vc_id)
    record = {"id": vc_id, "name": c.name, "k8s_version": c.k8s_version, "isolation": c.isolation,
              "template": template, "cpu": c.cpu, "memory": c.memory, "workers": c.workers, "node": node,
              "network": network, "addresses": addresses, "status": "provisioning", "reason": "",
              # a failed attempt's guests and node: the new attempt removes what it left first
              "guests": dict(same["guests"]) if same else {}, "uuids": dict(same.get("uuids", {})) if same else {},
              "previous_node": same["node"] if same else node,
              "upid": c.upid, "owner": c.user, "created": same["created"] if same else c.ts, "api_server": "",
              "pki": ""}
    return [VClusterChanged(vc_id=vc_id, value=record),
            TaskStarted(upid=c.upid, node=c.orchestrator, type="vccreate", id=vc_id, user=c.user,
                        starttime=c.starttime, intent={"vcluster": vc_id})], {"id": vc_id, "upid": c.upid, "node": node}


@decide.register
def _(c: StartVClusterTask, s: State) -> Decision:
    vc = _record(s, c.vc_id)
    kind = tasks.kind(c.type)
    if c.type not in VC_KINDS or c.type == "vccreate":
        raise bad_request(f"task type '{c.type}' is no vCluster task")
    kind.check_intent(c.intent, c.user)
    if c.node not in s.nodes:
        raise not_found(f"no such cluster node '{c.node}'")
    status, _ = shown_status(s, vc)
    events: list[Event] = []
    if c.type == "vcsnippet":
        if c.node not in (vc["node"], vc.get("previous_node")):
            raise bad_request(f"the snippets of vCluster '{c.vc_id}' are on node '{vc['node']}'")
    elif c.type == "vcdelete":
        if status in BUSY:
            where = s.tasks.get(vc.get("upid", ""), {}).get("node", c.node)
            raise conflict(f"vCluster '{c.vc_id}' is busy ({status}) - try again when it is done, or stop its task "
                           f"(DELETE /nodes/{where}/tasks/{vc['upid']})")
        events.append(VClusterChanged(vc_id=c.vc_id, value={**vc, "status": "deleting", "reason": "",
                                                            "upid": c.upid}))
    else:
        if status != "running":
            raise conflict(f"vCluster '{c.vc_id}' is {status} - only a running vCluster can be scaled")
        cpu, memory = c.intent.get("cpu", vc["cpu"]), c.intent.get("memory", vc["memory"])
        workers = c.intent.get("workers", vc["workers"])
        if not 0 <= workers <= MAX_WORKERS:
            raise bad_request("Parameter verification failed",
                              {"workers": f"value must be between 0 and {MAX_WORKERS}"})
        if workers and vc["isolation"] != "vm":
            raise bad_request("Parameter verification failed", {"workers": "workers need isolation 'vm'"})
        if (cpu, memory, workers) == (vc["cpu"], vc["memory"], vc["workers"]):
            raise bad_request("Parameter verification failed", {"resources": "nothing to change"})
        place(s, vc["node"], cpu, memory, 1 + workers, skip=c.vc_id)
        addresses = allocate(s, vc["network"], roles(max(workers, vc["workers"])), vc["addresses"], skip=c.vc_id)
        events.append(VClusterChanged(vc_id=c.vc_id, value={**vc, "status": "scaling", "reason": "", "upid": c.upid,
                                                            "addresses": addresses}))
    events.append(TaskStarted(upid=c.upid, node=c.node, type=c.type, id=c.vc_id, user=c.user, starttime=c.starttime,
                              intent={**c.intent, "vcluster": c.vc_id}))
    return events, {"upid": c.upid}


@decide.register
def _(c: UpdateVCluster, s: State) -> Decision:
    vc = _record(s, c.vc_id)
    unknown = sorted(k for k in c.values if k not in CHANGEABLE)
    if unknown:
        raise bad_request(f"vCluster fields {', '.join(unknown)} cannot be changed")
    return [VClusterChanged(vc_id=c.vc_id, value={**vc, **c.values})], {}


@decide.register
def _(c: ForgetVCluster, s: State) -> Decision:
    if c.vc_id not in s.vclusters:
        return [], {}
    return [VClusterChanged(vc_id=c.vc_id, value=None)], {}


VC_KINDS: dict[str, tasks.TaskKind] = {k.type: k for k in (
    tasks.TaskKind("vccreate", None, {"vcluster": str},
                   description="provision a vCluster: keys, guests, cloud-init, start, wait for its API"),
    tasks.TaskKind("vcscale", None, {"vcluster": str, "cpu": int, "memory": int, "workers": int},
                   description="resize a vCluster's guests (rolling restart) and add or remove workers"),
    # a deletion runs to its end: stopped half-way, it left a record naming guests that were gone
    tasks.TaskKind("vcdelete", None, {"vcluster": str}, to_the_end=True,
                   description="stop and destroy a vCluster's guests, forget it"),
    # writes the snippets of `roles` into `storage`, removes the vCluster's others (all of them with `remove`)
    tasks.TaskKind("vcsnippet", None, {"vcluster": str, "storage": str, "roles": list, "remove": (int, bool)},
                   to_the_end=True, description="write (or remove) a vCluster's cloud-init snippets on a node"),
)}
tasks.KINDS.update(VC_KINDS)
