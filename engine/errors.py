"""Rejections: the answer a command gets when `decide` refuses it, in the API's error shape."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Rejection(Exception):
    status: int
    message: str
    errors: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        out: dict = {"status": self.status, "message": self.message}
        if self.errors:
            out["errors"] = dict(self.errors)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Rejection:
        return cls(d["status"], d["message"], dict(d.get("errors") or {}))


def not_found(message: str) -> Rejection:
    return Rejection(404, message)


def conflict(message: str) -> Rejection:
    return Rejection(409, message)


def locked(message: str) -> Rejection:
    return Rejection(423, message)


def bad_request(message: str, errors: dict[str, str] | None = None) -> Rejection:
    return Rejection(400, message, errors or {})
