"""The `dir` storage backend: qcow2/raw volumes made with qemu-img, plus ISO, templates, snippets, backups.

Volume ids follow Proxmox: `local:100/vm-100-disk-0.qcow2` is `<path>/images/100/vm-100-disk-0.qcow2`,
`local:iso/x.iso` is `<path>/template/iso/x.iso`. They are parsed by engine/volumes.py only, and a
volume never resolves to a path outside the storage's directory (symbolic links included).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from engine.volumes import CONTENT_DIRS, IMAGE_FILE, VolumeError, parse_import_source, parse_volume


class StorageError(Exception):
    pass


async def run(*argv: str) -> str:
    result = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise StorageError(f"{argv[0]} failed: {message[-1] if message else result.returncode}")
    return result.stdout.decode()


async def qemu_img(*args: str) -> str:
    """The `qemu-img` binary: answers its output, StorageError on failure."""
    return await run("qemu-img", *args)


QemuImg = Callable[..., Awaitable[str]]  # (*args) -> output: how a storage runs qemu-img


def _virtual_size(path: str, fmt: str) -> int:
    """A qcow2's virtual size is in its header (bytes 24-31, big endian); a raw file is its size."""
    if fmt == "qcow2":
        with open(path, "rb") as f:
            header = f.read(32)
        if header[:4] == b"QFI\xfb":
            return int.from_bytes(header[24:32], "big")
    return os.path.getsize(path)


