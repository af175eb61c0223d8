"""Building blocks for endpoints' declared return shapes (`returns=` of `API.endpoint`).

A shape is JSON Schema in the subset OpenAPI 3.0 reads, so the same declaration documents the endpoint
(`/api2/json/openapi.json`), drives schemathesis' response checks, and is what tests validate real answers
against. Rows are closed (`additionalProperties: false`): a key an answer carries is a key its declaration
names, and `required` lists what is always sent (Proxmox's `optional => 1` marks the rest).
"""

from __future__ import annotations

INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}
BOOL = {"type": "integer", "enum": [0, 1]}  # Proxmox's booleans go out as 0 or 1
NULL = {"type": "null"}


def const(value: str) -> dict:
    return {"type": "string", "enum": [value]}


def obj(required: dict | None = None, optional: dict | None = None, closed: bool = True) -> dict:
    """An object whose `required` keys are always sent and `optional` ones only where they apply."""
    out: dict = {"type": "object", "properties": {**(required or {}), **(optional or {})}}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def one_of(*variants: dict) -> dict:
    """Rows of several kinds, each matching exactly one variant (a `type` discriminator, or disjoint keys)."""
    return {"oneOf": list(variants)}


def map_of(values: dict) -> dict:
    """An object keyed by names (paths, token ids), each value of one shape."""
    return {"type": "object", "additionalProperties": values}
