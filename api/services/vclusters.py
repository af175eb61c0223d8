"""vClusters (the spec's "vCluster Management"): tenant Kubernetes clusters on guests cloned from a vCluster template
(engine/vclusters.py holds the records and the rules decided in the log; api/vcluster_pki.py the keys and files).

The calls (any interface): `listing`, `get`, `create`, `scale`, `delete`, `kubeconfig`. The tasks (`VClusterTasks`,
run by the reconciler of the node that took the request) drive the guests through the guest services as root@pam:
the caller's rights are checked on the vCluster (`/vclusters/{id}`), not on each guest. Errors: 400 (parameters,
a Kubernetes version no template offers: the available ones listed), 403, 404 (`vCluster 'x' does not exist`), 409
(a name taken, no node with the memory left, a busy vCluster).

Create: the keys are made (the API server's certificate names the control plane's address, allocated in the log),
the cloud-init snippets are written on the vCluster's node (`vcsnippet`), each guest is cloned from the template
(linked on the template's node, else full), given its cores, memory, `net0` on the network's bridge, `ipconfig0` and
`cicustom: user=STORAGE:snippets/ID-ROLE.yaml`, and started; then the task waits until `https://ADDRESS:6443` answers
TLS with the issued certificate to a client presenting the admin certificate. A failure, or the vCluster's node going
offline meanwhile, ends it `failed` with the reason; creating it again under the same name removes what the failed
attempt left, then provisions it anew.
"""

from __future__ import annotations

import datetime
import errno
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable

import structlog
import trio

from api import vcluster_pki as pki_files
from api.compat.qemu_options import CONFIG_PARAMS
from api.context import Ctx, Runtime
from api.schema import ParamErrors
from api.services import guests
from api.services.tasks import task_end
from engine import storage as storage_rules
from engine import vclusters as vc_rules
from engine.errors import Rejection, not_found
from engine.reconciler import Handler, Outcome, TaskFailed, TaskRun
from engine.upid import Upid
from engine.volumes import DISK_KEY, is_cloudinit, parse_volume

log = structlog.get_logger("gpve.vclusters")
SERVICE_USER = "root@pam"
READY_TIMEOUT = 600.0  # s a create waits for the API server (gpve serve --vcluster-ready-timeout)
PROBE_EVERY = 2.0
STEP_TIMEOUT = 600.0  # s one guest step (clone, config, start, stop, destroy) may take
ATTEMPTS = 5  # a VMID taken by someone else between choosing and cloning: choose again


# ---- views -----------------------------------------------------------------------------------------------
def shown(s, vc: dict) -> dict:
    """A record as answered (never its keys): the spec's fields, then gpve's own."""
    status, reason = vc_rules.shown_status(s, vc)
    created = datetime.datetime.fromtimestamp(vc["created"], datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"id": vc["id"], "name": vc["name"], "status": status, "k8s_version": vc["k8s_version"],
            "node": vc["node"], "isolation": vc["isolation"], "created_at": created,
            "endpoints": {"api_server": vc["api_server"]}, **({"reason": reason} if reason else {}),
            "resources": {"cpu": vc["cpu"], "memory": vc_rules.memory_text(vc["memory"])}, "workers": vc["workers"],
            "template": vc["template"], "network": dict(vc["network"]),
            "guests": [{"role": role, "name": f"{vc['name']}-{role}", "address": address,
                        **({"vmid": vc["guests"][role]} if role in vc["guests"] else {})}
                       for role, address in sorted(vc["addresses"].items(), key=lambda r: _role_order(r[0]))],
            "upid": vc["upid"]}


def _role_order(role: str) -> int:
    return 0 if role == "cp" else int(role[1:])


def _record(ctx: Ctx, vc_id: str) -> dict:
    with ctx.node.read() as s:
        vc = s.vclusters.get(vc_id)
        if vc is None:
            raise not_found(f"vCluster '{vc_id}' does not exist")
        return shown(s, vc)