@dataclass
class DirStorage:
    storage_id: str
    path: str
    content: tuple[str, ...] = ("images", "iso", "vztmpl", "snippets", "backup", "import")
    default_format: str = "qcow2"
    qemu_img: QemuImg = field(default=qemu_img, repr=False, compare=False)  # the simulator gives its own

    def ensure_dirs(self) -> None:
        for sub in CONTENT_DIRS.values():
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)

    # ---- names -----------------------------------------------------------------------
    def volume_path(self, volid: str) -> str:
        """`local:iso/x.iso` -> `<path>/template/iso/x.iso`; StorageError for a volume id that does not
        parse, belongs to another storage, or would lead outside this storage's directory."""
        try:
            volume = parse_volume(volid)
        except VolumeError as exc:
            raise StorageError(str(exc)) from None
        if volume.storage != self.storage_id:
            raise StorageError(f"unable to parse volume ID '{volid}'")
        path = os.path.join(self.path, volume.relpath)
        root = os.path.realpath(self.path)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise StorageError(f"volume '{volid}' is outside storage '{self.storage_id}'")
        return path

    @staticmethod
    def volume_format(volid: str) -> str:
        try:
            return parse_volume(volid).format
        except VolumeError:
            return "raw"

    def volume_vmid(self, volid: str) -> int | None:
        """The guest an image belongs to (None for other content or a volume id that does not parse)."""
        try:
            volume = parse_volume(volid)
        except VolumeError:
            return None
        return volume.owner if volume.vtype == "images" else None

    def next_disk_name(self, vmid: int, fmt: str, prefix: str = "vm") -> str:
        taken = set()
        directory = os.path.join(self.path, "images", str(vmid))
        if os.path.isdir(directory):
            for f in os.listdir(directory):
                m = IMAGE_FILE.fullmatch(f)
                if m and m.group(3) is not None:  # (a cloud-init volume has no number)
                    taken.add(int(m.group(3)))
        n = next(i for i in range(10_000) if i not in taken)
        return f"{prefix}-{vmid}-disk-{n}.{fmt}"

    # ---- operations -------------------------------------------------------------------
    async def alloc(self, vmid: int, size: int, fmt: str | None = None, name: str | None = None) -> str:
        """A new volume of `size` bytes: the guest's next `vm-VMID-disk-N`, or `name` (`vm-VMID-cloudinit`, its
        format appended); StorageError if that one exists already (pve-storage's `alloc_image`)."""
        fmt = fmt or self.default_format
        if fmt not in ("qcow2", "raw"):
            raise StorageError(f"unsupported format '{fmt}'")
        name = f"{name}.{fmt}" if name else self.next_disk_name(vmid, fmt)
        directory = os.path.join(self.path, "images", str(vmid))
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(os.path.join(directory, name)):
            raise StorageError(f"disk image '{self.storage_id}:{vmid}/{name}' already exists")
        await self.qemu_img("create", "-q", "-f", fmt, *(["-o", "preallocation=off"] if fmt == "qcow2" else []),
                            os.path.join(directory, name), str(size))
        return f"{self.storage_id}:{vmid}/{name}"

    async def clone_full(self, source_path: str, source_fmt: str, vmid: int, fmt: str | None = None) -> str:
        fmt = fmt or source_fmt
        name = self.next_disk_name(vmid, fmt)
        directory = os.path.join(self.path, "images", str(vmid))
        os.makedirs(directory, exist_ok=True)
        await self.qemu_img("convert", "-U", "-f", source_fmt, "-O", fmt, source_path, os.path.join(directory, name))
        return f"{self.storage_id}:{vmid}/{name}"

    async def fill(self, volid: str, source_path: str, source_fmt: str) -> None:
        """Copy an image into an existing volume of at least its size (`qemu-img convert -n`; the EFI vars
        template into a new efidisk, as qemu-server's `create_efidisk`)."""
        await self.qemu_img("convert", "-n", "-f", source_fmt, "-O", self.volume_format(volid), source_path,
                            self.volume_path(volid))

    async def clone_linked(self, base_volid: str, vmid: int) -> str:
        """A qcow2 overlay on a template's base volume: `local:100/base-100-disk-0.qcow2/101/vm-101-disk-0.qcow2`."""
        base_path = self.volume_path(base_volid)
        name = self.next_disk_name(vmid, "qcow2")
        directory = os.path.join(self.path, "images", str(vmid))
        os.makedirs(directory, exist_ok=True)
        await self.qemu_img("create", "-q", "-f", "qcow2", "-F", self.volume_format(base_volid), "-b", base_path,
                            os.path.join(directory, name))
        base_name = base_volid.partition(":")[2]
        return f"{self.storage_id}:{base_name}/{vmid}/{name}"

    async def rename_to_base(self, volid: str) -> str:
        """`vm-N-disk-K` becomes `base-N-disk-K`; done already (a conversion interrupted after it), nothing to do."""
        path = self.volume_path(volid)
        base_name = os.path.basename(path).replace("vm-", "base-", 1)
        base_path = os.path.join(os.path.dirname(path), base_name)
        if os.path.exists(path) or not os.path.exists(base_path):
            os.rename(path, base_path)
        vmid = self.volume_vmid(volid)
        return f"{self.storage_id}:{vmid}/{base_name}"

    async def alloc_as(self, volid: str, size: int) -> None:
        """An empty volume named `volid` (a migration target receiving a disk under its source's name)."""
        path = self.volume_path(volid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        await self.qemu_img("create", "-q", "-f", self.volume_format(volid), path, str(size))

    async def replace_from_raw(self, volid: str, source: str) -> None:
        """The volume's content becomes the raw image `source` (a cloud-init ISO), converted to the volume's
        format; a running guest keeps the old file open until its medium is changed."""
        path = self.volume_path(volid)
        made = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.new")
        try:
            await self.qemu_img("convert", "-q", "-f", "raw", "-O", self.volume_format(volid), source, made)
            os.replace(made, path)
        finally:
            if os.path.exists(made):
                os.unlink(made)

    async def free(self, volid: str) -> None:
        path = self.volume_path(volid)
        if os.path.exists(path):
            os.unlink(path)

    async def resize(self, volid: str, size: int) -> None:
        await self.qemu_img("resize", "-q", "-f", self.volume_format(volid), self.volume_path(volid), str(size))

    async def info(self, volid: str) -> dict:
        return json.loads(await self.qemu_img("info", "-U", "--output=json", self.volume_path(volid)))

    async def size(self, volid: str) -> int:
        return int((await self.info(volid))["virtual-size"])

    # ---- internal snapshots of a stopped guest's qcow2 volumes (Proxmox: PVE::Storage::volume_snapshot*) ----
    async def volume_snapshot(self, volid: str, name: str) -> None:
        await self.qemu_img("snapshot", "-c", name, self.volume_path(volid))

    async def volume_snapshot_rollback(self, volid: str, name: str) -> None:
        await self.qemu_img("snapshot", "-a", name, self.volume_path(volid))

    async def volume_snapshot_delete(self, volid: str, name: str) -> None:
        """A volume that is gone, or no longer holds the snapshot (a deletion interrupted after it), is done."""
        path = self.volume_path(volid)
        if os.path.exists(path) and any(s.get("name") == name for s in (await self.info(volid)).get("snapshots", [])):
            await self.qemu_img("snapshot", "-d", name, path)

    def list_volumes(self, content: str | None = None, vmid: int | None = None) -> list[dict]:
        rows = []
        for kind, sub in CONTENT_DIRS.items():
            if content and kind != content:
                continue
            base = os.path.join(self.path, sub)
            if not os.path.isdir(base):
                continue
            if kind == "images":
                for owner in sorted(os.listdir(base)):
                    for f in sorted(os.listdir(os.path.join(base, owner))):
                        m = IMAGE_FILE.fullmatch(f)
                        if m and owner == m.group(2) and (vmid is None or int(owner) == vmid):
                            path = os.path.join(base, owner, f)
                            st = os.stat(path)
                            rows.append({"volid": f"{self.storage_id}:{owner}/{f}", "format": m.group(4),
                                         "content": "images", "vmid": int(owner), "ctime": int(st.st_ctime),
                                         "used": st.st_blocks * 512, "size": _virtual_size(path, m.group(4))})
            else:
                for f in sorted(os.listdir(base)):
                    st = os.stat(os.path.join(base, f))
                    rows.append({"volid": f"{self.storage_id}:{kind}/{f}", "format": f.rsplit(".", 1)[-1],
                                 "content": kind, "size": st.st_size, "ctime": int(st.st_ctime)})
        return rows

    def usage(self) -> dict:
        st = os.statvfs(self.path)
        total = st.f_blocks * st.f_frsize
        avail = st.f_bavail * st.f_frsize
        return {"total": total, "avail": avail, "used": total - st.f_bfree * st.f_frsize}


@dataclass(frozen=True)
class ImportSource:
    """What an `import-from` source is: its file, its format and its virtual size in bytes."""

    path: str
    format: str
    size: int


async def import_source(storages: dict[str, DirStorage], source: str, qemu_img: QemuImg) -> ImportSource:
    """Check an `import-from` source and read its format and size (qemu-server's `create_disks` and
    `$import_from_volid`, pve-storage's `abs_filesystem_path` and `file_size_info`). A host path or an `import`
    volume is untrusted: its format is detected (a path's) or checked (an import volume's, named by its extension)
    and it may not name other files (backing file, qcow2 data file). Raises StorageError with Proxmox's wording."""
    try:
        volume = parse_import_source(source)
    except VolumeError as exc:
        raise StorageError(str(exc)) from None
    if volume is None:
        if not (os.path.isfile(source) or _is_block_device(source)):
            raise StorageError(f"can't find file '{source}'")
        path, fmt, untrusted = os.path.realpath(source), None, True
    else:
        storage = storages.get(volume.storage)
        if storage is None:
            raise StorageError(f"storage '{volume.storage}' does not exist")
        path, fmt, untrusted = storage.volume_path(source), volume.format, volume.vtype == "import"
        if not os.path.isfile(path):
            raise StorageError(f"cannot import from '{source}' - could not get size of {source}")
    try:
        info = json.loads(await qemu_img("info", "-U", "--output=json", *(["-f", fmt] if fmt else []), path))
    except (StorageError, ValueError):
        raise StorageError(f"cannot import from '{source}' - failed to query file information with qemu-img") \
            from None
    if untrusted:
        if info.get("format-specific", {}).get("data", {}).get("data-file"):
            raise StorageError(f"{path}: 'data-file' references are not allowed!")
        if info.get("backing-filename"):
            raise StorageError(f"backing file not allowed for untrusted image '{path}'!")
    return ImportSource(path, fmt or str(info.get("format", "raw")), int(info["virtual-size"]))


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
