"""Files that come into a storage from outside (uploads, downloads) and volumes deleted from it: the checks
Proxmox makes (pve-storage `PVE/API2/Storage/Status.pm` `upload` and `download_url`, `PVE/Storage.pm`
`normalize_content_filename` and `assert_iso_content`, `Plugin.pm` `file_size_info` of untrusted images; pve-common
`PVE::Tools::download_file_from_url`) and the node tasks that run them: `imgcopy`, `download`, `imgdel`.

A file arrives in a temporary file inside the storage's directory (`DirStorage.temp_path`), is checked there (the
checksum first, then what it claims to be) and renamed into its content directory only once it passed: a failed or
interrupted task leaves no file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tarfile
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

import httpx
import trio

from engine.reconciler import Handler, Outcome, TaskFailed, TaskRun
from engine.volumes import FILES, parse_volume
from hypervisor.storage import NOTES_EXT, PROTECTED_EXT, DirStorage, StorageError

CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
UPLOAD_CONTENT = ("iso", "vztmpl", "import", "snippets")  # Proxmox 9.1: iso, vztmpl, import; snippets is gpve's
DOWNLOAD_CONTENT = ("iso", "vztmpl", "import")
DECOMPRESSORS = {"gz": ["gzip", "-d", "-c"], "lzo": ["lzop", "-d", "-c"], "zst": ["zstd", "-q", "-d", "-c"],
                 "bz2": ["bzip2", "-d", "-c", "-q"]}  # pve-storage `decompressor_info` for iso
UPLOAD_LIMIT = 64 << 30  # bytes one upload may hold
SAFE_NAME = re.compile(r"[a-zA-Z0-9\-.+=_]+")  # pve-storage SAFE_CHAR_CLASS_RE
UPLOAD_IMPORT = re.compile(r"[a-zA-Z0-9\-.+=_]+\.(ova|qcow2|raw|vmdk)")  # UPLOAD_IMPORT_EXT_RE_1
SECTOR = 2048
PROGRESS_EVERY = 1.0  # s between progress lines of a download of unknown size (else one every tenth)
CHUNK = 1 << 20


class FileRefused(ValueError):
    """A file name or type that may not be stored: `field` names the parameter at fault (Proxmox's
    `raise_param_exc`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def target_name(content: str, filename: str) -> str:
    """The name a file of `content` is stored under: Proxmox's `normalize_content_filename` (characters outside
    `[a-zA-Z0-9_.-]` become `_`) and its extension rule per content type. Stricter than Proxmox, which keeps the
    last component of a path: a name holding a path (`/`, `\\`) or that is `.`/`..` is refused."""
    name = filename.removesuffix("\n")
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise FileRefused("filename", f"invalid file name '{filename}' - a path is not allowed")
    name = re.sub(r"[^a-zA-Z0-9_.\-]", "_", name)
    if content in ("iso", "vztmpl") and not FILES[content].fullmatch(name):
        raise FileRefused("filename", "wrong file extension")
    if content == "import" and not UPLOAD_IMPORT.fullmatch(name):
        raise FileRefused("filename", "invalid filename or wrong extension")
    if content == "snippets" and not SAFE_NAME.fullmatch(name):
        raise FileRefused("filename", "invalid filename")
    return name


def hash_file(path: str, algorithm: str) -> str:
    """The file's hex digest (pve-common `get_file_hash`); read in chunks, never whole."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def disc_format(path: str) -> str | None:
    """`iso9660` or `udf` when the file holds such a file system (an ISO 9660 volume descriptor `CD001`, or a UDF
    volume recognition sequence `NSR02`/`NSR03`, from sector 16 on), else None."""
    with open(path, "rb") as f:
        for sector in range(16, 32):
            f.seek(sector * SECTOR)
            ident = f.read(6)[1:6]
            if ident == b"CD001":
                return "iso9660"
            if ident in (b"NSR02", b"NSR03"):
                return "udf"
            if len(ident) < 5:
                break
    return None


async def check_untrusted(storage: DirStorage, path: str, fmt: str | None = None) -> None:
    """What pve-storage's `file_size_info` refuses of an untrusted image: a backing file, a qcow2 data file, a vmdk
    of several extents; with `fmt`, an image that is not of that format."""
    try:
        info = json.loads(await storage.qemu_img("info", "--output=json", *(["-f", fmt] if fmt else []), path))
    except (StorageError, ValueError):
        raise TaskFailed("failed to query file information with qemu-img") from None
    name = os.path.basename(path)
    specific = info.get("format-specific") or {}
    if specific.get("type") == "qcow2" and (specific.get("data") or {}).get("data-file"):
        raise TaskFailed(f"{name}: 'data-file' references are not allowed!")
    if specific.get("type") == "vmdk" and len((specific.get("data") or {}).get("extents", [])) > 1:
        raise TaskFailed(f"{name}: multiple children or extents are not allowed!")
    if info.get("backing-filename"):
        raise TaskFailed(f"backing file not allowed for untrusted image '{name}'!")


async def check_content(storage: DirStorage, path: str, content: str, name: str) -> None:
    """A file is what its content type and name say (`assert_iso_content`, the untrusted image checks): an `.iso`
    must hold an ISO 9660 or UDF file system; disk images to import must be of their extension's format."""
    if content == "iso":
        if name.lower().endswith(".iso") and disc_format(path) is None:
            raise TaskFailed(f"'{name}' is not an ISO 9660 or UDF image")
        await check_untrusted(storage, path)
    elif content == "import":
        ext = name.rsplit(".", 1)[-1]
        if ext == "ova":
            await _check_ova(path)
        else:
            await check_untrusted(storage, path, ext)


async def _check_ova(path: str) -> None:
    def has_ovf() -> bool:
        try:
            with tarfile.open(path) as tar:
                return any(n.endswith(".ovf") for n in tar.getnames())
        except tarfile.TarError:
            return False
    if not await trio.to_thread.run_sync(has_ovf):
        raise TaskFailed("ova archive has no .ovf file inside")


async def verify_checksum(run: TaskRun, path: str, algorithm: str | None, expected: str | None) -> None:
    """Proxmox's lines: `calculating checksum...OK, checksum verified`, or the mismatch as the task's error."""
    if not algorithm:
        return
    got = await trio.to_thread.run_sync(hash_file, path, algorithm)
    if got.lower() != str(expected).lower():
        run.log("calculating checksum...")
        raise TaskFailed(f"checksum mismatch: got '{got}' != expect '{expected}'")
    run.log("calculating checksum...OK, checksum verified")


async def receive_file(chunks: AsyncIterable[bytes], path: str, limit: int = UPLOAD_LIMIT,
                       progress: Callable[[int], None] | None = None) -> int:
    """Write `chunks` to a new file at `path` (never held whole in memory), at most `limit` bytes: over it the file
    is removed and FileRefused raised. Returns the size written; the file is flushed to disk."""
    size = 0
    try:
        with open(path, "xb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise FileRefused("filename", f"file too large - the limit is {limit} bytes")
                f.write(chunk)
                if progress is not None:
                    progress(size)
            f.flush()
            await trio.to_thread.run_sync(os.fsync, f.fileno())
    except BaseException:
        _unlink(path)
        raise
    return size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


@dataclass
class Progress:
    """Progress lines of a download in its task log: one at every tenth of a known size, else one every
    PROGRESS_EVERY seconds; and the last."""

    run: TaskRun
    total: int | None
    started: float = 0.0
    last: float = 0.0
    tenth: int = 0
    shown: int = -1

    def __call__(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if done == self.shown:
            return
        if self.total:
            tenth = min(10, done * 10 // self.total)
            if not final and tenth <= self.tenth:
                return
            self.tenth = tenth
        elif not final and now - self.last < PROGRESS_EVERY:
            return
        self.last, self.shown = now, done
        rate = done / max(now - self.started, 1e-6)
        share = f" ({done * 100 // self.total}%)" if self.total else ""
        of = f" of {human(self.total)}" if self.total else ""
        self.run.log(f"downloaded {human(done)}{of}{share}, {human(rate)}/s")


class StorageTasks:
    """The node tasks on storages. `storages`: the node's live storages (hypervisor/storages.py `NodeStorages`,
    with `activate`); `node`: this node's name (temporary files carry it)."""

    def __init__(self, storages, node: str) -> None:
        self.storages, self.node = storages, node

    def handlers(self) -> dict[str, Handler]:
        return {"imgcopy": self.imgcopy, "download": self.download, "imgdel": self.imgdel}

    def _storage(self, storage_id: str) -> DirStorage:
        try:
            return self.storages.activate(storage_id)
        except StorageError as exc:
            raise TaskFailed(str(exc)) from None

    async def _store(self, run: TaskRun, storage: DirStorage, tmp: str, intent: dict) -> str:
        """Checksum, content checks, then the rename into place; the temporary file is gone either way."""
        content, name = intent["content"], intent["filename"]
        dest = os.path.join(storage.content_dir(content), name)
        try:
            await verify_checksum(run, tmp, intent.get("checksum-algorithm"), intent.get("checksum"))
            await check_content(storage, tmp, content, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            _unlink(tmp)
        return dest

    async def imgcopy(self, run: TaskRun) -> Outcome:
        """An upload's file, received by the API into the storage (`tmpfile`), stored under its name."""
        intent = run.intent
        storage = self._storage(intent["storage"])
        try:
            tmp = storage.temp_path(self.node, intent["tmpfile"])
        except StorageError as exc:
            raise TaskFailed(str(exc)) from None
        if not os.path.exists(tmp):
            raise TaskFailed(f"temporary file '{tmp}' does not exist")
        run.log(f"starting file import from: {tmp}")
        dest = os.path.join(storage.content_dir(intent["content"]), intent["filename"])
        run.log(f"target node: {self.node}")
        run.log(f"target file: {dest}")
        run.log(f"file size is: {intent.get('size', os.path.getsize(tmp))}")
        await self._store(run, storage, tmp, intent)
        run.log("finished file import successfully")
        return Outcome()

    async def download(self, run: TaskRun) -> Outcome:
        """pve-common's `download_file_from_url`: an existing file is kept when its checksum matches (refused
        otherwise), the download goes to a temporary file, then checksum, decompression, checks, rename."""
        intent = run.intent
        storage = self._storage(intent["storage"])
        url, content = intent["url"], intent["content"]
        dest = os.path.join(storage.content_dir(content), intent["filename"])
        algorithm, expected = intent.get("checksum-algorithm"), intent.get("checksum")
        run.log(f"downloading {url} to {dest}")
        if os.path.exists(dest):
            if not algorithm:
                raise TaskFailed(f"refusing to override existing file '{dest}'")
            got = await trio.to_thread.run_sync(hash_file, dest, algorithm)
            if got.lower() != str(expected).lower():
                run.log("calculating checksum of existing file...")
                raise TaskFailed(f"checksum mismatch: got '{got}' != expect '{expected}', aborting")
            run.log("calculating checksum of existing file...OK, got correct file already, no need to download")
            return Outcome()
        compression = intent.get("compression")
        if compression and content != "iso":
            raise TaskFailed(f"decompression not supported for {content}")
        tmp = storage.temp_path(self.node, secrets.token_hex(16))
        try:
            await self._fetch(run, url, tmp, bool(intent.get("verify-certificates", 1)))
            await verify_checksum(run, tmp, algorithm, expected)
            if compression:
                tmp = await self._decompress(run, storage, tmp, compression)
            await self._store(run, storage, tmp, {**intent, "checksum-algorithm": None})
        finally:
            _unlink(tmp)
        run.log(f"download of '{url}' to '{dest}' finished")
        return Outcome()

    async def _fetch(self, run: TaskRun, url: str, tmp: str, verify: bool) -> None:
        try:
            async with httpx.AsyncClient(verify=verify, follow_redirects=True, trust_env=False,
                                         timeout=httpx.Timeout(30.0, connect=10.0)) as client, \
                    client.stream("GET", url, headers={"User-Agent": "Proxmox VE"}) as response:
                if response.status_code != 200:
                    raise TaskFailed(f"download failed - {response.status_code} {response.reason_phrase}")
                total = int(response.headers["content-length"]) if \
                    response.headers.get("content-length", "").isdigit() else None
                progress = Progress(run, total, started=time.monotonic(), last=time.monotonic())
                size = await receive_file(response.aiter_bytes(CHUNK), tmp, progress=progress)
                progress(size, final=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise TaskFailed(f"download failed - {exc or type(exc).__name__}") from None
        except FileRefused as exc:
            raise TaskFailed(str(exc)) from None

    async def _decompress(self, run: TaskRun, storage: DirStorage, tmp: str, compression: str) -> str:
        out = storage.temp_path(self.node, secrets.token_hex(16))
        run.log(f"decompressing {tmp} to {out}")
        try:
            with open(out, "xb") as f:
                result = await trio.run_process([*DECOMPRESSORS[compression], tmp], stdout=f, capture_stderr=True,
                                                check=False)
        except (OSError, KeyError):
            _unlink(out)
            raise TaskFailed("no decompression method found") from None
        _unlink(tmp)
        if result.returncode != 0:
            _unlink(out)
            raise TaskFailed(f"decompression failed: {result.stderr.decode(errors='replace').strip()}")
        return out

    async def imgdel(self, run: TaskRun) -> Outcome:
        """Delete a volume (pve-storage `vdisk_free`); a protected backup stays. Whether a guest uses it was checked
        when the task was accepted (engine/storage.py)."""
        volid = run.intent["volume"]
        storage = self._storage(run.intent["storage"])
        try:
            path = storage.volume_path(volid)
        except StorageError as exc:
            raise TaskFailed(str(exc)) from None
        if not os.path.exists(path):
            raise TaskFailed(f"volume '{volid}' does not exist")
        if parse_volume(volid).vtype == "backup":
            if os.path.exists(path + PROTECTED_EXT):
                raise TaskFailed(f"cannot remove protected archive '{path}'")
            _unlink(path + NOTES_EXT)
        await storage.free(volid)
        run.log(f"Removed volume '{volid}'")
        return Outcome()