def listing(ctx: Ctx) -> dict:
    """`{"items": [...]}`: every vCluster the caller may audit (VCluster.Audit on `/vclusters/{id}`), by name."""
    grants = ctx.grants()
    with ctx.node.read() as s:
        rows = [shown(s, vc) for vc in s.vclusters.values()]
    return {"items": sorted((r for r in rows if "VCluster.Audit" in grants.on(f"/vclusters/{r['id']}")),
                            key=lambda r: r["name"])}


def get(ctx: Ctx, vc_id: str) -> dict:
    return _record(ctx, vc_id)


async def create(ctx: Ctx, name: str, k8s_version: str, isolation: str, resources: dict, *,
                 node: str | None = None, workers: int = 0, network: dict | None = None,
                 template: int | None = None) -> dict:
    """A new vCluster (`resources`: `cpu` cores or millicores, `memory` a Kubernetes quantity, per guest) and its
    `vccreate` task; answers the record with `upid`. Everything is checked in the log at once (template, node,
    addresses): a refusal writes nothing."""
    cpu, memory = _quantities(resources, required=True)
    k8s_version = vc_rules.k8s_version(k8s_version) or k8s_version  # `v1.28.0` is 1.28.0; others: the log's 400
    with ctx.node.read() as s:
        members = sorted(s.nodes)
    target = node or (members[0] if len(members) == 1 else None)
    if target == ctx.node.name:  # its bridges are known here; another node's task checks them first thing
        why = missing_bridge(ctx.rt, (network or vc_rules.DEFAULT_NETWORK).get("bridge"), target)
        if why:
            raise ParamErrors({"network.bridge": why})
    with ctx.node.read() as s:  # a failed vCluster's name: it is provisioned anew under its id (its task's UPID too)
        vc_id = next((v["id"] for v in s.vclusters.values() if v["name"] == name), None)
    vc_id = vc_id or "vc-" + ctx.node.new_uuid().replace("-", "")[:10]
    upid, starttime = ctx.node.new_upid(ctx.node.name, "vccreate", vc_id, ctx.user)
    result = await ctx.node.submit(vc_rules.CreateVCluster(
        request_id=ctx.command_id, ts=ctx.now, user=ctx.user, vc_id=vc_id, name=name, k8s_version=k8s_version,
        isolation=isolation, cpu=cpu, memory=memory, workers=workers, selector=node, network=network or {},
        template=template, orchestrator=ctx.node.name, upid=upid, starttime=starttime))
    return {**_record(ctx, result["id"]), "upid": result["upid"]}


async def scale(ctx: Ctx, vc_id: str, resources: dict | None = None, workers: int | None = None) -> dict:
    """Resize the guests (`resources`: `cpu`, `memory`, either) and/or change the worker count, in a `vcscale` task;
    answers `{upid}`. 409 unless the vCluster is running."""
    cpu, memory = _quantities(resources or {}, required=False)
    intent = {k: v for k, v in (("cpu", cpu), ("memory", memory), ("workers", workers)) if v is not None}
    if not intent:
        raise ParamErrors({"resources": "give resources.cpu, resources.memory or workers"})
    return {"upid": await _start(ctx, vc_id, "vcscale", ctx.node.name, intent)}


async def delete(ctx: Ctx, vc_id: str) -> dict:
    """Stop and destroy every guest and volume of the vCluster and its snippets, then forget it and its keys, in a
    `vcdelete` task; answers `{upid}`."""
    return {"upid": await _start(ctx, vc_id, "vcdelete", ctx.node.name, {})}


def kubeconfig(ctx: Ctx, vc_id: str) -> str:
    """The admin kubeconfig (YAML); every read is logged (who, which vCluster; never the key)."""
    with ctx.node.read() as s:
        vc = s.vclusters.get(vc_id)
        vc = dict(vc) if vc is not None else None
    if vc is None:
        raise not_found(f"vCluster '{vc_id}' does not exist")
    pki = pki_files.unseal(ctx.node.raft_key, vc["pki"])
    log.info("vcluster kubeconfig read", vcluster=vc_id, user=ctx.user, remote=ctx.remote)
    return pki_files.kubeconfig(vc["name"], f"https://{vc['addresses']['cp']}:{pki_files.PORT}", pki)


