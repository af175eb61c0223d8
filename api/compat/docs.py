"""The OpenAPI document, served from the declarations."""

from __future__ import annotations

from api.compat.access import GPVE_VERSION
from api.context import Ctx
from api.openapi import openapi_document
from api.registry import API
from api.schema import Permission

OPENAPI_DOCUMENT = {
    "type": "object", "required": ["openapi", "info", "paths"],
    "properties": {"openapi": {"type": "string"}, "info": {"type": "object"}, "paths": {"type": "object"},
                   "components": {"type": "object"}, "security": {"type": "array", "items": {"type": "object"}}},
}


@API.endpoint("GET", "/openapi.json", permission=Permission(check="public"), returns=OPENAPI_DOCUMENT, bare=True)
async def openapi_json(ctx: Ctx, p: dict) -> dict:
    """This API as an OpenAPI 3 document: the body is the document itself (not wrapped in `data`), as OpenAPI
    tools (Swagger UI, schemathesis, generators) read it."""
    return openapi_document(API, GPVE_VERSION)
