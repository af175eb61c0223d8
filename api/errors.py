"""API errors in the spec's shape: `{"message", "status", "errors"}`; the message is also the reason phrase."""

from __future__ import annotations

from engine.errors import Rejection


class ApiError(Rejection):
    """An error raised by the API layer itself (auth, routing); same shape as engine rejections."""


def unauthorized(message: str = "authentication failure") -> ApiError:
    return ApiError(401, message)


def forbidden(privilege: str, path: str) -> ApiError:
    return ApiError(403, f"Permission denied - missing '{privilege}' on '{path}'")
