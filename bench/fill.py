"""Give a real node many guests fast (configs only): guest-create commands written straight into its stopped
log, 200 to an entry, then the node started again. A config-only create is one entry's worth of events (task
started, guest created, task finished), so the node holds them exactly as if they had come through its API."""

from __future__ import annotations

import time

from engine import commands as cmd
from engine.codec import encode_record, join_encoded
from tests.harness import NodeProcess
from tests.logfill import append_entries

PER_ENTRY = 200
FIRST_VMID = 1000


def guest_config(i: int) -> dict:
    """A plausible small guest: name, memory, cores, a network card, a boot disk; every tenth tagged."""
    conf = {"name": f"g{i}", "memory": "2048", "cores": "2", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
            "scsi0": f"local:{FIRST_VMID + i}/vm-{FIRST_VMID + i}-disk-0.qcow2,size=8G", "ostype": "l26"}
    if i % 10 == 0:
        conf["tags"] = "web;prod"
    return conf


def fill(node: NodeProcess, count: int, first: int = 0) -> float:
    """Add guests `FIRST_VMID + first` … `+ count - 1` to the (running, single) node; return the seconds taken
    (the node is restarted and ready when this returns)."""
    started = time.monotonic()
    node.stop()
    now = time.time()
    entries = []
    for start in range(first, first + count, PER_ENTRY):
        batch = [cmd.CreateGuest(request_id=f"fill-{i}", ts=now, node=node.name, vmid=FIRST_VMID + i,
                                 config=guest_config(i), upid=f"UPID:{node.name}:fill:{i}", starttime=int(now))
                 for i in range(start, min(start + PER_ENTRY, first + count))]
        entries.append(join_encoded([encode_record(c) for c in batch]))
    append_entries(node.data_dir, f"127.0.0.1:{node.raft_port}", entries)
    node.start()
    node.wait_ready(600)
    return time.monotonic() - started
