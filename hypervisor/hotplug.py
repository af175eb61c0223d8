"""Changing what a running guest's QEMU holds, through QMP: NICs and disks plugged and unplugged, a CD-ROM's
medium changed (qemu-server's vm_deviceplug, vm_deviceunplug and Blockdev::change_medium).

The devices are the ones a cold start of the new config makes (hypervisor/qemu_argv.py builds both, at the same
PCI slots), so a migration target started from the config matches its source; only the boot order is left out, as
Proxmox leaves it out (it would clash with the running devices' and matters only at the next start). Each step is
idempotent: a device already present is not plugged again, one already gone not unplugged, so a change tried again
ends the same. Errors are GuestError with qemu-server's wording; the caller keeps the change pending and reports
`hotplug problem - <message>`.
"""

from __future__ import annotations

import re

import trio

from engine.volumes import is_cdrom, volume_of
from hypervisor.qemu import GuestError, QemuDriver
from hypervisor.qemu_argv import (
    StartError,
    boot_order,
    disk_keys,
    drive_device,
    drive_option,
    net_options,
    scsi_controller,
)
from hypervisor.storage import StorageError

UNPLUG_SECONDS = 5.0  # qemu-server's qemu_devicedelverify: the guest acknowledges a PCI unplug (ACPI) meanwhile


def _qmp_args(option: str, first: str) -> dict:
    """`virtio-net-pci,netdev=net1,id=net1` -> {first: `virtio-net-pci`, `netdev`: `net1`, `id`: `net1`}."""
    head, *rest = option.split(",")
    args = {first: head}
    for part in rest:
        key, _, value = part.partition("=")
        args[key] = value
    return args


async def devices(driver: QemuDriver, vmid: int) -> set[str]:
    """The ids of the devices the guest's QEMU holds (`qom-list /machine/peripheral`)."""
    return {d["name"] for d in await driver.qmp(vmid, "qom-list", {"path": "/machine/peripheral"})}


def bootdisks(conf: dict) -> list[str]:
    """The disks a guest boots from, which Proxmox will not unplug (Drive.pm get_bootdisks): those in `boot`'s
    order, or `bootdisk`."""
    if "order=" in str(conf.get("boot", "")):
        return [d for d in boot_order(conf) if re.fullmatch(r"(ide|sata|scsi|virtio)\d+", d)]
    return [str(conf["bootdisk"])] if conf.get("bootdisk") else []


async def apply(driver: QemuDriver, vmid: int, conf: dict, key: str, new: str | None) -> list[str]:
    """Make the running QEMU hold `key` as `new` (None: not at all); `conf` is the config it runs now. Returns
    warnings (a SCSI controller left in place)."""
    old = conf.get(key)
    after = {k: v for k, v in conf.items() if k != key}
    if new is not None:
        after[key] = new
    try:
        if key.startswith("net"):
            if old is not None:
                await _unplug(driver, vmid, key)
                await _quietly(driver.qmp(vmid, "netdev_del", {"id": key}))
            if new is not None:
                await _plug_net(driver, vmid, after, key, str(new))
            return []
        if new is not None and old is not None and (is_cdrom(str(old)) or is_cdrom(str(new))):
            if is_cdrom(str(old)) != is_cdrom(str(new)):
                raise GuestError("unable to change media type")
            await _change_medium(driver, vmid, key, str(new))
            return []
        if old is not None:
            if key in bootdisks(conf):
                raise GuestError(f"can't unplug bootdisk '{key}'")
            await _unplug(driver, vmid, key)
            await _quietly(driver.hmp(vmid, f"drive_del drive-{key}"))  # gone with its device, as a rule
        if new is not None:
            await _plug_drive(driver, vmid, after, key, str(new))
        elif key.startswith("scsi") and not any(k.startswith("scsi") for k in disk_keys(after)):
            try:
                await _unplug(driver, vmid, "scsihw0")
            except GuestError as exc:
                return [f"SCSI controller left in place: {exc}"]
        return []
    except (StartError, StorageError) as exc:
        raise GuestError(str(exc)) from None


