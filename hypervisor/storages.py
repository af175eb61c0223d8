"""The storages a node may use, as the log defines them (engine/storage.py): a live mapping `storage id ->
DirStorage` that the QEMU driver, the task handlers and the API share, so a storage defined (or changed) later is
usable at once, without a restart.

Only storages enabled on this node are in it (not disabled, not restricted to other nodes). A storage is activated
(pve-storage `activate_storage`: its directory made, or required with `create-base-path 0`, and its content
directories made) when first used and again when its definition changes; one that cannot be activated is left out
of iteration, and looking it up raises StorageError with Proxmox's `unable to activate storage` message (or that it
is disabled, or not available on this node), so a guest using it fails to start with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

from engine.storage import LOCAL, contents, definitions, enabled_on
from hypervisor.storage import DirStorage, StorageError

DEFAULT_FORMAT = "qcow2"  # gpve's images default to qcow2 (snapshots), unless a storage's `format` says otherwise


def local_path(data_dir: str) -> str:
    """Where a node keeps its `local` storage."""
    return os.path.join(data_dir, "storage", "local")


def _yes(conf: dict, *keys: str) -> bool:
    """An option that defaults to yes (`create-base-path`, `create-subdirs`, the deprecated `mkdir`)."""
    return all(str(conf.get(k, 1)) not in ("0", "no", "off", "false") for k in keys)


def activation(conf: dict) -> dict[str, bool]:
    """How a definition's directories are made when it is activated (DirStorage.activate's arguments)."""
    return {"create_base": _yes(conf, "create-base-path", "mkdir"),
            "create_subdirs": _yes(conf, "create-subdirs", "mkdir")}


class NodeStorages(Mapping):
    """`node`: reads the state (`node.read()`) and names this node (`node.name`)."""

    def __init__(self, node, data_dir: str) -> None:
        self.node, self.local_path = node, local_path(data_dir)
        self._made: dict[str, tuple[tuple, DirStorage]] = {}

    def _definitions(self) -> dict[str, dict]:
        with self.node.read() as s:
            return definitions(s)

    def path_of(self, storage: str, conf: dict) -> str:
        return self.local_path if storage == LOCAL else str(conf.get("path", ""))

    def _storage(self, storage: str, conf: dict) -> DirStorage:
        flags = activation(conf)
        key = (self.path_of(storage, conf), tuple(contents(conf)), conf.get("format") or DEFAULT_FORMAT,
               flags["create_base"], flags["create_subdirs"])
        made = self._made.get(storage)
        if made is not None and made[0] == key and os.path.isdir(key[0]):
            return made[1]
        dir_storage = DirStorage(storage, key[0], key[1], default_format=key[2])
        dir_storage.activate(create_base=key[3], create_subdirs=key[4])
        if made is None:
            dir_storage.remove_temps(self.node.name)
        self._made[storage] = (key, dir_storage)
        return dir_storage

    def activate(self, storage: str) -> DirStorage:
        """The storage, activated on this node; StorageError (`storage 'x' does not exist`, `unable to activate
        ...`, disabled or not on this node) otherwise."""
        conf = self._definitions().get(storage)
        if conf is None:
            raise StorageError(f"storage '{storage}' does not exist")
        if not enabled_on(conf, self.node.name):
            raise StorageError(f"storage '{storage}' is disabled" if conf.get("disable") else
                               f"storage '{storage}' is not available on node '{self.node.name}'")
        return self._storage(storage, conf)

    def __getitem__(self, storage: str) -> DirStorage:
        """KeyError for a storage that is not defined (`get` answers None); StorageError for one this node may not
        use or cannot activate, so that what fails says why."""
        if storage not in self._definitions():
            raise KeyError(storage)
        return self.activate(storage)

    def __iter__(self) -> Iterator[str]:
        for storage, conf in self._definitions().items():
            if enabled_on(conf, self.node.name):
                try:
                    self._storage(storage, conf)
                except StorageError:
                    continue
                yield storage

    def __len__(self) -> int:
        return sum(1 for _ in self)
