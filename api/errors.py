"""API errors in the spec's shape: `{"message", "status", "errors"}`; the message is also the reason phrase."""

from __future__ import annotations

from engine.errors import Rejection


class ApiError(Rejection):
    """An error raised by the API layer itself (auth, routing); same shape as engine rejections."""


def unauthorized(message: str = "authentication failure") -> ApiError:
    return ApiError(401, message)


def forbidden(privilege: str, path: str) -> ApiError:
    return ApiError(403, f"Permission denied - missing '{privilege}' on '{path}'")


def reason_phrase(message: str, limit: int = 256) -> str:
    """`message` as an HTTP reason phrase: printable latin-1 kept, anything else (newlines, other control
    characters, text beyond latin-1) written as its Python escape (`\\n`, `\\x7f`, `\\u20ac`), cut at `limit`.

    The JSON body keeps the message as it is; the status line may hold only these characters (RFC 9112,
    h11 refuses others). Proxmox sends the message's first line (pve-http-server `response`).
    """
    out = [ch if " " <= ch <= "~" or "\xa0" <= ch <= "\xff" else ch.encode("unicode_escape").decode("ascii")
           for ch in message]
    return "".join(out)[:limit]