def _quantities(resources: dict, required: bool) -> tuple[int | None, int | None]:
    errors, out = {}, {}
    for key, parse in (("cpu", vc_rules.cpu_cores), ("memory", vc_rules.memory_mib)):
        if resources.get(key) is None:
            if required:
                errors[f"resources.{key}"] = "property is missing and it is not optional"
            continue
        try:
            out[key] = parse(resources[key])
        except ValueError as exc:
            errors[f"resources.{key}"] = str(exc)
    if errors:
        raise ParamErrors(errors)
    return out.get("cpu"), out.get("memory")


async def _start(ctx: Ctx, vc_id: str, task_type: str, node: str, intent: dict) -> str:
    upid, starttime = ctx.node.new_upid(node, task_type, vc_id, ctx.user)
    result = await ctx.node.submit(vc_rules.StartVClusterTask(
        request_id=ctx.command_id, ts=ctx.now, user=ctx.user, vc_id=vc_id, type=task_type, node=node, upid=upid,
        starttime=starttime, intent=intent))
    return result["upid"]


# ---- the tasks -------------------------------------------------------------------------------------------
def snippet_storage(s, node: str) -> str:
    """The storage for a vCluster's snippets on `node`: `local` when it holds snippets, else the first enabled
    storage that does. 409 when none does."""
    for sid, conf in storage_rules.definitions(s).items():
        if "snippets" in str(conf.get("content", "")).split(",") and storage_rules.enabled_on(conf, node):
            return sid
    raise Rejection(409, f"no storage on node '{node}' holds snippets (content 'snippets') for the vCluster's "
                         "cloud-init user-data")


def missing_bridge(rt: Runtime | None, bridge: str | None, node: str) -> str | None:
    """Why `bridge` cannot take the vCluster's guests on this node (`node`): it does not exist here; None when it
    does or this node's bridges are unknown."""
    facts = getattr(getattr(rt, "driver", None), "facts", None)
    if not bridge or facts is None or bridge in facts().bridges:
        return None
    return f"bridge '{bridge}' does not exist on node '{node}'"


def snippet_name(vc_id: str, role: str) -> str:
    return f"{vc_id}-{role}.yaml"


def guest_config(vc: dict, role: str, template_conf: dict, storage: str) -> dict:
    """The config a guest of the vCluster gets over its template's: checked as `PUT …/config` checks it."""
    values = {"cores": vc["cpu"], "memory": str(vc["memory"]), "name": f"{vc['name']}-{role}",
              "net0": f"virtio,bridge={vc['network']['bridge']}",
              "ipconfig0": f"ip={vc['addresses'][role]}/{vc['network']['cidr'].split('/')[1]},"
                           f"gw={vc['network']['gateway']}",
              "cicustom": f"user={storage}:snippets/{snippet_name(vc['id'], role)}",
              # tied to the vCluster (its tag), and no destroy behind its back (the service lifts it first)
              "tags": vc_rules.guest_tag(vc["id"]), "protection": 1}
    if not any(DISK_KEY.fullmatch(k) and is_cloudinit(str(v)) for k, v in template_conf.items()):
        disks = [str(v).split(",")[0] for k, v in sorted(template_conf.items()) if DISK_KEY.fullmatch(k)]
        free = next(k for k in ("ide2", "ide3", "ide1", "ide0", "sata5", "sata4") if k not in template_conf)
        values[free] = f"{_storage_of(disks) or 'local'}:cloudinit"
    return coerced(values)


def _storage_of(volids: list[str]) -> str | None:
    for volid in volids:
        try:
            return parse_volume(volid).storage
        except ValueError:
            continue
    return None


def coerced(values: dict) -> dict:
    """Guest config values as the config endpoint's declaration stores them (api/compat/qemu_options.py)."""
    errors, out = {}, {}
    for key, value in values.items():
        param = next(p for p in CONFIG_PARAMS if p.matches(key))
        try:
            out[key] = param.coerce(value, key)
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise ParamErrors(errors)
    return out


