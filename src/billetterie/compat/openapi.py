"""The published OpenAPI document: every error an operation can answer, with its body.

FastAPI documents request validation as 422; this surface answers 400 with the S-360 envelope
(RPC) or problem+json (GET mirrors), so the document says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from billetterie.compat.envelope import RPC_PREFIXES
from billetterie.compat.schemas import Envelope, Problem

ERRORS_RPC = {
    "400": "malformed request: error.request.malformed_json or error.request.invalid",
    "401": "missing, forged or expired token, or bad credentials (error.auth.*)",
    "503": "the inventory is busy (error.inventory.busy) or the service overloaded "
    "(error.service.unavailable); retry after Retry-After",
    "509": "too many calls to this endpoint (error.request.rate_limited); retry after Retry-After",
}
ERRORS_GET = {
    "400": "invalid parameter (error.request.invalid)",
    "401": "missing, forged or expired token (error.auth.*)",
    "404": "no such resource for this caller (error.*)",
    "409": "a refusal of a well-formed request (error.*)",
    "503": "the service is overloaded (error.service.unavailable); retry after Retry-After",
    "509": "too many calls to this endpoint (error.request.rate_limited); retry after Retry-After",
}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Envelope"] = Envelope.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for path, operations in document["paths"].items():
            rpc = path.startswith(RPC_PREFIXES)
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                errors = ERRORS_RPC if rpc else ERRORS_GET
                for status, description in errors.items():
                    media = "application/json" if rpc else "application/problem+json"
                    ref = "#/components/schemas/Envelope" if rpc else "#/components/schemas/Problem"
                    responses[status] = {
                        "description": description,
                        "content": {media: {"schema": {"$ref": ref}}},
                    }
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
