"""The QEMU driver: starts guests as daemonized QEMU processes and talks QMP to them.

Guests outlive the daemon, as in Proxmox: a restarted node finds each guest by its pid file and
reattaches to its QMP socket. Every QMP event and every lost connection is reported on a trio
channel, so the node can tell a clean power-off from a QEMU that died.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio
from qemu.qmp import QMPClient
from qemu.qmp.protocol import Runstate

from hypervisor import propstr, qga
from hypervisor.asyncio_bridge import AsyncioBridge
from hypervisor.qemu_argv import (
    HostFacts,
    RunPaths,
    Spice,
    StartError,
    agent_socket,
    build_argv,
    machine_type,
    memory_mib,
    ovmf_files,
    spice_heads,
    tap_script,
    temporary_vars,
)

log = structlog.get_logger("gpve.qemu")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SPICE_PORTS = range(61000, 62000)  # PVE::Tools::next_spice_port


class GuestError(Exception):
    """A guest operation failed; the message ends the task as `TASK ERROR: <message>`."""


@dataclass
class GuestEvent:
    vmid: int
    event: str  # a QMP event name, or DISCONNECTED
    data: dict = field(default_factory=dict)


def host_facts() -> HostFacts:
    bridges = frozenset(n for n in os.listdir("/sys/class/net") if os.path.isdir(f"/sys/class/net/{n}/bridge")) \
        if os.path.isdir("/sys/class/net") else frozenset()
    return HostFacts(bridges=bridges, kvm_available=os.path.exists("/dev/kvm"))


def _free_port(ports: range) -> int:
    """The first TCP port of `ports` free on localhost (PVE::Tools::next_unused_port)."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise StartError(f"unable to find free port ({ports.start}-{ports.stop - 1})")


