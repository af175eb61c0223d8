"""The OpenAPI 3 document, generated from the endpoint declarations (never written by hand)."""

from __future__ import annotations

import re
from typing import Any

from api import propstrings
from api.schema import Endpoint, Param, Registry

ERROR = {"type": "object", "required": ["message", "status"],
         "properties": {"message": {"type": "string"}, "status": {"type": "integer"},
                        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
                        "data": {"nullable": True}}}
SECURITY = [{"ticket": [], "csrf": []}, {"token": []}]


def _schema(schema: dict) -> dict:
    """Our return shapes in OpenAPI 3.0 terms (3.0 has no `null` type)."""
    out = dict(schema)
    if out.get("type") == "null":
        return {"nullable": True}
    if isinstance(out.get("type"), list):
        types = [t for t in out["type"] if t != "null"]
        out["type"] = types[0]
        out["nullable"] = True
    if "items" in out:
        out["items"] = _schema(out["items"])
    if "properties" in out:
        out["properties"] = {k: _schema(v) for k, v in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _schema(out["additionalProperties"])
    for key in ("oneOf", "anyOf", "allOf"):
        if key in out:
            out[key] = [_schema(v) for v in out[key]]
    return out


def _param_schema(param: Param, inline: bool = False) -> dict:
    """A parameter's schema; a property string's is shared under components/schemas, named by its format."""
    if param.format in propstrings.FORMATS and not inline:
        return {"$ref": f"#/components/schemas/{param.format}"}
    schema = param.json_schema()
    if "pattern" in schema:
        schema["pattern"] = f"^(?:{schema['pattern']})$"
    if param.format and "pattern" not in schema:
        from api.schema import FORMATS
        if param.format in FORMATS:
            schema["pattern"] = f"^(?:{FORMATS[param.format]})$"
    if param.description:
        schema["description"] = param.description
    if param.format in propstrings.FORMATS:  # a property string: its keys as Proxmox documents them
        schema["description"] = (param.description + " " if param.description else "") + \
            "Format: " + propstrings.typetext(param.format)
    return schema


def _expanded(params: list[Param]) -> list[tuple[str, Param]]:
    """Indexed families (`net[n]`) become one property per index, which OpenAPI 3.0 can express."""
    out = []
    for param in params:
        if param.max_index is None:
            out.append((param.name, param))
        else:
            stem = param.name[:-3]
            out += [(f"{stem}{i}", param) for i in range(param.max_index + 1)]
    return out


def _operation(ep: Endpoint) -> dict:
    path_names = set(re.findall(r"\{(\w+)\}", ep.path))
    parameters: list[dict[str, Any]] = []
    body: dict[str, Any] = {}
    required: list[str] = []
    for name, param in _expanded(ep.params):
        if name in path_names:
            parameters.append({"name": name, "in": "path", "required": True, "schema": _param_schema(param)})
        elif ep.method in ("GET", "DELETE"):
            parameters.append({"name": name, "in": "query", "required": not param.optional,
                               "schema": _param_schema(param)})
        else:
            body[name] = _param_schema(param)
            if not param.optional:
                required.append(name)
    returns = _schema(ep.returns)
    wrapped = not (ep.native or ep.bare)
    content = {"type": "object", "required": ["data"], "properties": {"data": returns}} if wrapped else returns
    op: dict[str, Any] = {
        "operationId": f"{ep.method.lower()}_{ep.name}",
        "summary": (ep.description.strip().splitlines() or [ep.name])[0],
        "tags": [ep.path.strip("/").split("/")[0] or "root"],
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": content},
                                                               **({ep.text: {"schema": {"type": "string"}}}
                                                                  if ep.text else {})}},
                      "default": {"description": "Error", "content": {"application/json": {"schema": ERROR}}}},
    }
    if ep.absent:
        op["x-gpve-absent"] = ep.absent
    if ep.unsupported:  # answered 501 whatever it is sent: no body to describe, no 200
        op["responses"] = {"501": {"description": f"Not implemented: gpve has no {ep.absent}",
                                   "content": {"application/json": {"schema": ERROR}}}}
        body = {}
    if ep.upload:  # a multipart body with the file in field `upload`
        body[ep.upload] = {"type": "string", "format": "binary", "description": "The file (its name is the file's)."}
        schema = {"type": "object", "properties": body, "additionalProperties": False,
                  "required": sorted(set(required) | {ep.upload})}
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    elif body:
        schema = {"type": "object", "properties": body, "additionalProperties": False}
        if required:
            schema["required"] = required
        op["requestBody"] = {"required": bool(required), "content": {
            "application/x-www-form-urlencoded": {"schema": schema}, "application/json": {"schema": schema}}}
    perm = ep.permission
    if perm.check == "public":
        op["security"] = []
    else:
        op["x-permission"] = perm.document()
    return op


def openapi_document(registry: Registry, version: str) -> dict:
    paths: dict[str, dict] = {}
    formats: dict[str, dict] = {}
    for ep in registry.endpoints:
        full = ("/v1" if ep.native else "/api2/json") + ep.path
        paths.setdefault(full, {})[ep.method.lower()] = _operation(ep)
        formats.update({p.format: _param_schema(p, inline=True) for p in ep.params
                        if p.format in propstrings.FORMATS and p.format not in formats})
    return {
        "openapi": "3.0.3",
        "info": {"title": "gpve API", "version": version,
                 "description": "Proxmox-VE-compatible API (/api2/json) and gpve's native API (/v1)."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(formats.items())), "securitySchemes": {
            "ticket": {"type": "apiKey", "in": "cookie", "name": "PVEAuthCookie"},
            "csrf": {"type": "apiKey", "in": "header", "name": "CSRFPreventionToken"},
            "token": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "PVEAPIToken=user@realm!tokenid=SECRET"}}},
        "security": SECURITY,
    }
