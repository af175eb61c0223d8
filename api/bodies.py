"""Request parameters from the query string and the body: strict, or a 4xx that names what is wrong.

Bodies arrive form-encoded, multipart or JSON (design section 5). A body is taken whole or refused:
text that is not UTF-8, malformed JSON or multipart, JSON nested too deeply, duplicate JSON keys,
non-finite numbers, file parts and unknown content types answer 400 or 415, never a partial or
silent apply. A parameter given both in the path and elsewhere with another value is refused as
Proxmox refuses it (pve-manager `PVE/HTTPServer.pm` `rest_handler`). Proxmox refuses parameter
bodies over 512 KiB (pve-http-server `$limit_max_post`; with 501, we answer 413).

Pure functions over bytes: `params_from(...)` gives `{name: str | list[str] | JSON value}`.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from api.errors import ApiError

PARAMS_BODY_LIMIT = 512 * 1024  # bytes; Proxmox's limit_max_post
MAX_JSON_DEPTH = 8  # parameters are scalars (a list at most); deeper JSON is refused before it is looked at
FORM_TYPES = ("application/x-www-form-urlencoded", "")  # no Content-Type: read as a form, as Proxmox does


def too_large(limit: int = PARAMS_BODY_LIMIT) -> ApiError:
    return ApiError(413, f"request body too large - the limit is {limit} bytes")


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"malformed {what} - not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") \
            from None


def _add(out: dict[str, Any], key: str, value: Any) -> None:
    """Repeated keys become a list, as Proxmox clients send lists."""
    if key in out:
        old = out[key]
        out[key] = [*old, value] if isinstance(old, list) else [old, value]
    else:
        out[key] = value


def parse_form(data: bytes, what: str = "form body") -> dict[str, Any]:
    """`a=1&b=x%20y`, strictly UTF-8 (raw and percent-escaped bytes alike)."""
    text = _utf8(data, what)
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"malformed {what} - a percent-escape is not UTF-8 ({exc.reason})") from None
    out: dict[str, Any] = {}
    for key, value in pairs:
        _add(out, key, value)
    return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ApiError(400, f"malformed JSON body - duplicate key '{dup}'")
    return out


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (a scalar: 0, `{"a": 1}`: 1)."""
    depth, level = 0, [value]
    while containers := [x for x in level if isinstance(x, (dict, list))]:
        depth += 1
        level = [v for x in containers for v in (x.values() if isinstance(x, dict) else x)]
    return depth


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes) -> dict[str, Any]:
    """A JSON object; `null` members count as absent (as in Proxmox, where they are undefined)."""
    text = _utf8(data, "JSON body")
    if not text.strip():
        return {}
    try:
        body = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "malformed JSON body - nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON body - {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "JSON body must be an object")
    if _depth(body) > MAX_JSON_DEPTH:
        raise ApiError(400, "malformed JSON body - nested too deeply")
    return {k: v for k, v in body.items() if v is not None}


def parse_multipart(data: bytes, boundary: str) -> dict[str, Any]:
    """`multipart/form-data` of plain fields (no files here), each strictly UTF-8."""
    if not boundary:
        raise ApiError(400, "malformed multipart body - no boundary")
    decoder = MultipartDecoder(boundary.encode("latin-1", "replace"))
    decoder.receive_data(data)
    decoder.receive_data(None)
    out: dict[str, Any] = {}
    name, chunks = "", []
    try:
        while not isinstance(event := decoder.next_event(), (Epilogue, NeedData)):
            if isinstance(event, File):
                raise ApiError(400, "Parameter verification failed", {event.name or "file": "file uploads are "
                                                                      "not accepted here"})
            if isinstance(event, Field):
                if not event.name:
                    raise ApiError(400, "malformed multipart body - a part has no name")
                name, chunks = event.name, []
            elif isinstance(event, Data):
                chunks.append(event.data)
                if not event.more_data:
                    _add(out, name, _utf8(b"".join(chunks), f"multipart part '{name}'"))
    except ValueError as exc:
        raise ApiError(400, f"malformed multipart body - {exc}") from None
    if isinstance(event, NeedData):
        raise ApiError(400, "malformed multipart body - it ends inside a part")
    return out


def parse_body(mimetype: str, options: dict[str, str], data: bytes) -> dict[str, Any]:
    """The parameters in a body of type `mimetype` (its options: `boundary`); 415 for other types."""
    if not data:
        return {}
    if mimetype in FORM_TYPES:
        return parse_form(data)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return parse_json(data)
    if mimetype == "multipart/form-data":
        return parse_multipart(data, options.get("boundary", ""))
    raise ApiError(415, f"unsupported Content-Type '{mimetype}' - send a form, multipart or JSON")


def merge(path: dict[str, str], query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """All parameters; one given twice with different values is refused, as Proxmox refuses it for the path."""
    errors = {k: "duplicate parameter (already defined in URI) with conflicting values!"
              for k in sorted(path) if k in {**query, **body} and str({**query, **body}[k]) != path[k]}
    errors.update({k: "duplicate parameter (given in the query and the body) with conflicting values!"
                   for k in sorted(query) if k in body and body[k] != query[k] and k not in errors})
    if errors:
        raise ApiError(400, "Parameter verification failed", errors)
    return {**query, **body, **path}
