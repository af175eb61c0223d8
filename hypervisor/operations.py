"""What each guest task does on the owning node: the handlers the reconciler runs.

Each handler gets the task (its intent and a copy of the guest's record), drives QEMU and storage,
logs what it does, and returns the changes for the log (`Outcome`).
"""

from __future__ import annotations

import functools
import os
import random
import time
import uuid
from collections.abc import Callable

import trio

from engine import nics, pending
from engine.cloudinit import CloudinitError, tracked
from engine.errors import Rejection
from engine.reconciler import Handler, Outcome, TaskFailed, TaskRun
from engine.snapshots import drop_snapshot
from engine.volumes import (
    CLOUDINIT_SPEC,
    alloc_requests,
    destroyed_volumes,
    is_cdrom,
    is_cloudinit,
    owned_volumes,
    volume_in_use,
    volume_of,
)
from hypervisor import cloudinit, hotplug, propstr
from hypervisor.console import ConsoleSessions, ConsoleTimeout
from hypervisor.qemu import GuestError, QemuDriver
from hypervisor.qemu_argv import agent_settings, disk_keys, ovmf_files, start_warnings, volume_keys
from hypervisor.storage import DirStorage, StorageError, import_source

GIB = 1 << 30
TPMSTATE_SIZE = 4 << 20  # qemu-server's TPMSTATE_DISK_SIZE
SNAPSHOT_META = ("snaptime", "vmstate", "description", "parent")


def _failing_cleanly(fn):
    @functools.wraps(fn)
    async def wrapper(self, task: TaskRun) -> Outcome:
        try:
            return await fn(self, task)
        except (GuestError, StorageError, Rejection, CloudinitError) as exc:
            raise TaskFailed(str(exc)) from None
    return wrapper


def _vars_template(conf: dict, efidisk: dict) -> str:
    """The OVMF vars template an efidisk starts from (qemu-server's `get_ovmf_files`: `EFI vars image '…' not
    found`)."""
    _, template = ovmf_files(conf, efidisk)
    if not os.path.exists(template):
        raise TaskFailed(f"EFI vars image '{template}' not found")
    return template


def with_size(value: str, volid: str, size: int) -> str:
    props = propstr.parse(value, default_key="file")
    props.pop("volume", None)  # the alias of `file` (engine/volumes.py drive_props)
    props.pop("import-from", None)
    props["file"] = volid
    props.pop("format", None) if volid.endswith((".qcow2", ".raw")) else None
    props["size"] = propstr.format_size(size)
    return propstr.render(props, default_key="file")


def make_resolver(storages: dict[str, DirStorage]):
    """volid -> (path, format), for the QEMU command line."""
    def resolve(volid: str) -> tuple[str, str]:
        storage = storages.get(volid.partition(":")[0])
        if storage is None:
            raise StorageError(f"storage '{volid.partition(':')[0]}' does not exist")
        return storage.volume_path(volid), storage.volume_format(volid)
    return resolve