class QemuDriver:
    """Where a QEMU process, its QMP socket, its guest agent socket and the host meet the operating system
    (`_launch`, `_connect`, `_watch`, `_qga_open`, `_kill`, `pid`, `wait_exit`, `facts`), the simulator's driver
    (sim/qemu.py) puts its own."""

    def __init__(self, run_dir: str, bridge: AsyncioBridge, resolve: Callable[[str], tuple[str, str]],
                 qemu_binary: str = "qemu-system-x86_64", facts: Callable[[], HostFacts] = host_facts,
                 spice_tls: tuple[str, str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.spice_tls = spice_tls  # (certificate, key, CA) for SPICE displays: the node's own
        os.makedirs(run_dir, exist_ok=True)
        self.bridge = bridge
        self.resolve = resolve
        self.qemu_binary = qemu_binary
        self.facts = facts
        self.clients: dict[int, QMPClient] = {}
        self.shutdown_seen: set[int] = set()
        self.events_in, self.events = trio.open_memory_channel[GuestEvent](math.inf)

    # ---- paths and processes ------------------------------------------------------------
    def paths(self, vmid: int) -> RunPaths:
        return RunPaths(qmp=os.path.join(self.run_dir, f"{vmid}.qmp"),
                        pidfile=os.path.join(self.run_dir, f"{vmid}.pid"), run_dir=self.run_dir)

    def pid(self, vmid: int) -> int | None:
        """The pid of this guest's QEMU if it runs (checked against its command line)."""
        try:
            with open(self.paths(vmid).pidfile) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except (OSError, ValueError):
            return None
        pidfile = self.paths(vmid).pidfile.encode()
        if any(a == b"-pidfile" and b == pidfile for a, b in zip(args, args[1:], strict=False)):
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return None
            return pid
        return None

    def running(self, vmid: int) -> bool:
        return self.pid(vmid) is not None

    def with_pidfile(self) -> set[int]:
        """The guests with a pidfile in the run directory: the only ones `pid` can find running. One directory read
        instead of a failed open per stopped guest (10,000 of them took the event loop 0.15 s per sweep)."""
        try:
            names = os.listdir(self.run_dir)
        except OSError:
            return set()
        return {int(name[:-4]) for name in names if name.endswith(".pid") and name[:-4].isdigit()}

    # ---- QMP ----------------------------------------------------------------------------
    async def attach(self, vmid: int) -> bool:
        """Connect to a running guest's QMP socket (after start, or after a daemon restart)."""
        if vmid in self.clients and self.clients[vmid].runstate == Runstate.RUNNING:
            return True
        if not self.running(vmid):
            return False
        try:
            client = await self._connect(vmid)
        except Exception as exc:
            raise GuestError(f"unable to connect to VM {vmid} qmp socket - {exc}") from None
        self.clients[vmid] = client
        self.bridge.spawn(self._watch(vmid, client))
        return True

    async def _connect(self, vmid: int) -> QMPClient:
        client = QMPClient(f"vm{vmid}")
        await self.bridge.call(client.connect, self.paths(vmid).qmp)
        return client

    async def _watch(self, vmid: int, client: QMPClient) -> None:
        """(asyncio) Forward events; report the connection's end."""
        async def forward() -> None:
            async for event in client.events:
                self.bridge.to_trio(self._emit, GuestEvent(vmid, event["event"], dict(event.get("data") or {})))

        task = asyncio.create_task(forward())
        while client.runstate == Runstate.RUNNING:
            await client.runstate_changed()
        task.cancel()
        try:
            await client.disconnect()  # collects the reader's EOF error, which is the expected end here
        except Exception:
            pass
        self.bridge.to_trio(self._emit, GuestEvent(vmid, "DISCONNECTED"))

    def _emit(self, event: GuestEvent) -> None:
        if event.event == "SHUTDOWN":
            self.shutdown_seen.add(event.vmid)
        if event.event == "DISCONNECTED":
            client = self.clients.get(event.vmid)
            if client is not None and client.runstate != Runstate.RUNNING:
                self.clients.pop(event.vmid, None)
        self.events_in.send_nowait(event)

    async def qmp(self, vmid: int, command: str, arguments: dict | None = None):
        if not await self.attach(vmid):
            raise GuestError(f"VM {vmid} not running")
        client = self.clients[vmid]
        try:
            return await self.bridge.call(client.execute, command, arguments)
        except Exception as exc:
            raise GuestError(f"VM {vmid} qmp command '{command}' failed - {exc}") from None

    async def hmp(self, vmid: int, command_line: str) -> str:
        out = await self.qmp(vmid, "human-monitor-command", {"command-line": command_line})
        return str(out or "")

    # ---- guest agent --------------------------------------------------------------------
    async def _qga_open(self, vmid: int) -> trio.abc.Stream:
        return await trio.open_unix_socket(agent_socket(self.run_dir, vmid))

    async def agent(self, vmid: int, command: str, arguments: dict | None = None, timeout: float | None = None):
        """One guest agent command (`guest-ping`, ...; hypervisor/qga.py): its result, or `{"error": {...}}` when
        the agent answers with an error. GuestError when the guest does not run here, or with Proxmox's
        `VM N qga command 'guest-ping' failed - got timeout` when no answer comes (never naming the arguments)."""
        if not self.running(vmid):
            raise GuestError(f"VM {vmid} not running")
        try:
            return await qga.execute(lambda: self._qga_open(vmid), command, arguments, timeout)
        except qga.AgentUnavailable as exc:
            raise GuestError(f"VM {vmid} qga command '{command}' failed - {exc}") from None

    async def agent_running(self, vmid: int) -> str | None:
        """None when the agent answers `guest-ping` within 3 s, else why not (qemu-server's `qga_check_running`)."""
        try:
            await self.agent(vmid, "guest-ping", timeout=3)
            return None
        except GuestError as exc:
            return str(exc)

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self, vmid: int, conf: dict, loadvm: str | None = None, incoming: str | None = None,
                    paused: bool = False) -> int:
        if self.running(vmid):
            raise GuestError(f"VM {vmid} already running")
        try:
            spice = Spice(_free_port(SPICE_PORTS), *(self.spice_tls or ())) if spice_heads(conf) else None
            argv = build_argv(vmid, conf, self.resolve, self.facts(), self.paths(vmid), self.qemu_binary, loadvm,
                              incoming, paused, spice)
        except (StartError, Exception) as exc:
            raise GuestError(str(exc)) from None
        if conf.get("bios") == "ovmf":
            self._prepare_firmware(vmid, conf)
        for key, value in conf.items():
            if key.startswith("net") and key[3:].isdigit():
                self.write_tap_script(vmid, key, str(value))
        for stale in (self.paths(vmid).qmp, self.paths(vmid).pidfile):
            if os.path.exists(stale):
                os.unlink(stale)
        self.shutdown_seen.discard(vmid)
        await self._launch(argv)
        pid = self.pid(vmid)
        if pid is None:
            raise GuestError("start failed: QEMU did not leave a running process")
        await self.attach(vmid)
        return pid

    def write_tap_script(self, vmid: int, key: str, value: str) -> None:
        """The ifup script QEMU runs for bridged NIC `key` (at start, or when it is hot-plugged)."""
        if "bridge" in propstr.parse(value):
            path = os.path.join(self.run_dir, f"tap{vmid}i{key[3:]}.up")
            with open(path, "w") as f:
                f.write(tap_script(value))
            os.chmod(path, 0o755)
    def _prepare_firmware(self, vmid: int, conf: dict) -> None:
        """An OVMF guest needs the firmware files; without an `efidisk0` it gets a fresh copy of the vars template
        (qemu-server's `print_ovmf_drive_commandlines`: `EFI base image '…' not found`)."""
        efidisk = propstr.parse(str(conf["efidisk0"]), default_key="file") if conf.get("efidisk0") else None
        code, template = ovmf_files(conf, efidisk)
        if not os.path.exists(code):
            raise GuestError(f"EFI base image '{code}' not found")
        if not os.path.exists(template):
            raise GuestError(f"EFI vars image '{template}' not found")
        if efidisk is None:
            shutil.copyfile(template, temporary_vars(self.paths(vmid), vmid))

    async def _launch(self, argv: list[str]) -> None:
        """Run QEMU until it has daemonized (GuestError if it exits with an error instead)."""
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False,
                                        start_new_session=True)
        if result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            raise GuestError(f"start failed: QEMU exited with code {result.returncode}"
                             + (f": {lines[-1]}" if lines else ""))

    def _kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    async def paused(self, vmid: int) -> bool:
        """Proxmox's `vm_is_paused($vmid, 1)`: QMP says paused, prelaunch or suspended (a QMP error: not paused)."""
        try:
            status = await self.qmp(vmid, "query-status")
        except GuestError:
            return False
        return isinstance(status, dict) and status.get("status") in ("paused", "prelaunch", "suspended")

    async def wait_exit(self, vmid: int, timeout: float) -> bool:
        """Whether the guest's QEMU has exited within `timeout` s: woken by a pidfd the moment it does (polling
        every 50 ms made a stop 65 ms slower than QEMU's own exit), polled where there is none."""
        with trio.move_on_after(timeout):
            pid = self.pid(vmid)
            if pid is not None:
                await _exited(pid, lambda: self.pid(vmid) == pid)
            while self.running(vmid):
                await trio.sleep(0.05)
            return True
        return False

    async def stop(self, vmid: int, timeout: float = 10.0) -> None:
        """Hard stop: QMP `quit`, then SIGTERM, then SIGKILL."""
        if not self.running(vmid):
            return
        try:
            with trio.move_on_after(2):
                await self.qmp(vmid, "quit")
        except GuestError:
            pass
        if await self.wait_exit(vmid, timeout):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pid = self.pid(vmid)
            if pid is None:
                return
            self._kill(pid, sig)
            if await self.wait_exit(vmid, 5):
                return
        raise GuestError(f"VM {vmid} did not stop")

    async def shutdown(self, vmid: int, timeout: float, force: bool, agent: bool = False) -> list[str]:
        """The guest agent's `guest-shutdown` (`agent`), else the ACPI power button; after `timeout`, a hard stop if
        `force` (qemu-server's `_do_vm_stop`). Returns warnings."""
        if not self.running(vmid):
            return []
        wait = timeout
        if agent:
            deadline = trio.current_time() + timeout
            try:  # the agent does not answer it: the connection ends when QEMU does
                await self.agent(vmid, "guest-shutdown", timeout=timeout)
            except GuestError:
                if not self.running(vmid):
                    return ["Unexpected: VM shutdown command failed, but VM not running anymore.."]
                if not force:
                    raise GuestError("VM quit/powerdown failed") from None
                await self.stop(vmid)
                return ["VM quit/powerdown failed - terminating now with SIGTERM"]
            wait = max(deadline - trio.current_time(), 5.0)  # QEMU takes a moment to go once the guest is off
        else:
            await self.qmp(vmid, "system_powerdown")
        if await self.wait_exit(vmid, wait):
            return []
        if not force:
            raise GuestError("VM quit/powerdown failed - got timeout")
        await self.stop(vmid)
        return ["VM quit/powerdown failed - terminating now with SIGTERM"]

    # ---- status -------------------------------------------------------------------------
    def process_status(self, vmid: int, conf: dict) -> dict:
        """What /proc tells of a guest that runs here: `status`, `pid`, `uptime` (no QMP round trip; its cpu,
        mem and counters come from the node's sampler, hypervisor/sampler.py)."""
        maxmem = memory_mib(conf) * (1 << 20)
        pid = self.pid(vmid)
        if pid is None:
            return {"status": "stopped", "maxmem": maxmem, "uptime": 0}
        out: dict = {"status": "running", "pid": pid, "maxmem": maxmem, "uptime": 0}
        try:
            out["uptime"] = self._uptime(self._proc_stat(pid))
        except (OSError, IndexError, ValueError):
            pass
        return out

    @staticmethod
    def _uptime(stat: list[str]) -> int:
        """Seconds since the process of these /proc/PID/stat fields started."""
        with open("/proc/uptime") as f:
            boot_uptime = float(f.read().split()[0])
        return int(boot_uptime - int(stat[19]) / CLK_TCK)

    @staticmethod
    def _proc_stat(pid: int) -> list[str]:
        """The fields of /proc/PID/stat after the command name (field 3 on, so `[11]` is utime)."""
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    async def counters(self, vmid: int) -> dict | None:
        """A running guest's cumulative figures, as Proxmox's `vmstatus` reads them: `cpu_seconds` (its QEMU's
        user and system time, all threads), `uptime`, `mem` (its resident memory), `diskread`/`diskwrite` (bytes, QMP
        `query-blockstats` over all drives, once attached), `netin`/`netout` (bytes, its tap devices). None if it
        does not run."""
        pid = self.pid(vmid)
        if pid is None:
            return None
        try:
            fields = self._proc_stat(pid)
            cpu_seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
            uptime = self._uptime(fields)
            with open(f"/proc/{pid}/status") as f:
                rss = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, IndexError, ValueError):
            return None
        out = {"cpu_seconds": cpu_seconds, "uptime": uptime, "mem": rss, "diskread": 0, "diskwrite": 0}
        client = self.clients.get(vmid)
        try:
            if client is None or client.runstate != Runstate.RUNNING:  # attaching is the start's and the watcher's
                raise GuestError("not attached")
            with trio.fail_after(2):
                stats = await self.qmp(vmid, "query-blockstats")
            out["diskread"] = sum(s["stats"].get("rd_bytes", 0) for s in stats)
            out["diskwrite"] = sum(s["stats"].get("wr_bytes", 0) for s in stats)
        except (GuestError, KeyError, TypeError, trio.TooSlowError):
            pass
        out["netin"], out["netout"] = self._tap_counters(vmid)
        return out

    async def status(self, vmid: int, conf: dict) -> dict:
        """Proxmox's status/current fields for a guest that runs here, from /proc and QMP."""
        out = self.process_status(vmid, conf)
        if out["status"] == "stopped":
            return {**out, "qmpstatus": "stopped"}
        try:
            status = await self.qmp(vmid, "query-status")
            out["qmpstatus"] = status.get("status", "running")
            version = await self.qmp(vmid, "query-version")
            q = version["qemu"]
            out["running-qemu"] = f"{q['major']}.{q['minor']}.{q['micro']}"
            machines = await self.qmp(vmid, "query-machines")
            wanted = machine_type(conf)
            current = next((m for m in machines if m.get("is-current") or wanted in (m.get("alias"), m["name"])), None)
            out["running-machine"] = current["name"] if current else ""
        except (GuestError, KeyError, TypeError):
            out.setdefault("qmpstatus", "running")
        return out

    @staticmethod
    def _tap_counters(vmid: int) -> tuple[int, int]:
        """Bytes into and out of the guest over its tap devices (the host sees them reversed)."""
        netin = netout = 0
        base = "/sys/class/net"
        for dev in os.listdir(base) if os.path.isdir(base) else []:
            if dev.startswith(f"tap{vmid}i"):
                try:
                    with open(f"{base}/{dev}/statistics/tx_bytes") as f:
                        netin += int(f.read())
                    with open(f"{base}/{dev}/statistics/rx_bytes") as f:
                        netout += int(f.read())
                except (OSError, ValueError):
                    pass
        return netin, netout

    def kill_all_clients(self) -> None:
        for client in list(self.clients.values()):
            self.bridge.spawn(client.disconnect())
        self.clients.clear()


async def _exited(pid: int, still_ours: Callable[[], bool]) -> None:
    """Until process `pid` exits (a pidfd turns readable), if it is still the guest's once the pidfd is open (a
    number reused meanwhile is someone else's). Returns at once without pidfd support (Linux < 5.3)."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return
    try:
        if still_ours():
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
