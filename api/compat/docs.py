"""The OpenAPI document, served from the declarations."""

from __future__ import annotations

from api.compat.access import GPVE_VERSION
from api.context import Ctx, Reply
from api.openapi import openapi_document
from api.registry import API
from api.schema import Permission


@API.endpoint("GET", "/openapi.json", permission=Permission(check="public"), returns={"type": "object"})
async def openapi_json(ctx: Ctx, p: dict) -> Reply:
    """This API as an OpenAPI 3 document (the document itself, not wrapped in `data`)."""
    return Reply(openapi_document(API, GPVE_VERSION), raw=True)
