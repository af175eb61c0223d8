"""QEMU on a simulated host, and the production QEMU driver talking to it.

`SimQemu` holds a host's QEMU processes. A process is launched from the command line the production
`build_argv` made (its drives, `-incoming`, `-S`, `-loadvm`), answers QMP (power, block jobs, live migration,
NBD exports, internal snapshots on its disk images) and emits events; its operations take simulated time:
boot 0.5-3 s, `quit` 0.05-0.5 s, an ACPI power-off 0.5-12 s. Processes outlive the gpve daemon (a restarted
daemon reattaches), not a power loss; faults crash them. A live migration runs inside QEMU: it goes on, and
ends, whether or not the daemon that asked for it is still alive.

`SimQemuDriver` is the production `hypervisor.qemu.QemuDriver` with only its operating-system ends replaced
(launching the process, the QMP socket and its event stream, the guest agent socket (no simulated guest runs
an agent), signals, the pid, waiting for an exit): its
`start`, `stop`, `shutdown`, `qmp`, `hmp`, `attach` and event handling run as in production.
"""

from __future__ import annotations

import math
import os
import random
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from qemu.qmp.protocol import Runstate

from hypervisor.qemu import GuestError, GuestEvent, QemuDriver
from hypervisor.qemu_argv import HostFacts
from sim import images

BOOT_SECONDS = (0.5, 3.0)
INCOMING_SECONDS = (0.1, 0.5)  # `-incoming`: QEMU listens as soon as it is up
STOP_SECONDS = (0.05, 0.5)
SHUTDOWN_SECONDS = (0.5, 6.0)  # an ACPI power-off; one in SLOW_SHUTDOWN takes SLOW_SHUTDOWN_SECONDS, past the
SLOW_SHUTDOWN, SLOW_SHUTDOWN_SECONDS = 0.1, (10.0, 14.0)  # workload's 10 s timeout: the task fails, the guest goes on
MIRROR_SECONDS = (0.2, 2.0)  # a drive mirror's first full pass
MIGRATE_SECONDS = (0.5, 5.0)
SAVEVM_SECONDS = (0.1, 2.0)
JOB_END_SECONDS = (0.005, 0.05)
UNPLUG_SECONDS = (0.01, 0.5)  # a device_del until the guest has acknowledged the unplug
HOST = HostFacts(bridges=frozenset({"vmbr0"}), kvm_available=True)


class QmpError(Exception):
    """A QMP error answer (its `desc`)."""


@dataclass
class Process:
    vmid: int
    pid: int
    status: str  # starting | running | paused | inmigrate | postmigrate | exited (QMP run states, and starting)
    drives: dict[str, tuple[str, str]]  # drive (drive-scsi0) -> (path, format), of the drives holding a medium
    incoming: str | None
    hold: bool  # -S: stays paused after an incoming migration, until `cont`
    clients: list[SimQmp] = field(default_factory=list)
    gone: trio.Event = field(default_factory=trio.Event)
    jobs: dict[str, dict] = field(default_factory=dict)  # block jobs by id: {device, target, ready}
    migration: dict = field(default_factory=dict)  # what query-migrate answers
    exports: set[str] = field(default_factory=set)
    nbd: str | None = None
    autostart: bool = False
    powering_off: bool = False
    generation: int = 0  # bumped when a pending migration is cancelled
    migrating_to: Process | None = None
    owner: SimQemu | None = None  # the host's processes it is one of
    ran: bool = False  # the guest ran in this process (a target paused since its migration arrived has not)
    devices: dict[str, dict] = field(default_factory=dict)  # id -> its -device / device_add properties
    netdevs: set[str] = field(default_factory=set)
    blockdevs: set[str] = field(default_factory=set)  # every drive id, with or without a medium

    def holds_guest(self) -> bool:
        """Booting, running, or paused after running: the guest lives in this process (the invariant counts it;
        a target waiting for its migration, or a source that handed its guest over, does not)."""
        return self.status in ("starting", "running") or (self.status == "paused" and self.ran)

    def run(self) -> None:
        self.status, self.ran = "running", True


