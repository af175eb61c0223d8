"""The `dir` storage backend: qcow2/raw volumes made with qemu-img, plus ISO, templates, snippets, backups.

Volume ids follow Proxmox: `local:100/vm-100-disk-0.qcow2` is `<path>/images/100/vm-100-disk-0.qcow2`,
`local:iso/x.iso` is `<path>/template/iso/x.iso`. They are parsed by engine/volumes.py only, and a
volume never resolves to a path outside the storage's directory (symbolic links included).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from engine.volumes import CONTENT_DIRS, FILES, IMAGE_FILE, VolumeError, parse_import_source, parse_volume

NOTES_EXT, PROTECTED_EXT = ".notes", ".protected"  # a backup's attributes (pve-storage Plugin.pm, Storage.pm)
TMP_PREFIX = ".gpve-tmp-"  # a file being uploaded or downloaded: `<path>/.gpve-tmp-<node>-<hex>`, never listed
TMP_NAME = re.compile(re.escape(TMP_PREFIX) + r"[a-zA-Z0-9\-]+-[0-9a-f]{16,64}")


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


def _backing_file(path: str) -> str | None:
    """A qcow2's backing file name, from its header (offset at bytes 8-15, length at 16-19, big endian)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != b"QFI\xfb":
                return None
            offset, size = int.from_bytes(header[8:16], "big"), int.from_bytes(header[16:20], "big")
            if not offset or not 0 < size < 1024:
                return None
            f.seek(offset)
            return f.read(size).decode(errors="replace")
    except OSError:
        return None


def _listed_format(kind: str, name: str) -> str:
    """The `format` of a listed file as pve-storage's `get_subdir_files` names it."""
    if kind == "iso":
        return "iso"
    if kind == "snippets":
        return "snippet"
    m = re.search(r"\.(tar|tgz|vma|ova|ovf|qcow2|raw|vmdk)(?:\.(\w+))?$", name)
    if kind == "vztmpl":
        return "tar" if not (m and m.group(2)) else f"t{m.group(2)}"
    if kind == "backup" and m:
        return m.group(1) if not m.group(2) else f"{m.group(1)}.{m.group(2)}"
    return m.group(1) if m else "raw"


