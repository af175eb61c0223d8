"""Disk images on the simulated host: real files on tmpfs, made and changed by a simulated `qemu-img`.

The production `hypervisor.storage.DirStorage` runs here unchanged (names, directories, volume ids, listing,
renames, deletes); only the `qemu-img` it calls is this module's (`SimQemuImg`, its `qemu_img` seam). A qcow2
file is a 32-byte header with the virtual size where qcow2 keeps it (so `DirStorage` reads sizes as it does of
real images) followed by JSON: the internal snapshots (name, size, whether it holds the VM state) and the
backing file. A raw file is a sparse file of its size. The simulated QEMU (sim/qemu.py) changes the same files
(live snapshots, `savevm`, `block_resize`) and holds them open: `qemu-img` refuses to write an image a
running guest has open, as the real one does (it cannot take the write lock).
"""

from __future__ import annotations

import json
import os
import random

import trio

from hypervisor.storage import StorageError

MAGIC = b"QFI\xfb"
HEADER = 32
# how long each qemu-img command takes (simulated seconds)
SECONDS = {"create": (0.02, 0.3), "convert": (0.2, 3.0), "resize": (0.02, 0.2), "info": (0.002, 0.01),
           "snapshot": (0.1, 2.0)}


def read(path: str) -> dict:
    """{format, size, snapshots: [{name, size, vmstate}], backing}; StorageError if there is no image."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER)
            if head[:4] != MAGIC:
                return {"format": "raw", "size": os.path.getsize(path), "snapshots": [], "backing": None}
            meta = json.loads(f.read() or b"{}")
    except OSError:
        raise StorageError(f"qemu-img failed: Could not open '{os.path.basename(path)}': No such file or "
                           "directory") from None
    return {"format": "qcow2", "size": int.from_bytes(head[24:32], "big"), "snapshots": meta.get("snapshots", []),
            "backing": meta.get("backing")}


def write(path: str, image: dict) -> None:
    if image["format"] != "qcow2":
        with open(path, "ab") as f:
            f.truncate(image["size"])
        return
    head = MAGIC + (3).to_bytes(4, "big") + bytes(16) + int(image["size"]).to_bytes(8, "big")
    meta = {"snapshots": image["snapshots"], "backing": image["backing"]}
    with open(path, "wb") as f:
        f.write(head + json.dumps(meta, sort_keys=True).encode())


def snapshot(image: dict, op: str, name: str, vmstate: bool = False) -> str | None:
    """qcow2 internal snapshots: `create`, `apply` (the size goes back to the snapshot's), `delete`; answers an
    error text or None."""
    names = [s["name"] for s in image["snapshots"]]
    if op == "create":
        image["snapshots"].append({"name": name, "size": image["size"], "vmstate": vmstate})
        return None
    if name not in names:
        return f"Can't find snapshot '{name}'"
    snap = image["snapshots"][names.index(name)]
    if op == "apply":
        image["size"] = snap["size"]
    else:
        image["snapshots"].remove(snap)
    return None


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def _parse(args: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """qemu-img's options (`-f raw`, `-U`, `--output=json`) and positional arguments."""
    opts, rest, i = {}, [], 0
    takes_value = {"-f", "-O", "-o", "-F", "-b", "-c", "-a", "-d"}
    while i < len(args):
        arg = args[i]
        if arg in takes_value:
            opts[arg] = args[i + 1]
            i += 2
        elif arg.startswith("-"):
            opts[arg.split("=")[0]] = arg.partition("=")[2]
            i += 1
        else:
            rest.append(arg)
            i += 1
    return opts, rest


class SimQemuImg:
    """`qemu-img` on one simulated host: `create`, `convert` (`-n`: into an existing image), `resize`, `info`,
    `snapshot -c/-a/-d`."""

    def __init__(self, host, rng: random.Random) -> None:
        self.host, self.rng = host, rng

    def _unlocked(self, path: str) -> None:
        if self.host.qemu.has_open(path):
            raise StorageError(f"qemu-img failed: Is another process using the image [{os.path.basename(path)}]?")

    async def __call__(self, command: str, *args: str) -> str:
        await trio.sleep(self.rng.uniform(*SECONDS[command]))
        opts, rest = _parse(args)
        if command == "create":
            path = rest[0]
            fmt = opts.get("-f", "raw")
            size = _size(rest[1]) if len(rest) > 1 else read(opts["-b"])["size"]
            write(path, {"format": fmt, "size": size, "snapshots": [], "backing": opts.get("-b")})
            return ""
        if command == "convert":
            source = read(rest[0])
            if "-n" in opts:  # into an existing image, which keeps its size (the data is not simulated)
                target = read(rest[1])
                self._unlocked(rest[1])
                if target["size"] < source["size"]:
                    raise StorageError("qemu-img failed: error while writing: Input/output error")
                return ""
            write(rest[1], {"format": opts.get("-O", "raw"), "size": source["size"], "snapshots": [], "backing": None})
            return ""
        if command == "info":
            image = read(rest[0])
            return json.dumps({"virtual-size": image["size"], "format": image["format"],
                               "snapshots": [{"name": s["name"]} for s in image["snapshots"]],
                               **({"backing-filename": image["backing"]} if image["backing"] else {})})
        path = rest[0]
        image = read(path)
        self._unlocked(path)
        if command == "resize":
            size = _size(rest[1])
            if size < image["size"]:
                raise StorageError("qemu-img failed: Use the --shrink option to perform a shrink operation.")
            image["size"] = size
        else:
            if image["format"] != "qcow2":
                raise StorageError("qemu-img failed: This operation is not supported by the image format")
            op, name = next((op, opts[flag]) for flag, op in (("-c", "create"), ("-a", "apply"), ("-d", "delete"))
                            if flag in opts)
            error = snapshot(image, op, name)
            if error:
                raise StorageError(f"qemu-img failed: Could not {op} snapshot '{name}': {error}")
        write(path, image)
        return ""
