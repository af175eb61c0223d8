"""Proxmox property strings: `virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=5` and friends."""

from __future__ import annotations


def parse(value: str, default_key: str | None = None) -> dict[str, str]:
    """Split a property string; a leading bare value goes to `default_key`."""
    out: dict[str, str] = {}
    for i, part in enumerate(p for p in str(value).split(",") if p != ""):
        key, sep, val = part.partition("=")
        if not sep:
            if i == 0 and default_key is not None:
                out[default_key] = key
                continue
            out[key] = "1"
        else:
            out[key] = val
    return out


def render(props: dict[str, str], default_key: str | None = None) -> str:
    parts = []
    if default_key is not None and default_key in props:
        parts.append(str(props[default_key]))
    parts += [f"{k}={v}" for k, v in props.items() if k != default_key]
    return ",".join(parts)


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`32G`, `512M`, `1.5G`, `1024` (bytes) -> bytes."""
    text = str(text).strip().upper()
    unit = text[-1] if text and text[-1] in "KMGT" else ""
    number = text[: len(text) - len(unit)]
    return int(float(number) * SIZE_UNITS[unit])


def format_size(size: int) -> str:
    """Bytes -> Proxmox's `size=` notation (largest exact unit)."""
    for unit in ("T", "G", "M", "K"):
        if size % SIZE_UNITS[unit] == 0 and size >= SIZE_UNITS[unit]:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)