def _first_line(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n")
    except OSError:
        return None


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

    def activate(self, create_base: bool = True, create_subdirs: bool = True) -> None:
        """Make the storage usable as pve-storage's `activate_storage` does: its directory (made first unless
        `create-base-path` is off, else it must exist) and the directories of its content types. StorageError with
        Proxmox's wording otherwise."""
        if create_base:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"unable to activate storage '{self.storage_id}' - {exc.strerror}") from None
        if not os.path.isdir(self.path):
            raise StorageError(f"unable to activate storage '{self.storage_id}' - directory '{self.path}' does not "
                               "exist or is unreachable")
        if create_subdirs:
            for kind in self.content:
                sub = os.path.join(self.path, CONTENT_DIRS.get(kind, ""))
                try:
                    os.makedirs(sub, exist_ok=True)
                except OSError as exc:
                    raise StorageError(f"failed to create content directory '{sub}' for content '{kind}' - "
                                       f"{exc.strerror}") from None

    def temp_path(self, node: str, token: str) -> str:
        """A temporary file in the storage's directory (so that a finished file is renamed into place, never
        copied), named for its node; StorageError for a name that is not one."""
        name = f"{TMP_PREFIX}{node}-{token}"
        if not TMP_NAME.fullmatch(name):
            raise StorageError(f"invalid temporary file name '{name}'")
        return os.path.join(self.path, name)

    def remove_temps(self, node: str) -> None:
        """Drop what an earlier run of `node` left half-written (an upload cut off by a restart)."""
        for name in os.listdir(self.path):
            if TMP_NAME.fullmatch(name) and name[len(TMP_PREFIX):].rpartition("-")[0] == node:
                os.unlink(os.path.join(self.path, name))

    def content_dir(self, kind: str) -> str:
        """Where files of content type `kind` live (`iso` -> `<path>/template/iso`)."""
        return os.path.join(self.path, CONTENT_DIRS[kind])

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
    def _check_images(self) -> None:
        if "images" not in self.content:  # qemu-server's wording (PVE/API2/Qemu.pm)
            raise StorageError(f"storage '{self.storage_id}' does not support vm images")

    async def alloc(self, vmid: int, size: int, fmt: str | None = None, name: str | None = None) -> str:
        """A new volume of `size` bytes: the guest's next `vm-VMID-disk-N`, or `name` (`vm-VMID-cloudinit`, its
        format appended); StorageError if that one exists already (pve-storage's `alloc_image`) or the storage holds
        no `images`."""
        self._check_images()
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
        self._check_images()
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

    def list_volumes(self, content: str | Iterable[str] | None = None, vmid: int | None = None) -> list[dict]:
        """The volumes of content type(s) `content` (all when None) as pve-storage's `volume_list` rows: `volid`,
        `content`, `format`, `size`, `ctime`; images with `vmid`, `used` and a linked clone's `parent` (its
        backing file, as Proxmox's `../100/base-100-disk-0.qcow2`); backups with `vmid`, `notes`, `protected`.
        With `vmid`, only that guest's images and backups (and every snippet and import, as Proxmox)."""
        kinds = [content] if isinstance(content, str) else list(content) if content is not None else None
        rows = []
        for kind, sub in CONTENT_DIRS.items():
            if kinds is not None and kind not in kinds:
                continue
            base = os.path.join(self.path, sub)
            if not os.path.isdir(base) or (vmid is not None and kind in ("iso", "vztmpl")):
                continue
            if kind == "images":
                rows += self._image_rows(base, vmid)
                continue
            for f in sorted(os.listdir(base)):
                path = os.path.join(base, f)
                m = FILES[kind].fullmatch(f)
                if m is None or not os.path.isfile(path):
                    continue
                st = os.stat(path)
                row = {"volid": f"{self.storage_id}:{kind}/{f}", "content": kind, "format": _listed_format(kind, f),
                       "size": st.st_size, "ctime": int(st.st_ctime)}
                if kind == "backup":
                    owner = parse_volume(row["volid"]).owner
                    if vmid is not None and owner != vmid:
                        continue
                    if owner is not None:
                        row["vmid"] = owner
                    notes = _first_line(path + NOTES_EXT)
                    if notes:
                        row["notes"] = notes
                    if os.path.exists(path + PROTECTED_EXT):
                        row["protected"] = 1
                rows.append(row)
        return sorted(rows, key=lambda r: r["volid"].lower())

    def _image_rows(self, base: str, vmid: int | None) -> list[dict]:
        rows = []
        for owner in sorted(os.listdir(base)):
            if not owner.isdigit() or (vmid is not None and int(owner) != vmid):
                continue
            for f in sorted(os.listdir(os.path.join(base, owner))):
                m = IMAGE_FILE.fullmatch(f)
                if not m or owner != m.group(2):
                    continue
                path = os.path.join(base, owner, f)
                st = os.stat(path)
                row = {"volid": f"{self.storage_id}:{owner}/{f}", "format": m.group(4), "content": "images",
                       "vmid": int(owner), "ctime": int(st.st_ctime), "used": st.st_blocks * 512,
                       "size": _virtual_size(path, m.group(4))}
                parent = _backing_file(path) if m.group(4) == "qcow2" else None
                base_m = re.fullmatch(r"(?:.*/)?(\d+)/(base-\d+-disk-\d+\.(?:qcow2|raw|vmdk))", parent or "")
                if base_m:
                    row["volid"] = f"{self.storage_id}:{base_m.group(1)}/{base_m.group(2)}/{owner}/{f}"
                    row["parent"] = f"../{base_m.group(1)}/{base_m.group(2)}"
                rows.append(row)
        return rows

    def volume_attributes(self, volid: str) -> dict:
        """`GET .../content/{volume}` (pve-storage `Content.pm` info): `path`, `size` (an image's virtual size),
        `used`, `format`, and a backup's `notes` and `protected`. StorageError if it is not there."""
        path = self.volume_path(volid)
        try:
            st = os.stat(path)
        except OSError:
            raise StorageError(f"volume '{volid}' does not exist") from None
        fmt = self.volume_format(volid)
        out = {"path": path, "size": _virtual_size(path, fmt), "used": st.st_blocks * 512, "format": fmt}
        if parse_volume(volid).vtype == "backup":
            out["notes"] = _first_line(path + NOTES_EXT) or ""
            out["protected"] = int(os.path.exists(path + PROTECTED_EXT))
        return out

    def set_attribute(self, volid: str, attribute: str, value) -> None:
        """A backup's `notes` (a file beside it) or `protected` flag (DirPlugin `update_volume_attribute`); other
        volumes have neither (StorageError, in Proxmox's words)."""
        path = self.volume_path(volid)
        if parse_volume(volid).vtype != "backup":
            raise StorageError("only backups can have notes" if attribute == "notes"
                               else f"only backups support attribute '{attribute}'")
        target = path + (NOTES_EXT if attribute == "notes" else PROTECTED_EXT)
        if attribute == "notes" and value:
            with open(target, "w", encoding="utf-8") as f:
                f.write(str(value))
        elif attribute == "protected" and value:
            open(target, "a").close()
        elif os.path.exists(target):
            os.unlink(target)

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