async def _quietly(call) -> None:
    try:
        await call
    except GuestError:
        pass


async def _unplug(driver: QemuDriver, vmid: int, device_id: str) -> None:
    if device_id not in await devices(driver, vmid):
        return
    await driver.qmp(vmid, "device_del", {"id": device_id})
    with trio.move_on_after(UNPLUG_SECONDS):
        while device_id in await devices(driver, vmid):
            await trio.sleep(0.1)
        return
    raise GuestError(f"error on hot-unplugging device '{device_id}' - still busy in guest?")


async def _device_add(driver: QemuDriver, vmid: int, option: str, device_id: str) -> None:
    await driver.qmp(vmid, "device_add", _qmp_args(option, "driver"))
    if device_id not in await devices(driver, vmid):
        raise GuestError(f"error on hotplug device '{device_id}'")


async def _plug_net(driver: QemuDriver, vmid: int, conf: dict, key: str, value: str) -> None:
    if key in await devices(driver, vmid):
        return
    netdev, device = net_options(key, value, driver.facts(), vmid, {}, driver.run_dir)
    driver.write_tap_script(vmid, key, value)
    await _quietly(driver.qmp(vmid, "netdev_del", {"id": key}))  # left by an attempt that failed half-way
    await driver.qmp(vmid, "netdev_add", _qmp_args(netdev, "type"))
    try:
        await _device_add(driver, vmid, device, key)
    except GuestError:
        await _quietly(driver.qmp(vmid, "netdev_del", {"id": key}))
        raise


async def _plug_drive(driver: QemuDriver, vmid: int, conf: dict, key: str, value: str) -> None:
    present = await devices(driver, vmid)
    option = drive_option(key, value, driver.resolve)
    if key in present:
        if await _drive_file(driver, vmid, key) == _file_of(option):
            return
        # plugged by an earlier attempt with another volume: a config change run again after its daemon died
        # allocates anew (5-node simulator seed 9: QEMU kept the first volume, the config named the second)
        await _unplug(driver, vmid, key)
        await _quietly(driver.hmp(vmid, f"drive_del drive-{key}"))
        present = await devices(driver, vmid)
    if key.startswith("scsi") and "scsihw0" not in present:
        await _device_add(driver, vmid, scsi_controller(conf), "scsihw0")
    option = option.replace("\\", "\\\\").replace('"', '\\"')
    out = await driver.hmp(vmid, f'drive_add auto "{option}"')
    if "OK" not in out:
        raise GuestError(f"adding drive failed: {out.strip()}")
    try:
        await _device_add(driver, vmid, drive_device(key, value, {}, conf.get("scsihw")), key)
    except GuestError:
        await _quietly(driver.hmp(vmid, f"drive_del drive-{key}"))
        raise


def _file_of(option: str) -> str | None:
    """The `file=` of a `-drive` value (None for an empty CD-ROM drive)."""
    return next((part[5:] for part in option.split(",") if part.startswith("file=")), None)


async def _drive_file(driver: QemuDriver, vmid: int, key: str) -> str | None:
    """The file QEMU's drive of disk `key` has open (`query-block`), None if it has none."""
    for block in await driver.qmp(vmid, "query-block"):
        if block.get("device") == f"drive-{key}":
            return (block.get("inserted") or {}).get("file")
    return None


async def _change_medium(driver: QemuDriver, vmid: int, key: str, value: str) -> None:
    volume = volume_of(value)
    await driver.qmp(vmid, "eject", {"id": key, "force": True})
    if volume in ("none", "cdrom", ""):
        return
    path, fmt = (volume, "raw") if volume.startswith("/") else driver.resolve(volume)
    await driver.qmp(vmid, "blockdev-change-medium", {"id": key, "filename": path, "format": fmt})