def probe(address: str, pki: dict[str, str], scratch: str, timeout: float = 3.0) -> str | None:
    """None once `https://ADDRESS:6443` answers TLS with the vCluster's API-server certificate (verified against
    its CA, for that address) to a client presenting the admin certificate; else why not. Blocking."""
    fd, path = tempfile.mkstemp(dir=scratch, prefix=".vc-probe-")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp: mode 0600
            f.write(pki["admin.crt"] + pki["admin.key"])
        context = ssl.create_default_context(cadata=pki["ca.crt"])
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    try:
        with socket.create_connection((address, pki_files.PORT), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=address) as tls:
            issued = ssl.PEM_cert_to_DER_cert(pki["apiserver.crt"])
            if tls.getpeercert(binary_form=True) != issued:
                return "the API server presents another certificate than the one issued"
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
            answer = tls.recv(64)
            if not answer.startswith(b"HTTP/"):
                return "the API server gave no HTTP answer"
    except (OSError, ssl.SSLError) as exc:
        if getattr(exc, "errno", None) == errno.ENETUNREACH:
            raise Unreachable(exc.strerror or "Network is unreachable") from None
        return f"{type(exc).__name__}: {exc}"
    return None


class Unreachable(Exception):
    """No route to the API server's network at all (ENETUNREACH): waiting cannot help. (EHOSTUNREACH is not
    this: a guest still booting does not answer ARP yet.)"""