class Operations:
    """`peers.migration_target(node)` answers what a migration's target node does for its source (the calls of
    `hypervisor.migration_target.MigrationTarget`, over the network in `api.peers`); `clock` gives snapshot times and
    `rng` new MAC addresses and UUIDs (the simulator passes its own: its hosts, clocks and seeds); `consoles` holds the
    node's console sessions (the API opens them, the `vncproxy` task watches them)."""

    def __init__(self, driver: QemuDriver, storages: dict[str, DirStorage], peers=None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 consoles: ConsoleSessions | None = None) -> None:
        self.driver = driver
        self.consoles = consoles or ConsoleSessions()
        self.storages = storages
        self.peers = peers
        self.clock = clock
        self.rng = rng or random.SystemRandom()

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def handlers(self) -> dict[str, Handler]:
        return {"qmcreate": self.create, "qmstart": self.start, "qmstop": self.stop, "qmshutdown": self.shutdown,
                "qmreboot": self.reboot, "qmreset": self.reset, "qmsuspend": self.suspend, "qmresume": self.resume,
                "qmdestroy": self.destroy, "qmconfig": self.config, "resize": self.resize,
                "qmsnapshot": self.snapshot, "qmrollback": self.rollback, "qmdelsnapshot": self.delsnapshot,
                "qmclone": self.clone, "qmtemplate": self.template, "qmigrate": self.migrate,
                "qmcloudinit": self.regenerate_cloudinit,
                "vncproxy": self.console}

    # ---- helpers --------------------------------------------------------------------------
    def storage_of(self, volid: str) -> DirStorage:
        storage = self.storages.get(volid.partition(":")[0])
        if storage is None:
            raise TaskFailed(f"storage '{volid.partition(':')[0]}' does not exist")
        return storage

    def resolve(self, volid: str) -> tuple[str, str]:
        try:
            return make_resolver(self.storages)(volid)
        except StorageError as exc:
            raise TaskFailed(str(exc)) from None

    async def _allocate(self, task: TaskRun, vmid: int, conf: dict, keys: list[str]) -> list[str]:
        """Turn `STORAGE:GiB` disk specs into volumes (qemu-server's `create_disks`): an empty one of that size, a
        copy of its `import-from` source, an EFI vars volume (`efidisk0`: the size is ignored), a TPM state volume
        (4 MiB), or for `STORAGE:cloudinit` the guest's cloud-init drive (`vm-VMID-cloudinit.FMT`, a CD-ROM).
        Returns the new volume ids; on failure the ones made here are freed again."""
        made: list[str] = []
        specs = alloc_requests(conf)
        try:
            for key in keys:
                storage = self.storage_of(f"{specs[key][0]}:")
                props = propstr.parse(str(conf[key]), default_key="file")
                if CLOUDINIT_SPEC.fullmatch(volume_of(str(conf[key]))):
                    made.append(await self._allocate_cloudinit(task, vmid, conf, key, storage, props.get("format")))
                    continue
                fmt = props.get("format") or storage.default_format
                if props.get("import-from"):
                    volid, size = await self._import(task, storage, vmid, key, conf, props, fmt)
                elif key == "efidisk0":
                    volid, size = await self._efidisk(task, storage, vmid, conf, props, fmt)
                else:
                    size = TPMSTATE_SIZE if key == "tpmstate0" else int(specs[key][1] * GIB)
                    volid = await storage.alloc(vmid, size, fmt)
                    task.log(f"{key}: allocated volume '{volid}' ({propstr.format_size(size)})")
                made.append(volid)
                conf[key] = with_size(str(conf[key]), volid, size)
        except (StorageError, TaskFailed):
            for volid in made:
                await self.storage_of(volid).free(volid)
            raise
        return made

    async def _efidisk(self, task: TaskRun, storage: DirStorage, vmid: int, conf: dict, props: dict,
                       fmt: str) -> tuple[str, int]:
        """A volume of the OVMF vars template's size holding a copy of it (qemu-server's `create_efidisk`)."""
        template = _vars_template(conf, props)
        size = os.path.getsize(template)
        volid = await storage.alloc(vmid, size, fmt)
        try:
            await storage.fill(volid, template, "raw")
        except StorageError:
            await storage.free(volid)
            raise
        task.log(f"efidisk0: allocated volume '{volid}' ({propstr.format_size(size)}) holding {template}")
        return volid, size

    async def _import(self, task: TaskRun, storage: DirStorage, vmid: int, key: str, conf: dict, props: dict,
                      fmt: str) -> tuple[str, int]:
        """A new volume converted from the `import-from` source (qemu-server's `create_disks` with `import-from`),
        of the source's size; an EFI vars image must have the size its `efitype` gives."""
        source = props["import-from"]
        found = await import_source(self.storages, source, storage.qemu_img)
        if key == "efidisk0":
            expected = os.path.getsize(_vars_template(conf, props))
            if found.size != expected:
                raise TaskFailed(f"cannot import from '{source}' - EFI vars image of {found.size} bytes, efitype "
                                 f"{props.get('efitype')} needs {expected}")
        task.log(f"{key}: importing '{source}' ({found.format}, {propstr.format_size(found.size)})")
        volid = await storage.clone_full(found.path, found.format, vmid, fmt)
        size = await storage.size(volid)
        task.log(f"{key}: imported as volume '{volid}'")
        return volid, size

    async def _allocate_cloudinit(self, task: TaskRun, vmid: int, conf: dict, key: str, storage: DirStorage,
                                  fmt: str | None) -> str:
        other = next((k for k in disk_keys(conf) if k != key and is_cloudinit(str(conf[k]))
                      and not CLOUDINIT_SPEC.fullmatch(volume_of(str(conf[k])))), None)
        if other:
            raise TaskFailed(f"{key} - cloud-init drive is already attached at '{other}'")
        volid = await storage.alloc(vmid, cloudinit.CLOUDINIT_SIZE, fmt or "qcow2", f"vm-{vmid}-cloudinit")
        props = propstr.parse(str(conf[key]), default_key="file")
        props.pop("volume", None)
        props.pop("format", None)
        props.pop("size", None)
        props["file"] = volid
        props["media"] = "cdrom"
        conf[key] = propstr.render(props, default_key="file")
        task.log(f"{key}: successfully created disk '{conf[key]}'")
        return volid

    async def _make_cloudinit(self, task: TaskRun, vmid: int, conf: dict, outcome: Outcome) -> None:
        """The image of the guest's cloud-init drive, made from `conf` before its QEMU starts (qemu-server's
        vm_start) and recorded in `outcome`; nothing for a guest without one."""
        if cloudinit.drive_key(conf) is None:
            return
        task.log("generating cloud-init ISO")
        await cloudinit.generate(vmid, conf, self.storages, cloudinit.host_dns())
        outcome.cloudinit[vmid] = tracked(conf)

    async def _start(self, task: TaskRun, vmid: int, conf: dict, outcome: Outcome, loadvm: str | None = None) -> int:
        """Start the guest's QEMU from `conf` (every start goes through here: start, create and rollback with
        `start`, reboot): its cloud-init image made first, what the start warns about (an OVMF guest without
        `efidisk0`) recorded in `outcome` with it running. Once QEMU is launched the task ends with its outcome: a
        task stop then cancelled a start whose QEMU came up anyway, the log said stopped, and a NIC added meanwhile
        went into the config and not into QEMU (found by the simulator, 5-node seed 40)."""
        await self._make_cloudinit(task, vmid, conf, outcome)
        task.abortable = False
        pid = await self.driver.start(vmid, conf, loadvm=loadvm)
        outcome.power[vmid] = "running"
        outcome.warnings += start_warnings(conf)
        return pid

    # ---- tasks ----------------------------------------------------------------------------
    @_failing_cleanly
    async def create(self, task: TaskRun) -> Outcome:
        vmid, conf = task.vmid, dict(task.guest["conf"])
        # once begun, a create ends with its outcome: cancelled after allocating or starting, it left a running QEMU
        # and a volume that its config did not name (found by the simulator's check of what runs, seed 2)
        task.abortable = False
        try:
            await self._allocate(task, vmid, conf, task.intent.get("alloc", []))
        except (StorageError, TaskFailed) as exc:
            raise TaskFailed(f"unable to create VM {vmid} - {exc}", Outcome(deleted=[vmid])) from None
        outcome = Outcome(configs={vmid: conf})
        if task.intent.get("start"):
            conf.pop("lock", None)
            task.log(f"starting VM {vmid}")
            await self._start(task, vmid, conf, outcome)
        return outcome

    async def _apply_pending(self, task: TaskRun, conf: dict, pend: pending.Pending, keys,
                             outcome: Outcome) -> tuple[dict, pending.Pending]:
        """Pending changes `keys` taken into the config (engine/pending.py `commit`) and recorded in `outcome`; a
        forced delete destroys its disk's volume, unless a snapshot still uses it (then it stays pending, with
        Proxmox's warning: qemu-server's vmconfig_apply_pending and try_deallocate_drive)."""
        vmid, keys = task.vmid, list(keys)
        snapshots = task.guest.get("snapshots", {})
        for key in [k for k in keys if pend.deletes.get(k) and k in conf]:
            used = [v for v in owned_volumes(vmid, {key: conf[key]}) if volume_in_use(conf, snapshots, key, v)]
            if used:
                keys.remove(key)
                outcome.warnings.append(f"unable to apply pending change {key} : unable to delete '{used[0]}' - "
                                        "volume is still in use (snapshot?)")
        conf, pend, doomed = pending.commit(vmid, conf, pend, keys)
        for volid in doomed:
            task.log(f"removing volume '{volid}'")
            await self.storage_of(volid).free(volid)
        outcome.configs[vmid], outcome.pending[vmid] = conf, pend
        return conf, pend

    async def _applying_pending(self, task: TaskRun, outcome: Outcome) -> dict:
        """The guest's config with everything pending applied (at its start or stop, as Proxmox's vm_start and
        vm_stop_cleanup apply it), recorded in `outcome`."""
        conf, pend = dict(task.guest["conf"]), pending.of(task.guest)
        if pend:
            task.log(f"applying pending changes: {', '.join(pend.keys())}")
            conf, _ = await self._apply_pending(task, conf, pend, pend.keys(), outcome)
        return conf

    @_failing_cleanly
    async def start(self, task: TaskRun) -> Outcome:
        """Start the guest's QEMU. The config is checked again as the task begins (qemu-server's `vm_start`, under
        the config lock): a template conversion queued before the start was accepted may have ended meanwhile
        (found by the simulator, membership seed 36: a start ran a template, which nothing could stop)."""
        vmid = task.vmid
        if task.guest["conf"].get("template"):
            raise TaskFailed("you can't start a vm if it's a template")
        if self.driver.running(vmid):
            raise TaskFailed(f"VM {vmid} already running")
        outcome = Outcome(power={vmid: "running"})
        loadvm = task.intent.get("loadvm")
        conf = dict(task.guest["conf"]) if loadvm else await self._applying_pending(task, outcome)
        task.log(f"starting VM {vmid}")
        try:
            pid = await self._start(task, vmid, conf, outcome, loadvm=loadvm)
        except (GuestError, StorageError, CloudinitError) as exc:  # pending changes applied stay, as in Proxmox
            raise TaskFailed(str(exc), Outcome(configs=outcome.configs, pending=outcome.pending,
                                               cloudinit=outcome.cloudinit)) from None
        task.log(f"VM {vmid} started with PID {pid}")
        return outcome

    @_failing_cleanly
    async def stop(self, task: TaskRun) -> Outcome:
        vmid = task.vmid
        outcome = Outcome(power={vmid: "stopped"})
        if self.driver.running(vmid):
            task.log(f"stopping VM {vmid}")
            await self.driver.stop(vmid, float(task.intent.get("timeout") or 10))
            await self._applying_pending(task, outcome)
        return outcome

    @_failing_cleanly
    async def shutdown(self, task: TaskRun) -> Outcome:
        vmid = task.vmid
        if not self.driver.running(vmid):
            raise TaskFailed(f"VM {vmid} not running")
        force = bool(task.intent.get("forceStop"))
        outcome = Outcome(power={vmid: "stopped"})
        if await self._paused_so_no_acpi(vmid, force):
            task.log(f"stopping VM {vmid}")
            await self.driver.stop(vmid)
            outcome.warnings.append("VM is paused - stop instead of shutdown")
        else:
            timeout = float(task.intent.get("timeout") or 180)
            agent = await self._agent_answers(vmid, task.guest["conf"], outcome.warnings)
            task.log(f"shutting down VM {vmid} ({'guest agent' if agent else 'ACPI'}, timeout {int(timeout)} s)")
            outcome.warnings += await self.driver.shutdown(vmid, timeout, force, agent)
        await self._applying_pending(task, outcome)
        return outcome

    async def _agent_answers(self, vmid: int, conf: dict, warnings: list[str]) -> bool:
        """Whether a shutdown goes through the guest agent: the config enables it and it answers a ping; one that is
        enabled but does not answer is a warning, and the power button it is (qemu-server's `_do_vm_stop`)."""
        if not agent_settings(conf):
            return False
        why = await self.driver.agent_running(vmid)
        if why is not None:
            warnings.append(f"QEMU Guest Agent is not running - {why}")
        return why is None

    async def _paused_so_no_acpi(self, vmid: int, force: bool) -> bool:
        """A paused guest never sees the power button, and would still power off once resumed: Proxmox refuses
        to shut it down (or, with forceStop, stops it; qemu-server's `vm_shutdown`, found by the simulator:
        shutdowns of suspended guests each waited out their timeout)."""
        if not await self.driver.paused(vmid):
            return False
        if not force:
            raise TaskFailed("VM is paused - cannot shutdown")
        return True

    @_failing_cleanly
    async def reboot(self, task: TaskRun) -> Outcome:
        vmid = task.vmid
        if not self.driver.running(vmid):
            raise TaskFailed(f"VM {vmid} not running")
        await self._paused_so_no_acpi(vmid, False)
        timeout = float(task.intent.get("timeout") or 180)
        warnings: list[str] = []
        agent = await self._agent_answers(vmid, task.guest["conf"], warnings)
        await self.driver.shutdown(vmid, timeout, False, agent)
        task.log(f"VM {vmid} shut down; starting again")
        outcome = Outcome(power={vmid: "stopped"}, warnings=warnings)
        conf = await self._applying_pending(task, outcome)  # a reboot is how pending changes reach a guest
        try:
            await self._start(task, vmid, conf, outcome)
        except (GuestError, StorageError, CloudinitError) as exc:
            raise TaskFailed(str(exc), outcome) from None
        return outcome

    async def _qmp_action(self, task: TaskRun, command: str, verb: str) -> Outcome:
        if not self.driver.running(task.vmid):
            raise TaskFailed(f"VM {task.vmid} not running")
        task.log(f"{verb} VM {task.vmid}")
        await self.driver.qmp(task.vmid, command)
        return Outcome()

    @_failing_cleanly
    async def reset(self, task: TaskRun) -> Outcome:
        return await self._qmp_action(task, "system_reset", "resetting")

    @_failing_cleanly
    async def suspend(self, task: TaskRun) -> Outcome:
        return await self._qmp_action(task, "stop", "suspending")

    @_failing_cleanly
    async def resume(self, task: TaskRun) -> Outcome:
        return await self._qmp_action(task, "cont", "resuming")

    async def console(self, task: TaskRun) -> Outcome:
        """A console proxy (qemu-server's `vncproxy`/`termproxy` worker): waits for its client, lasts while it is
        connected (hypervisor/console.py). Fails with `connection timed out` when no client came within 10 s, or with
        why the guest end could not be reached."""
        try:
            error = await self.consoles.supervise(int(task.intent["port"]))
        except ConsoleTimeout:
            raise TaskFailed("connection timed out") from None
        if error:
            raise TaskFailed(error)
        return Outcome()

    def _all_volumes(self, vmid: int, guest: dict) -> list[str]:
        """The guest's own volumes: in its config, its pending changes (a disk allocated for its next start) and
        its snapshots (qemu-server's foreach_volid)."""
        volumes = owned_volumes(vmid, guest["conf"]) + owned_volumes(vmid, pending.of(guest).values)
        for snap in guest.get("snapshots", {}).values():
            volumes += owned_volumes(vmid, snap)
        return sorted(set(volumes))

    @_failing_cleanly
    async def destroy(self, task: TaskRun) -> Outcome:
        vmid, guest = task.vmid, task.guest
        if self.driver.running(vmid):
            raise TaskFailed(f"VM {vmid} is running - destroy failed")
        for volid in self._all_volumes(vmid, guest):
            task.log(f"removing volume '{volid}'")
            await self.storage_of(volid).free(volid)
        if task.intent.get("destroy-unreferenced-disks", 1):
            for storage in self.storages.values():
                for row in storage.list_volumes("images", vmid):
                    task.log(f"removing unreferenced volume '{row['volid']}'")
                    await storage.free(row["volid"])
        return Outcome(deleted=[vmid])

    @_failing_cleanly
    async def config(self, task: TaskRun) -> Outcome:
        """`PUT`/`POST …/config` as a task (qemu-server's update_vm_api): new disks are allocated first (`STORAGE:GiB`,
        `import-from` copies, EFI vars and TPM state volumes, the cloud-init drive); deleting `unusedN` destroys its
        volume (`try_deallocate_drive`); then the change is written into pending and applied as far as it can be
        (engine/pending.py): all of it when the guest does not run; on a running guest the keys that need no restart,
        and NICs, disks and CD-ROM media through QMP as its `hotplug` option allows (hypervisor/hotplug.py). A volume
        that leaves the config is kept as `unusedN`, unless deleted with `force` (then destroyed when the delete
        applies); a cloud-init drive's is freed. A cloud-init drive that reaches the config gets its image at once
        (before it is hot-plugged into a running guest). What fails to hot-plug stays pending and fails the task with
        `KEY: hotplug problem - …`."""
        vmid, guest = task.vmid, task.guest
        changes = dict(task.intent.get("set", {}))
        delete, revert = list(task.intent.get("delete", [])), list(task.intent.get("revert", []))
        force = bool(task.intent.get("force"))
        words = [f"-{k} {'<hidden>' if k == 'cipassword' else v}" for k, v in sorted(changes.items())]
        words += [f"-{name} {','.join(keys)}" for name, keys in (("delete", delete), ("revert", revert)) if keys]
        task.log(f"update VM {vmid}: {' '.join(words)}" + (" -force 1" if force else ""))
        doomed = destroyed_volumes(vmid, guest["conf"], pending.sections(guest), task.intent)
        busy = next((volid for _, volid, in_use in doomed if in_use), None)
        if busy is not None:
            raise TaskFailed(f"unable to delete '{busy}' - volume is still in use (snapshot?)")
        # once it allocates or hot-plugs, a config change ends with its outcome: cancelled between a hot-unplug and
        # the plug of a replacing disk it left a QEMU without the disk its config names (the simulator, seed 47)
        task.abortable = False
        # allocated against the config as it will be (the machine an EFI disk is for, a cloud-init drive already there)
        keys = sorted(alloc_requests(changes))
        view = {k: v for k, v in pending.applied(guest["conf"], pending.of(guest)).items() if k not in delete}
        view.update(changes)
        await self._allocate(task, vmid, view, keys)
        changes.update({k: view[k] for k in keys})
        conf, pend = pending.stage(vmid, guest["conf"], pending.of(guest), changes, delete, revert, force=force)
        released = pending.released(vmid, guest["conf"], pending.of(guest), conf, pend)  # reverted cloud-init drives
        outcome = Outcome(configs={vmid: conf}, pending={vmid: pend})
        chosen = pending.plan(conf, pend, self.driver.running(vmid), [*changes, *delete, *revert])
        conf, pend = await self._apply_pending(task, conf, pend, chosen.now, outcome)
        if any(k in changes and k in conf and is_cloudinit(str(conf[k])) for k in chosen.now):
            await self._make_cloudinit(task, vmid, conf, outcome)  # as vmconfig_apply_pending
        errors = []
        for key in chosen.plug:
            new = pend.values.get(key)
            try:
                if new is not None and is_cloudinit(str(new)):  # its image first, then the drive
                    await self._make_cloudinit(task, vmid, {**conf, key: new}, outcome)
                outcome.warnings += await hotplug.apply(self.driver, vmid, conf, key, new)
            except (GuestError, StorageError, CloudinitError) as exc:
                errors.append(f"{key}: hotplug problem - {exc}")
                task.log(errors[-1])
                continue
            task.log(f"{key}: {'unplugged' if new is None else 'hot-plugged'}")
            conf, pend = await self._apply_pending(task, conf, pend, [key], outcome)
        for key in pend.keys():
            task.log(f"{key}: pending until the next start")
        for key, volid, _ in doomed:  # the `unusedN` deleted, last (a disk's forced delete destroys when it applies)
            if key.startswith("unused"):
                task.log(f"{key}: removing volume '{volid}'")
                await self.storage_of(volid).free(volid)
        for volid in released:
            task.log(f"found unused cloudinit disk '{volid}', removing it")
            await self.storage_of(volid).free(volid)
        if errors:
            raise TaskFailed(errors[0], outcome)
        return outcome

    @_failing_cleanly
    async def regenerate_cloudinit(self, task: TaskRun) -> Outcome:
        """`PUT …/cloudinit`: the image made anew from the config; a running guest gets it as its new medium
        (qemu-server's vmconfig_update_cloudinit_drive). Nothing for a guest without a cloud-init drive."""
        vmid, conf = task.vmid, task.guest["conf"]
        outcome = Outcome()
        await self._make_cloudinit(task, vmid, conf, outcome)
        key = cloudinit.drive_key(conf)
        if key is not None and self.driver.running(vmid):
            path, fmt = self.resolve(volume_of(str(conf[key])))
            await self.driver.qmp(vmid, "blockdev-change-medium", {"id": key, "filename": path, "format": fmt})
            task.log(f"{key}: new medium inserted")
        return outcome

    @_failing_cleanly
    async def resize(self, task: TaskRun) -> Outcome:
        vmid, conf = task.vmid, dict(task.guest["conf"])
        disk, size_text = task.intent["disk"], str(task.intent["size"])
        if disk not in conf:
            raise TaskFailed(f"disk '{disk}' does not exist")
        volid = volume_of(conf[disk])
        storage = self.storage_of(volid)
        current = await storage.size(volid)
        new = current + propstr.parse_size(size_text[1:]) if size_text.startswith("+") else \
            propstr.parse_size(size_text)
        if new < current:
            raise TaskFailed("shrinking disks is not supported")
        if self.driver.running(vmid):
            await self.driver.qmp(vmid, "block_resize", {"device": f"drive-{disk}", "size": new})
        else:
            await storage.resize(volid, new)
        task.log(f"resized {disk} from {propstr.format_size(current)} to {propstr.format_size(new)}")
        conf[disk] = with_size(str(conf[disk]), volid, new)
        return Outcome(configs={vmid: conf})

    def _snapshot_disks(self, conf: dict) -> list[tuple[str, str]]:
        """(key, volid) of the disks a snapshot covers; all must be qcow2."""
        disks = []
        for key in volume_keys(conf):
            value = str(conf[key])
            if "media=cdrom" in value:
                continue
            volid = volume_of(value)
            _, fmt = self.resolve(volid)
            if fmt != "qcow2":
                raise TaskFailed(f"snapshot feature is not available ({key} is {fmt})")
            disks.append((key, volid))
        return disks

    @_failing_cleanly
    async def snapshot(self, task: TaskRun) -> Outcome:
        vmid, guest = task.vmid, task.guest
        conf, snaps = dict(guest["conf"]), dict(guest["snapshots"])
        name = task.intent["snapname"]
        if conf.get("template"):  # qemu-server's snapshot_prepare, under the config lock
            raise TaskFailed("you can't take a snapshot if it's a template")
        disks = self._snapshot_disks(conf)
        running = self.driver.running(vmid)
        vmstate = bool(task.intent.get("vmstate")) and running
        if vmstate:
            task.log(f"saving VM state and disks of VM {vmid} as snapshot '{name}'")
            out = await self.driver.hmp(vmid, f"savevm {name}")
            if "Error" in out:
                raise TaskFailed(out.strip())
        elif running:
            for key, _ in disks:
                await self.driver.qmp(vmid, "blockdev-snapshot-internal-sync", {"device": f"drive-{key}", "name": name})
        else:
            for _, volid in disks:
                await self.storage_of(volid).volume_snapshot(volid, name)
        snap = {k: v for k, v in conf.items() if k not in ("lock", "parent")}
        snap["snaptime"] = int(self.clock())
        if conf.get("parent"):
            snap["parent"] = conf["parent"]
        if task.intent.get("description"):
            snap["description"] = task.intent["description"]
        if vmstate:
            snap["vmstate"] = 1
        snaps[name] = snap
        conf["parent"] = name
        return Outcome(configs={vmid: conf}, snapshots={vmid: snaps})

    @_failing_cleanly
    async def rollback(self, task: TaskRun) -> Outcome:
        vmid, guest = task.vmid, task.guest
        name = task.intent["snapname"]
        snap = dict(guest["snapshots"][name])
        if self.driver.running(vmid):
            task.log(f"stopping VM {vmid} for rollback")
            await self.driver.stop(vmid)
        conf = {k: v for k, v in snap.items() if k not in SNAPSHOT_META}
        conf["parent"] = name
        for _, volid in self._snapshot_disks(conf):
            await self.storage_of(volid).volume_snapshot_rollback(volid, name)
        task.log(f"rolled back VM {vmid} to snapshot '{name}'")
        # the snapshot's config replaces the current one, and its pending changes go (AbstractConfig's
        # snapshot_apply_config copies no [PENDING] section)
        outcome = Outcome(configs={vmid: conf}, power={vmid: "stopped"}, pending={vmid: pending.Pending()})
        if snap.get("vmstate") or task.intent.get("start"):
            task.log(f"starting VM {vmid}" + (" with the saved state" if snap.get("vmstate") else ""))
            await self._start(task, vmid, conf, outcome, loadvm=name if snap.get("vmstate") else None)
        return outcome

    @_failing_cleanly
    async def delsnapshot(self, task: TaskRun) -> Outcome:
        vmid, guest = task.vmid, task.guest
        name = task.intent["snapname"]
        conf, snaps = dict(guest["conf"]), dict(guest["snapshots"])
        disks_of = {k: v for k, v in snaps[name].items() if k not in SNAPSHOT_META}
        if self.driver.running(vmid):
            out = await self.driver.hmp(vmid, f"delvm {name}")
            if "Error" in out and not task.intent.get("force"):
                raise TaskFailed(out.strip())
        else:
            for _, volid in self._snapshot_disks(disks_of):
                await self.storage_of(volid).volume_snapshot_delete(volid, name)
        conf, snaps = drop_snapshot(conf, snaps, name)
        task.log(f"deleted snapshot '{name}'")
        return Outcome(configs={vmid: conf}, snapshots={vmid: snaps})

    @_failing_cleanly
    async def clone(self, task: TaskRun) -> Outcome:
        vmid, guest, intent = task.vmid, task.guest, task.intent
        newid = int(intent["newid"])
        source = dict(guest["conf"])
        linked = bool(intent.get("linked"))
        conf = {k: v for k, v in source.items() if k not in ("lock", "parent", "template")}
        made: list[str] = []
        try:
            for key in volume_keys(source):
                value = str(source[key])
                if is_cdrom(value) and not is_cloudinit(value):
                    continue
                volid = volume_of(value)
                storage = self.storage_of(volid)
                if is_cloudinit(value):  # a new, empty drive: made when the clone starts (qemu-server clone_disk)
                    target = self.storages.get(intent.get("storage") or storage.storage_id)
                    if target is None:
                        raise TaskFailed(f"storage '{intent.get('storage')}' does not exist")
                    fmt = intent.get("format") if intent.get("format") in ("qcow2", "raw") else \
                        storage.volume_format(volid)
                    new_volid = await target.alloc(newid, cloudinit.CLOUDINIT_SIZE, fmt, f"vm-{newid}-cloudinit")
                elif linked:
                    new_volid = await storage.clone_linked(volid, newid)
                else:
                    target = self.storages.get(intent.get("storage") or storage.storage_id)
                    if target is None:
                        raise TaskFailed(f"storage '{intent.get('storage')}' does not exist")
                    path, fmt = self.resolve(volid)
                    new_volid = await target.clone_full(path, fmt, newid, intent.get("format"))
                made.append(new_volid)
                task.log(f"{key}: allocated target volume '{new_volid}'" if is_cloudinit(value) else
                         f"{key}: {'linked' if linked else 'full'} clone of '{volid}' -> '{new_volid}'")
                props = propstr.parse(value, default_key="file")
                props.pop("volume", None)
                props["file"] = new_volid
                conf[key] = propstr.render(props, default_key="file")
        except (StorageError, TaskFailed) as exc:
            for volid in made:
                await self.storage_of(volid).free(volid)
            raise TaskFailed(f"clone failed: {exc}") from None
        for key in [k for k in conf if k.startswith("unused")]:
            del conf[key]
        for key in sorted(k for k in conf if nics.NET_KEY.fullmatch(k)):  # a clone's NICs get new MACs
            conf[key] = nics.with_mac(str(conf[key]), lambda: f"{self.rng.getrandbits(24):06x}", renew=True)
        conf["smbios1"] = f"uuid={self._uuid()}"
        conf["vmgenid"] = self._uuid()
        conf["name"] = intent.get("name") or f"Copy-of-VM-{source.get('name', vmid)}"
        if intent.get("description"):
            conf["description"] = intent["description"]
        node = intent.get("target") or guest["node"]
        return Outcome(created=[{"vmid": newid, "node": node, "config": conf}])

    @_failing_cleanly
    async def template(self, task: TaskRun) -> Outcome:
        vmid, guest = task.vmid, task.guest
        if self.driver.running(vmid):
            raise TaskFailed("you can't convert a running VM to a template")
        if guest.get("snapshots"):
            raise TaskFailed("you can't convert a VM to template if VM has snapshots")
        conf = dict(guest["conf"])
        for key in volume_keys(conf):
            value = str(conf[key])
            volid = volume_of(value)
            if "media=cdrom" in value or f"vm-{vmid}-disk-" not in volid:
                continue
            base = await self.storage_of(volid).rename_to_base(volid)
            props = propstr.parse(value, default_key="file")
            props.pop("volume", None)
            props["file"] = base
            conf[key] = propstr.render(props, default_key="file")
            task.log(f"{key}: '{volid}' is now '{base}'")
        conf["template"] = 1
        return Outcome(configs={vmid: conf})

    async def _mirrors_gone(self, vmid: int, jobs: list[str], timeout: float = 30.0) -> None:
        """`block-job-cancel` only asks: the mirror's NBD connection to the target stays open until the job has
        ended, and the target cannot drop an export still in use."""
        with trio.move_on_after(timeout):
            while jobs and any(j["device"] in jobs for j in await self.driver.qmp(vmid, "query-block-jobs")):
                await trio.sleep(0.02)
            return
        raise TaskFailed(f"disk mirrors did not end within {int(timeout)} s")

    async def _undo_migration(self, task: TaskRun, remote, disks: list[tuple[str, str]], copied: list[str]) -> None:
        """What a failed or aborted online migration leaves goes: QEMU's migration, the disk mirrors, the target's
        waiting QEMU and the volumes made or copied for it (qemu-server's `phase2_cleanup`). Each step is tried."""
        vmid = task.vmid
        steps = [lambda: self.driver.qmp(vmid, "migrate_cancel")]
        steps += [lambda key=key: self.driver.qmp(vmid, "block-job-cancel", {"device": f"mirror-{key}", "force": True})
                  for key, _ in disks]
        steps += [lambda: remote.abort(vmid)] + [lambda volid=volid: remote.drop_volume(vmid, volid)
                                                 for volid in [v for _, v in disks] + copied]
        with trio.move_on_after(60):
            for step in steps:
                try:
                    await step()
                except (GuestError, Rejection) as exc:
                    task.log(f"cleanup: {exc}")

    @_failing_cleanly
    async def migrate(self, task: TaskRun) -> Outcome:
        """Offline: copy local volumes to the target, then hand it the guest. Online: QEMU live migration
        to a QEMU started with `-incoming` on the target; ownership moves when QEMU reports completion."""
        vmid, guest, intent = task.vmid, task.guest, task.intent
        target = intent["target"]
        remote = self.peers.migration_target(target)
        volumes = self._all_volumes(vmid, guest)
        if not self.driver.running(vmid):
            await self._copy_volumes(task, remote, volumes)
            task.log(f"VM {vmid} now belongs to node '{target}'")
            return Outcome(moved={vmid: target}, then=self._freeing(volumes))
        # the cloud-init drive is copied as a file, not mirrored, and asks for no with-local-disks (QemuMigrate's
        # 'generated' volumes); the target uses the image as it is
        generated = {volume_of(v) for k, v in guest["conf"].items() if pending.is_drive(k) and is_cloudinit(str(v))}
        local = [v for v in volumes if v not in generated]
        if local and not intent.get("with-local-disks"):
            raise TaskFailed(f"can't live migrate VM with local disks ({', '.join(local)}) without with-local-disks")
        disks = [(key, volume_of(guest["conf"][key])) for key in disk_keys(guest["conf"])
                 if volume_of(guest["conf"][key]) in local]
        in_snapshots = {v for snap in guest.get("snapshots", {}).values() for v in owned_volumes(vmid, snap)}
        for _, volid in disks:  # a drive mirror copies the disk's data, not its internal snapshots (qemu-server)
            if volid in in_snapshots:
                raise TaskFailed(f"can't migrate local disk '{volid}': online storage migration not possible if "
                                 "non-replicated snapshot exists")
        sizes = {volid: await self.storage_of(volid).size(volid) for _, volid in disks}
        idle = [v for v in volumes if v not in sizes]  # not attached (unused, in snapshots only): copied as files
        try:
            await self._copy_volumes(task, remote, idle)
            answer = await remote.incoming(vmid, [{"key": key, "volid": volid, "size": sizes[volid]}
                                                  for key, volid in disks])
            uri, nbd = answer["uri"], answer.get("nbd", {})
            task.log(f"target QEMU on '{target}' waits at {uri}" + (f"; disks by NBD: {sorted(nbd)}" if nbd else ""))
            for key, _ in disks:  # copy the disks while the guest runs; writes keep being mirrored
                await self.driver.qmp(vmid, "drive-mirror", {"device": f"drive-{key}", "target": nbd[key],
                                                             "format": "raw", "mode": "existing", "sync": "full",
                                                             "job-id": f"mirror-{key}"})
            while disks:
                jobs = {j["device"]: j for j in await self.driver.qmp(vmid, "query-block-jobs")}
                if all(jobs.get(f"mirror-{key}", {}).get("ready") for key, _ in disks):
                    break
                if any(f"mirror-{key}" not in jobs for key, _ in disks):
                    raise TaskFailed("a disk mirror stopped before it was in sync")
                await trio.sleep(0.1)
            if disks:
                task.log(f"local disks in sync on '{target}': {', '.join(v for _, v in disks)}")
            await self.driver.qmp(vmid, "migrate", {"uri": uri})
            while True:
                state = await self.driver.qmp(vmid, "query-migrate")
                status = state.get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled"):
                    raise TaskFailed(f"migration {status}: {state.get('error-desc', '')}".strip())
                await trio.sleep(0.02)
        except trio.Cancelled:
            if task.aborted:  # left alone, QEMU would finish the migration and the guest would run twice
                with trio.CancelScope(shield=True):
                    await self._undo_migration(task, remote, disks, idle)
            raise
        except (TaskFailed, GuestError, Rejection) as exc:
            await self._undo_migration(task, remote, disks, idle)
            raise TaskFailed(f"online migrate failure - {exc}") from None
        task.abortable = False  # QEMU has handed the guest over: too late to abort
        try:
            for key, _ in disks:  # in sync and the guest paused: end the mirrors without switching to them
                await self.driver.qmp(vmid, "block-job-cancel", {"device": f"mirror-{key}"})
            await self._mirrors_gone(vmid, [f"mirror-{key}" for key, _ in disks])
            if disks:  # the target waits, paused, until its exports are gone
                await remote.resume(vmid, [f"drive-{key}" for key, _ in disks])
        except (TaskFailed, GuestError, Rejection) as exc:
            await self._undo_migration(task, remote, disks, idle)
            raise TaskFailed(f"online migrate failure - {exc}") from None
        task.log(f"migration finished, downtime {state.get('downtime', 0)} ms, "
                 f"{state.get('ram', {}).get('transferred', 0)} bytes of RAM sent")
        await self.driver.stop(vmid)  # the source QEMU is paused after handing over
        return Outcome(moved={vmid: target}, power={vmid: "running"}, then=self._freeing(volumes))

    async def _copy_volumes(self, task: TaskRun, remote, volumes: list[str]) -> None:
        """Volume files sent to the migration's target, under the same ids (Proxmox copies a running guest's
        unused volumes so too; found by the simulator: left behind, the config named a volume on no node)."""
        for volid in volumes:
            path, _ = self.resolve(volid)
            if not os.path.exists(path):  # pve-storage's wording; found by the simulator (sim/README.md)
                raise TaskFailed(f"volume '{volid}' does not exist")
            task.log(f"copying volume '{volid}' to node '{task.intent['target']}'")
            await remote.receive_volume(task.vmid, volid, path)

    def _freeing(self, volumes: list[str]):
        """The source's copies of a migrated guest's volumes go once the log says the guest is the target's
        (qemu-server's phase3_cleanup): freed before, a crash in between left a guest whose disks were on
        no node its config named (found by the simulator)."""
        async def free() -> None:
            for volid in volumes:
                await self.storage_of(volid).free(volid)
        return free