class SimQmp:
    """One QMP connection to a process (`answer(command, arguments) -> (result, seconds it takes)`); `events`
    receives its events and ends when the process is gone."""

    def __init__(self, answer: Callable[[str, dict], tuple[object, float]]) -> None:
        self.answer = answer
        self.runstate = Runstate.RUNNING
        self.send, self.events = trio.open_memory_channel[str](math.inf)

    async def execute(self, command: str, arguments: dict | None = None):
        if self.runstate != Runstate.RUNNING:
            raise QmpError("not connected")
        result, took = self.answer(command, dict(arguments or {}))
        if took:
            await trio.sleep(took)
        return result

    def emit(self, event: str) -> bool:
        try:
            self.send.send_nowait(event)
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False

    def close(self) -> None:
        self.runstate = Runstate.IDLE
        self.send.close()

    async def disconnect(self) -> None:
        self.close()


def _drives(argv: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-drive":
            props = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
            if "file" in props and "id" in props:  # (OVMF's code, a read-only pflash, has no id)
                out[props["id"]] = (props["file"], props.get("format", "raw"))
    return out


def _options(value: str, first: str) -> dict:
    """`virtio-blk-pci,drive=drive-virtio0,id=virtio0` -> {first: `virtio-blk-pci`, ...}; a leading `k=v` is a
    property like the others."""
    parts = value.split(",")
    out = {} if "=" in parts[0] else {first: parts[0]}
    out.update(p.split("=", 1) for p in parts if "=" in p)
    return out


def _layout(argv: list[str]) -> tuple[dict[str, dict], set[str], set[str]]:
    """The devices (by id), netdevs and drive ids a command line makes."""
    devices, netdevs, blockdevs = {}, set(), set()
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-device":
            props = _options(value, "driver")
            if "id" in props:
                devices[props["id"]] = props
        elif flag == "-netdev":
            netdevs.add(_options(value, "type")["id"])
        elif flag == "-drive":
            blockdevs.add(_options(value, "file")["id"])
    return devices, netdevs, blockdevs


def _flag(argv: list[str], name: str) -> str | None:
    return next((b for a, b in zip(argv, argv[1:], strict=False) if a == name), None)


class SimQemu:
    """The QEMU processes of one host."""

    def __init__(self, host, rng: random.Random) -> None:
        self.host, self.rng = host, rng
        self.loop = host.world.loop
        self.procs: dict[int, Process] = {}
        self.pids = 0
        self.crashes = 0

    # ---- what the host and the invariants see ---------------------------------------------------
    def status(self, vmid: int) -> str:
        proc = self.procs.get(vmid)
        return proc.status if proc else "stopped"

    def pid(self, vmid: int) -> int | None:
        proc = self.procs.get(vmid)
        return proc.pid if proc else None

    def has_open(self, path: str) -> bool:
        return any(path == p for proc in self.procs.values() for p, _ in proc.drives.values())

    def crash(self, vmid: int, counted: bool = True) -> bool:
        """The process dies (a fault, or the admin stopping a stray copy); True if there was one."""
        proc = self.procs.get(vmid)
        if proc is None:
            return False
        self.crashes += counted
        self._exit(proc, "crash")
        return True

    def power_loss(self) -> None:
        for vmid in sorted(self.procs):
            self._exit(self.procs[vmid], "power")

    # ---- the process lifecycle -------------------------------------------------------------------
    async def launch(self, vmid: int, argv: list[str]) -> None:
        """`qemu -daemonize`: returns once QEMU is up (GuestError if it could not start)."""
        if vmid in self.procs:
            raise GuestError("start failed: QEMU exited with code 1: pidfile is locked by another process")
        drives = _drives(argv)
        missing = next((dev for dev, (path, _) in sorted(drives.items()) if not os.path.exists(path)), None)
        if missing:
            raise GuestError(f"start failed: QEMU exited with code 1: -drive id={missing}: Could not open "
                             f"'{os.path.basename(drives[missing][0])}': No such file or directory")
        loadvm = _flag(argv, "-loadvm")
        if loadvm:
            qcow2 = [path for path, fmt in drives.values() if fmt == "qcow2"]
            found = [s for path in qcow2 for s in images.read(path)["snapshots"] if s["name"] == loadvm]
            if not qcow2 or len(found) < len(qcow2) or not any(s["vmstate"] for s in found):
                raise GuestError(f"start failed: QEMU exited with code 1: Snapshot '{loadvm}' does not exist in "
                                 "one or more devices")
        incoming = _flag(argv, "-incoming")
        self.pids += 1
        proc = Process(vmid, 1000 + self.pids, "inmigrate" if incoming else "starting", drives, incoming,
                       "-S" in argv, owner=self)
        proc.devices, proc.netdevs, proc.blockdevs = _layout(argv)
        self.procs[vmid] = proc
        up = trio.Event()  # QEMU comes up whether or not the daemon that launched it still waits
        self._after(INCOMING_SECONDS if incoming else BOOT_SECONDS, self._up, proc, up)
        await up.wait()
        if proc.status == "exited":
            raise GuestError("start failed: QEMU exited with code 1")

    def _up(self, proc: Process, up: trio.Event) -> None:
        if proc.incoming and proc.status == "inmigrate":
            self.host.world.listeners[proc.incoming] = proc
        elif proc.status == "starting":
            if proc.hold:
                proc.status = "paused"
            else:
                proc.run()
        up.set()

    def connect(self, vmid: int) -> SimQmp:
        proc = self.procs.get(vmid)
        if proc is None:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        client = SimQmp(lambda command, arguments: (self._qmp(proc, command, arguments),
                                                    self._delay(command, arguments)))
        proc.clients.append(client)
        return client

    def _emit(self, proc: Process, event: str) -> None:
        proc.clients = [c for c in proc.clients if c.emit(event)]

    def _exit(self, proc: Process, how: str) -> None:
        """`quit`, `poweroff` (the guest's own), `signal`, `crash`, `power` (the host's)."""
        if proc.status == "exited":
            return
        if how in ("quit", "poweroff", "signal"):
            self._emit(proc, "SHUTDOWN")
        handed_over = proc.status == "postmigrate"
        if proc.migration.get("status") == "active" and proc.migrating_to is not None:
            target = proc.migrating_to  # the target's load of the migration fails: it quits
            target.owner._exit(target, "crash")
        proc.status = "exited"
        if self.procs.get(proc.vmid) is proc:
            del self.procs[proc.vmid]
        world = self.host.world
        if proc.incoming and world.listeners.get(proc.incoming) is proc:
            del world.listeners[proc.incoming]
        if proc.nbd and world.nbd.get(proc.nbd) is proc:
            del world.nbd[proc.nbd]
        for client in proc.clients:
            client.close()
        proc.clients = []
        proc.gone.set()
        if handed_over and how == "quit":
            world.handed_over(self.host)

    def _after(self, span: tuple[float, float], fn, *args) -> None:
        self.loop.after(self.rng.uniform(*span), fn, *args)

    def _delay(self, command: str, arguments: dict) -> float:
        """How long a QMP command keeps its caller waiting."""
        if command == "human-monitor-command" and str(arguments.get("command-line", "")).startswith("savevm"):
            return self.rng.uniform(*SAVEVM_SECONDS)
        return 0.0

    # ---- QMP ---------------------------------------------------------------------------------------
    def _qmp(self, proc: Process, command: str, args: dict):
        if proc.status == "exited":
            raise QmpError("not connected")
        handler = getattr(self, "_qmp_" + command.replace("-", "_"), None)
        if handler is None:
            raise QmpError(f"The command {command} has not been found")
        return handler(proc, args)

    def _qmp_quit(self, proc: Process, args: dict) -> dict:
        self._after(STOP_SECONDS, self._exit, proc, "quit")
        return {}

    def _qmp_system_powerdown(self, proc: Process, args: dict) -> dict:
        if proc.status in ("starting", "running") and not proc.powering_off:  # a paused guest does not see it
            proc.powering_off = True
            slow = self.rng.random() < SLOW_SHUTDOWN
            self._after(SLOW_SHUTDOWN_SECONDS if slow else SHUTDOWN_SECONDS, self._powered_off, proc)
        return {}

    def _powered_off(self, proc: Process) -> None:
        """The guest's ACPI power-off ends; paused meanwhile, it ends once the guest runs again."""
        if proc.powering_off and proc.status in ("starting", "running"):
            self._exit(proc, "poweroff")

    def _qmp_system_reset(self, proc: Process, args: dict) -> dict:
        proc.powering_off = False
        return {}

    def _qmp_stop(self, proc: Process, args: dict) -> dict:
        if proc.status == "running":
            proc.status = "paused"
            self._emit(proc, "STOP")
        return {}

    def _qmp_cont(self, proc: Process, args: dict) -> dict:
        if proc.status == "inmigrate":
            proc.autostart = True
        elif proc.status in ("paused", "postmigrate"):
            proc.run()
            self._emit(proc, "RESUME")
            if proc.powering_off:
                self._after(STOP_SECONDS, self._powered_off, proc)
        return {}

    def _qmp_query_status(self, proc: Process, args: dict) -> dict:
        return {"status": proc.status, "running": proc.status == "running"}

    def _drive(self, proc: Process, device: str) -> tuple[str, str]:
        if device not in proc.drives:
            raise QmpError(f"Device '{device}' not found")
        return proc.drives[device]

    def _qmp_block_resize(self, proc: Process, args: dict) -> dict:
        path, _ = self._drive(proc, args["device"])
        image = images.read(path)
        image["size"] = int(args["size"])
        images.write(path, image)
        return {}

    def _qmp_blockdev_snapshot_internal_sync(self, proc: Process, args: dict) -> dict:
        path, fmt = self._drive(proc, args["device"])
        if fmt != "qcow2":
            raise QmpError(f"Block format '{fmt}' used by device '{args['device']}' does not support internal "
                           "snapshots")
        image = images.read(path)
        if any(s["name"] == args["name"] for s in image["snapshots"]):
            raise QmpError(f"Snapshot with name '{args['name']}' already exists")
        images.snapshot(image, "create", args["name"])
        images.write(path, image)
        return {}

    def _qmp_human_monitor_command(self, proc: Process, args: dict) -> str:
        verb, _, name = str(args.get("command-line", "")).partition(" ")
        if verb == "drive_add":
            return self._drive_add(proc, name)
        if verb == "drive_del":
            if name not in proc.blockdevs:
                return f"Device '{name}' not found\r\n"
            if any(d.get("drive") == name for d in proc.devices.values()):
                return f"Device '{name}' is in use\r\n"
            proc.blockdevs.discard(name)
            proc.drives.pop(name, None)
            return ""
        if verb not in ("savevm", "delvm"):
            return f"unknown command: '{verb}'\r\n"
        if verb == "savevm":
            writable = sorted(proc.drives.items())
            if not writable:
                return "Error: No block device can accept snapshots\r\n"
            raw = next((dev for dev, (_, fmt) in writable if fmt != "qcow2"), None)
            if raw:
                return f"Error: Device '{raw}' is writable but does not support snapshots\r\n"
        for i, (_, (path, _fmt)) in enumerate(sorted(proc.drives.items())):
            image = images.read(path)
            if any(s["name"] == name for s in image["snapshots"]):
                images.snapshot(image, "delete", name)
            if verb == "savevm":
                images.snapshot(image, "create", name, vmstate=i == 0)
            images.write(path, image)
        return ""

    # ---- devices: hotplug ------------------------------------------------------------------------------
    def _drive_add(self, proc: Process, rest: str) -> str:
        """HMP `drive_add auto "if=none,id=drive-scsi1,file=PATH,format=FMT"`."""
        props = _options(rest.partition(" ")[2].strip().strip('"'), "file")
        drive = props.get("id", "")
        if drive in proc.blockdevs:
            return f"Duplicate ID '{drive}' for drive\r\n"
        if "file" in props:
            if not os.path.exists(props["file"]):
                return f"Could not open '{os.path.basename(props['file'])}': No such file or directory\r\n"
            proc.drives[drive] = (props["file"], props.get("format", "raw"))
        proc.blockdevs.add(drive)
        return "OK\r\n"

    def _qmp_qom_list(self, proc: Process, args: dict) -> list[dict]:
        if args.get("path") != "/machine/peripheral":
            raise QmpError(f"Device '{args.get('path')}' not found")
        return [{"name": i, "type": f"child<{d['driver']}>"} for i, d in sorted(proc.devices.items())]

    def _qmp_device_add(self, proc: Process, args: dict) -> dict:
        props = {k: str(v) for k, v in args.items()}
        dev = props.get("id", "")
        if dev in proc.devices:
            raise QmpError(f"Duplicate device ID '{dev}'")
        if "drive" in props and props["drive"] not in proc.blockdevs:
            raise QmpError(f"Property '{props['driver']}.drive' can't find value '{props['drive']}'")
        if "netdev" in props and props["netdev"] not in proc.netdevs:
            raise QmpError(f"Property '{props['driver']}.netdev' can't find value '{props['netdev']}'")
        bus = props.get("bus", "").split(".")[0]
        if bus.startswith("scsihw") and bus not in proc.devices:
            raise QmpError(f"Bus '{props['bus']}' not found")
        proc.devices[dev] = props
        return {}

    def _qmp_device_del(self, proc: Process, args: dict) -> dict:
        if args["id"] not in proc.devices:
            raise QmpError(f"Device '{args['id']}' not found")
        self._after(UNPLUG_SECONDS, self._unplugged, proc, args["id"])  # once the guest has let go of it
        return {}

    def _unplugged(self, proc: Process, dev: str) -> None:
        props = proc.devices.pop(dev, None)
        if props and props.get("drive"):  # a drive made for a device goes with it
            proc.blockdevs.discard(props["drive"])
            proc.drives.pop(props["drive"], None)

    def _qmp_netdev_add(self, proc: Process, args: dict) -> dict:
        if args["id"] in proc.netdevs:
            raise QmpError(f"Duplicate ID '{args['id']}' for netdev")
        proc.netdevs.add(args["id"])
        return {}

    def _qmp_netdev_del(self, proc: Process, args: dict) -> dict:
        if args["id"] not in proc.netdevs:
            raise QmpError(f"Device '{args['id']}' not found")
        proc.netdevs.discard(args["id"])
        return {}

    def _medium_drive(self, proc: Process, dev: str) -> str:
        drive = proc.devices.get(dev, {}).get("drive")
        if drive is None:
            raise QmpError(f"Device '{dev}' not found")
        return drive

    def _qmp_eject(self, proc: Process, args: dict) -> dict:
        proc.drives.pop(self._medium_drive(proc, args["id"]), None)
        return {}

    def _qmp_blockdev_change_medium(self, proc: Process, args: dict) -> dict:
        drive = self._medium_drive(proc, args["id"])
        if not os.path.exists(args["filename"]):
            raise QmpError(f"Could not open '{args['filename']}': No such file or directory")
        proc.drives[drive] = (args["filename"], args.get("format", "raw"))
        return {}

    # ---- block jobs and live migration (source side) ---------------------------------------------
    def _qmp_drive_mirror(self, proc: Process, args: dict) -> dict:
        self._drive(proc, args["device"])
        job = args.get("job-id") or args["device"]
        m = re.fullmatch(r"nbd:(.+:\d+):exportname=(.+)", str(args["target"]))
        target = self.host.world.nbd.get(m.group(1)) if m else None
        if target is None or m.group(2) not in target.exports:
            raise QmpError(f"Failed to connect to '{args['target']}': Connection refused")
        proc.jobs[job] = {"device": job, "type": "mirror", "ready": False, "target": (target, m.group(2))}
        self._after(MIRROR_SECONDS, self._mirror_ready, proc, job)
        return {}

    def _mirror_alive(self, proc: Process, job: str) -> bool:
        entry = proc.jobs.get(job)
        if entry is None:
            return False
        target, export = entry["target"]
        if target.status == "exited" or export not in target.exports:
            del proc.jobs[job]  # the NBD connection broke: the job fails and goes away
            return False
        return True

    def _mirror_ready(self, proc: Process, job: str) -> None:
        if self._mirror_alive(proc, job):
            proc.jobs[job]["ready"] = True

    def _qmp_query_block_jobs(self, proc: Process, args: dict) -> list[dict]:
        for job in sorted(proc.jobs):
            self._mirror_alive(proc, job)
        return [{"device": j["device"], "type": j["type"], "ready": j["ready"]} for _, j in sorted(proc.jobs.items())]

    def _qmp_block_job_cancel(self, proc: Process, args: dict) -> dict:
        if args["device"] not in proc.jobs:
            raise QmpError(f"Block job '{args['device']}' not found")
        self._after(JOB_END_SECONDS, proc.jobs.pop, args["device"], None)
        return {}

    def _qmp_migrate(self, proc: Process, args: dict) -> dict:
        if proc.migration.get("status") in ("setup", "active"):
            raise QmpError("There's a migration process in progress")
        target = self.host.world.listeners.get(args["uri"])
        if target is None or target.status != "inmigrate":
            proc.migration = {"status": "failed", "error-desc": f"Failed to connect to '{args['uri']}': "
                                                                 "Connection refused"}
            return {}
        proc.generation += 1
        proc.migration = {"status": "active"}
        proc.migrating_to = target
        self._after(MIGRATE_SECONDS, self._migrated, proc, target, proc.generation)
        return {}

    def _migrated(self, proc: Process, target: Process, generation: int) -> None:
        if proc.generation != generation or proc.migration.get("status") != "active" or proc.status == "exited":
            return
        if target.status != "inmigrate":
            proc.migration = {"status": "failed", "error-desc": "Unable to write to socket: Connection reset by peer"}
            return
        was_running = proc.status == "running"
        proc.status = "postmigrate"  # paused, its state handed over
        if was_running and (target.autostart or not target.hold):
            target.run()
        else:
            target.status = "paused"
        transferred = self.rng.randrange(1 << 26, 1 << 30)
        proc.migration = {"status": "completed", "downtime": self.rng.randrange(5, 300),
                          "ram": {"transferred": transferred}}

    def _qmp_query_migrate(self, proc: Process, args: dict) -> dict:
        return dict(proc.migration)

    def _qmp_migrate_cancel(self, proc: Process, args: dict) -> dict:
        if proc.migration.get("status") == "active":
            proc.generation += 1
            proc.migration = {"status": "cancelled"}
        return {}

    # ---- NBD exports (target side) -----------------------------------------------------------------
    def _qmp_nbd_server_start(self, proc: Process, args: dict) -> dict:
        if proc.nbd:
            raise QmpError("NBD server already running")
        data = args["addr"]["data"]
        proc.nbd = f"{data['host']}:{data['port']}"
        self.host.world.nbd[proc.nbd] = proc
        return {}

    def _qmp_nbd_server_stop(self, proc: Process, args: dict) -> dict:
        if proc.nbd and self.host.world.nbd.get(proc.nbd) is proc:
            del self.host.world.nbd[proc.nbd]
        proc.nbd = None
        proc.exports.clear()
        return {}

    def _qmp_query_block(self, proc: Process, args: dict) -> list[dict]:
        return [{"device": dev, "inserted": {"node-name": f"#block{i}", "file": path}}
                for i, (dev, (path, _)) in enumerate(sorted(proc.drives.items()))]

    def _qmp_block_export_add(self, proc: Process, args: dict) -> dict:
        if not proc.nbd:
            raise QmpError("NBD server not running")
        proc.exports.add(args["id"])
        return {}

    def _qmp_block_export_del(self, proc: Process, args: dict) -> dict:
        if args["id"] not in proc.exports:
            raise QmpError(f"Export '{args['id']}' is not found")
        proc.exports.discard(args["id"])
        return {}

    # ---- signals -------------------------------------------------------------------------------------
    def signal(self, pid: int, sig: int) -> None:
        proc = next((p for p in self.procs.values() if p.pid == pid), None)
        if proc is not None:
            self._exit(proc, "signal" if sig == signal.SIGTERM else "crash")


class SimBridge:
    """`hypervisor.asyncio_bridge.AsyncioBridge` without asyncio: calls are awaited in trio, watchers run as tasks
    of the daemon (`spawn`: its nursery's start_soon)."""

    def __init__(self, spawn: Callable) -> None:
        self._spawn = spawn

    async def call(self, fn, *args):
        return await fn(*args)

    def spawn(self, coro) -> None:
        async def run() -> None:
            await coro
        self._spawn(run)


class SimQemuDriver(QemuDriver):
    def __init__(self, qemu: SimQemu, run_dir: str, resolve, spawn: Callable) -> None:
        super().__init__(run_dir, SimBridge(spawn), resolve, facts=lambda: HOST)  # type: ignore[arg-type]
        self.qemu = qemu

    def pid(self, vmid: int) -> int | None:
        return self.qemu.pid(vmid)

    def with_pidfile(self) -> set[int]:
        return set(self.qemu.procs)

    async def _launch(self, argv: list[str]) -> None:
        vmid = int(re.search(r"/(\d+)\.pid$", _flag(argv, "-pidfile") or "").group(1))
        await self.qemu.launch(vmid, argv)

    async def _connect(self, vmid: int) -> SimQmp:  # type: ignore[override]
        return self.qemu.connect(vmid)

    async def _watch(self, vmid: int, client: SimQmp) -> None:  # type: ignore[override]
        async with client.events:
            async for event in client.events:
                self._emit(GuestEvent(vmid, event))
        self._emit(GuestEvent(vmid, "DISCONNECTED"))

    async def _qga_open(self, vmid: int):
        """Simulated guests run no guest agent: one configured with `agent` is shut down by ACPI, with Proxmox's
        warning that the agent does not answer."""
        raise ConnectionRefusedError(111, "Connection refused")

    def _kill(self, pid: int, sig: int) -> None:
        self.qemu.signal(pid, sig)

    async def wait_exit(self, vmid: int, timeout: float) -> bool:
        """As the production one, without polling /proc every 50 ms."""
        with trio.move_on_after(timeout):
            proc = self.qemu.procs.get(vmid)
            if proc is not None:
                await proc.gone.wait()
            return True
        return False