class VClusterTasks:
    """The handlers of `vccreate`, `vcscale`, `vcdelete` and `vcsnippet`. `runtime` is set once the node's runtime
    exists (its storages, for the snippets); `ready_timeout`: how long a create waits for the API server."""

    def __init__(self, node, ready_timeout: float = READY_TIMEOUT) -> None:
        self.node = node
        self.runtime: Runtime | None = None
        self.ready_timeout = ready_timeout

    def handlers(self) -> dict[str, Handler]:
        return {"vccreate": self._failing(self.create), "vcscale": self._failing(self.scale),
                "vcdelete": self.delete, "vcsnippet": self.snippet}

    # ---- helpers ----
    def _ctx(self, run: TaskRun, step: str) -> Ctx:
        return Ctx(self.node, SERVICE_USER, f"{run.upid}/{step}", now=time.time(), rt=self.runtime or Runtime())

    def _vc(self, run: TaskRun) -> dict:
        with self.node.read() as s:
            vc = s.vclusters.get(run.intent["vcluster"])
            if vc is None:
                raise TaskFailed(f"vCluster '{run.intent['vcluster']}' does not exist")
            return {**vc, "guests": dict(vc["guests"]), "uuids": dict(vc.get("uuids", {})),
                    "addresses": dict(vc["addresses"])}

    async def _update(self, run: TaskRun, step: str, **values) -> None:
        await self.node.submit_until_done(vc_rules.UpdateVCluster(
            request_id=f"{run.upid}/{step}", ts=self.node.wall(), user=run.user, vc_id=run.intent["vcluster"],
            values=values))

    def _failing(self, handler: Callable[[TaskRun], Awaitable[Outcome]]) -> Handler:
        """A create or scale that fails leaves the vCluster `failed` with the reason (the task's error)."""
        async def run_it(run: TaskRun) -> Outcome:
            try:
                return await handler(run)
            except (TaskFailed, Rejection, ParamErrors) as exc:
                details = getattr(exc, "errors", None) or {}
                reason = "; ".join([str(exc), *(f"{k}: {v}" for k, v in details.items())])
                with trio.CancelScope(shield=True):
                    await self._update(run, "failed", status="failed", reason=reason)
                raise TaskFailed(reason) from None
        return run_it

    async def _wait(self, run: TaskRun, upid: str, what: str) -> None:
        """Until task `upid` ends; TaskFailed with its error, or when its node goes offline in the cluster's view."""
        node = Upid.parse(upid).node
        task = await task_end(self.node, upid, STEP_TIMEOUT, watch=lambda: self._check_online(node))
        if task is None:
            raise TaskFailed(f"{what}: got timeout waiting for task {upid}")
        if task["exitstatus"] != "OK":
            raise TaskFailed(f"{what} failed: {task['exitstatus']}")

    def _check_online(self, node: str) -> None:
        if not self.node.node_online(node):
            raise TaskFailed(f"node '{node}' went offline")

    async def _snippets(self, run: TaskRun, vc: dict, node: str, roles: list[str], step: str) -> str:
        """Write the snippets of `roles` on `node` and remove the vCluster's others there (all of them when `roles`
        is empty); answers the storage."""
        with self.node.read() as s:
            storage = snippet_storage(s, node)
        upid, starttime = self.node.new_upid(node, "vcsnippet", vc["id"], run.user)
        result = await self.node.submit(vc_rules.StartVClusterTask(
            request_id=f"{run.upid}/{step}", ts=self.node.wall(), user=run.user, vc_id=vc["id"], type="vcsnippet",
            node=node, upid=upid, starttime=starttime,
            intent={"storage": storage, "roles": roles, "remove": int(not roles)}))
        await self._wait(run, result["upid"], "writing the cloud-init snippets" if roles else
                         "removing the cloud-init snippets")
        return storage

    async def _add_guest(self, run: TaskRun, vc: dict, role: str, storage: str) -> int:
        """Clone the template as the vCluster's `role` guest on its node, configure and start it; its VMID."""
        with self.node.read() as s:
            template = s.guests.get(vc["template"])
            template = dict(template, conf=dict(template["conf"])) if template else None
        if template is None:
            raise TaskFailed(f"template {vc['template']} does not exist")
        node = vc["node"]
        linked = template["node"] == node
        run.log(f"cloning template {vc['template']} as {vc['name']}-{role} ({'linked' if linked else 'full'})")
        # other creates' clones of the template run beside this one: a template does not run, so its clones hold
        # it shared (engine/tasks.py, qemu-server's `clone_vm`)
        for attempt in range(ATTEMPTS):
            ctx = self._ctx(run, f"clone-{role}-{attempt}")
            with self.node.read() as s:
                vmid = s.next_free_vmid(ctx.now)
            try:
                upid = await guests.clone(ctx, template["node"], vc["template"], vmid, full=not linked,
                                          name=f"{vc['name']}-{role}", target=None if linked else node)
                break
            except Rejection as exc:
                if exc.status == 409 and attempt < ATTEMPTS - 1:  # the VMID was taken meanwhile: choose again
                    continue
                raise
        vc["guests"][role] = vmid
        vc.setdefault("uuids", {}).pop(role, None)
        await self._update(run, f"guest-{role}", guests=dict(vc["guests"]), uuids=dict(vc["uuids"]))
        await self._wait(run, upid, f"cloning {vc['name']}-{role}")
        with self.node.read() as s:
            vc["uuids"][role] = vc_rules.smbios_uuid(s.guests.get(vmid, {}).get("conf", {}))
        await self._update(run, f"uuid-{role}", uuids=dict(vc["uuids"]))
        config = guest_config(vc, role, template["conf"], storage)
        await guests.update_config(self._ctx(run, f"config-{role}"), node, vmid, config, [])
        await self._power(run, node, vmid, "qmstart", f"start-{role}", f"starting VM {vmid}")
        run.log(f"VM {vmid} ({vc['name']}-{role}) started at {vc['addresses'][role]}")
        return vmid

    async def _power(self, run: TaskRun, node: str, vmid: int, action: str, step: str, what: str) -> None:
        upid = await guests.power(self._ctx(run, step), node, vmid, action, {})
        await self._wait(run, upid, what)

    def _own(self, vc: dict, role: str) -> str | None:
        """None while the guest of `role` still is the vCluster's (engine/vclusters.py `not_own_guest`); why not."""
        with self.node.read() as s:
            return vc_rules.not_own_guest(s, vc, role)

    def _check_own(self, vc: dict, role: str) -> None:
        why = self._own(vc, role)
        if why is not None:
            raise TaskFailed(f"{why} - the vCluster's guests changed behind its back")

    async def _remove_guest(self, run: TaskRun, vc: dict, role: str, step: str) -> None:
        """Stop and destroy the guest of `role` with its volumes, its protection lifted first. Gone already, or its
        VMID another guest's now: left alone, with a task-log line."""
        vmid = vc["guests"][role]
        why = self._own(vc, role)
        if why is not None:
            run.log(f"{why} - left alone")
            return
        with self.node.read() as s:
            guest = s.guests[vmid]
            node, running, protected = guest["node"], guest.get("status") == "running", \
                guest["conf"].get("protection") not in (None, 0, "0")
        if protected:
            await guests.update_config(self._ctx(run, f"{step}-unprotect"), node, vmid, {}, ["protection"])
        if running:
            await self._power(run, node, vmid, "qmstop", f"{step}-stop", f"stopping VM {vmid}")
        upid = await guests.destroy(self._ctx(run, f"{step}-destroy"), node, vmid, purge=True)
        await self._wait(run, upid, f"destroying VM {vmid}")
        run.log(f"VM {vmid} destroyed")

    async def _ready(self, run: TaskRun, vc: dict, pki: dict[str, str]) -> None:
        address = vc["addresses"]["cp"]
        scratch = os.path.join(self.node.spec.data_dir, "priv")
        run.log(f"waiting for the API server at https://{address}:{pki_files.PORT}")
        why = "not tried"
        with trio.move_on_after(self.ready_timeout):
            while True:
                self._check_online(vc["node"])
                try:
                    why = await trio.to_thread.run_sync(probe, address, pki, scratch)
                except Unreachable as exc:
                    raise TaskFailed(f"the API server at https://{address}:{pki_files.PORT} cannot be reached from "
                                     f"node '{self.node.name}': {exc}") from None
                if why is None:
                    return
                await trio.sleep(PROBE_EVERY)
        raise TaskFailed(f"the API server at https://{address}:{pki_files.PORT} did not answer within "
                         f"{self.ready_timeout:g} s ({why})")

    # ---- handlers ----
    async def create(self, run: TaskRun) -> Outcome:
        vc = self._vc(run)
        roles = vc_rules.roles(vc["workers"])
        if vc["guests"]:  # what a failed attempt left
            run.log(f"removing what the failed attempt left: VMs {', '.join(map(str, vc['guests'].values()))}")
            for role in sorted(vc["guests"]):
                await self._remove_guest(run, vc, role, f"leftover-{role}")
            vc["guests"], vc["uuids"] = {}, {}
            await self._update(run, "leftovers", guests={}, uuids={})
        if vc.get("previous_node") not in (None, vc["node"]) and self.node.node_online(vc["previous_node"]):
            await self._snippets(run, vc, vc["previous_node"], [], "leftover-snippets")
        run.log(f"making the cluster's keys (API server address {vc['addresses']['cp']})")
        pki = await trio.to_thread.run_sync(pki_files.make, vc["addresses"]["cp"], f"{vc['name']}-cp")
        await self._update(run, "pki", pki=pki_files.seal(self.node.raft_key, pki), previous_node=vc["node"])
        storage = await self._snippets(run, vc, vc["node"], roles, "snippets")
        for role in roles:
            await self._add_guest(run, vc, role, storage)
        await self._ready(run, vc, pki)
        server = f"https://{vc['addresses']['cp']}:{pki_files.PORT}"
        await self._update(run, "running", status="running", reason="", api_server=server)
        run.log(f"vCluster {vc['name']} is running: {server}")
        return Outcome()

    async def scale(self, run: TaskRun) -> Outcome:
        vc = self._vc(run)
        before = (vc["cpu"], vc["memory"])
        cpu, memory = run.intent.get("cpu", vc["cpu"]), run.intent.get("memory", vc["memory"])
        workers = run.intent.get("workers", vc["workers"])
        wanted = vc_rules.roles(workers)
        for role in sorted(vc["guests"], key=_role_order):  # nothing is changed on a guest that is no longer its own
            self._check_own(vc, role)
        for role in [r for r in vc["guests"] if r not in wanted]:
            run.log(f"removing worker {vc['name']}-{role}")
            self._check_own(vc, role)
            await self._remove_guest(run, vc, role, f"remove-{role}")
            vc["guests"].pop(role)
            vc.setdefault("uuids", {}).pop(role, None)
            await self._update(run, f"removed-{role}", guests=dict(vc["guests"]), uuids=dict(vc["uuids"]))
        vc.update(cpu=cpu, memory=memory, workers=workers,
                  addresses={r: a for r, a in vc["addresses"].items() if r in wanted})
        storage = await self._snippets(run, vc, vc["node"], wanted, "snippets")
        if (cpu, memory) != before:
            for role in sorted(vc["guests"], key=_role_order, reverse=True):  # workers first, the control plane last
                vmid = vc["guests"][role]
                self._check_own(vc, role)
                run.log(f"VM {vmid} ({vc['name']}-{role}): {cpu} cores, {memory} MiB; restarting")
                changes = coerced({"cores": cpu, "memory": str(memory)})
                await guests.update_config(self._ctx(run, f"config-{role}"), vc["node"], vmid, changes, [])
                await self._power(run, vc["node"], vmid, "qmstop", f"stop-{role}", f"stopping VM {vmid}")
                await self._power(run, vc["node"], vmid, "qmstart", f"start-{role}", f"starting VM {vmid}")
        for role in [r for r in wanted if r not in vc["guests"]]:
            await self._add_guest(run, vc, role, storage)
        await self._ready(run, vc, pki_files.unseal(self.node.raft_key, vc["pki"]))
        await self._update(run, "running", status="running", reason="", cpu=cpu, memory=memory, workers=workers,
                           addresses=vc["addresses"], guests=dict(vc["guests"]), uuids=dict(vc.get("uuids", {})))
        return Outcome()

    async def delete(self, run: TaskRun) -> Outcome:
        with self.node.read() as s:
            gone = run.intent["vcluster"] not in s.vclusters
        if gone:  # run again after a restart, once it was forgotten
            return Outcome()
        vc = self._vc(run)
        for role in sorted(vc["guests"]):
            await self._remove_guest(run, vc, role, f"remove-{role}")
        for step, node in (("snippets", vc["node"]), ("old-snippets", vc.get("previous_node"))):
            if node is not None and (step == "snippets" or node != vc["node"]):
                await self._snippets(run, vc, node, [], step)
        await self.node.submit_until_done(vc_rules.ForgetVCluster(
            request_id=f"{run.upid}/forget", ts=self.node.wall(), user=run.user, vc_id=vc["id"]))
        run.log(f"vCluster {vc['name']} ({vc['id']}) and its keys are gone")
        return Outcome()

    async def snippet(self, run: TaskRun) -> Outcome:
        """On the vCluster's node: its snippets for `roles` written (mode 0600: they hold keys), its others
        removed."""
        vc_id, roles = run.intent["vcluster"], list(run.intent.get("roles", []))
        storages = self.runtime.storages if self.runtime else {}
        target = storages.activate(run.intent["storage"]) if hasattr(storages, "activate") else \
            storages[run.intent["storage"]]
        directory = os.path.join(target.path, "snippets")
        os.makedirs(directory, exist_ok=True)
        keep = set()
        if roles and not run.intent.get("remove"):
            vc = self._vc(run)
            why = missing_bridge(self.runtime, vc["network"]["bridge"], self.node.name)
            if why:  # the first step on the vCluster's node: fail before anything is cloned
                raise TaskFailed(why)
            pki = pki_files.unseal(self.node.raft_key, vc["pki"])
            for role in roles:
                name = snippet_name(vc_id, role)
                _write_private(os.path.join(directory, name), pki_files.user_data(vc, role, pki))
                keep.add(name)
                run.log(f"wrote {run.intent['storage']}:snippets/{name}")
        for name in sorted(os.listdir(directory)):
            if name.startswith(f"{vc_id}-") and name.endswith(".yaml") and name not in keep:
                os.unlink(os.path.join(directory, name))
                run.log(f"removed {run.intent['storage']}:snippets/{name}")
        return Outcome()


def _write_private(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
