"""NIC values (`netN`) and their MAC addresses, as Proxmox assigns them. Pure: the caller gives the entropy.

qemu-server's parse_net assigns a MAC under the datacenter's prefix (`BC:24:11`, Proxmox's OUI) to a NIC given
without one, and print_net writes it as `MODEL=MAC,...`; every path that adds a NIC goes through it (create,
config changes, pending ones included); a clone renews every NIC's MAC.
"""

from __future__ import annotations

import re
from collections.abc import Callable

PROXMOX_OUI = "BC:24:11"
NET_MODELS = ("e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b",
              "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3")
MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
NET_KEY = re.compile(r"net\d+")


def mac_from(entropy: str) -> str:
    """A MAC under Proxmox's OUI from (at least 6) hex digits of entropy."""
    return PROXMOX_OUI + "".join(f":{entropy[i:i + 2].upper()}" for i in (0, 2, 4))


def with_mac(value: str, entropy: Callable[[], str], renew: bool = False) -> str:
    """`virtio,bridge=vmbr0` (or `model=virtio,...`) -> `virtio=BC:24:11:XX:XX:XX,bridge=vmbr0`: the NIC with a
    MAC made from `entropy` if it has none (or, with `renew`, in place of its own), written `MODEL=MAC` first as
    print_net does. `entropy()` is called only when a MAC is made. A value without a known model is returned as it
    is (its check reports it)."""
    parts = [p for p in str(value).split(",") if p != ""]
    props = [(k, v) for k, _, v in (p.partition("=") for p in parts)]
    model, mac, rest = None, None, []
    for key, val in props:
        if key in NET_MODELS and model is None:
            model, mac = key, val if MAC.fullmatch(val) else None
        elif key == "model" and model is None:
            model = val
        elif key == "macaddr":
            mac = val if MAC.fullmatch(val) else None
        else:
            rest.append(f"{key}={val}" if val or "=" in key else key)
    if model not in NET_MODELS:
        return value
    if mac is None or renew:
        mac = mac_from(entropy())
    return ",".join([f"{model}={mac.upper()}", *rest])
