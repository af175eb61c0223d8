"""Proxmox task ids: `UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type}:{id}:{userid}:`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Upid:
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    def __str__(self) -> str:
        return (f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:"
                f"{self.type}:{self.id}:{self.user}:")

    @classmethod
    def parse(cls, text: str) -> Upid:
        parts = text.split(":")
        if len(parts) != 9 or parts[0] != "UPID" or parts[8] != "":
            raise ValueError(f"unable to parse worker upid '{text}'")
        try:
            return cls(parts[1], int(parts[2], 16), int(parts[3], 16), int(parts[4], 16), parts[5], parts[6], parts[7])
        except ValueError:
            raise ValueError(f"unable to parse worker upid '{text}'") from None
