"""GET mirrors of the catalog for HTTP caches and CDNs: ``ETag``, ``Cache-Control``, 304, gzip.

``/api/v1/catalog`` answers the channel's ``catalogData`` (as ``getCatalogDetailed``);
``/api/v1/catalog/products/{id}`` one product with its season's tariffs. The ETag names the
channel, the scope and the catalog version, so a partner's ``If-None-Match`` costs one row read.
Errors are RFC 9457 problem+json.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from billetterie.catalog.errors import UnknownProduct
from billetterie.catalog.models import CatalogScope
from billetterie.compat import schemas as s
from billetterie.compat.catalog_api import accepts_gzip, cache_of, stream
from billetterie.compat.rpc import Call, current_call

router = APIRouter(prefix="/api/v1", tags=["GET mirrors"])


def _etag(channel_id: int, scope: CatalogScope, version: int, suffix: str = "") -> str:
    return f'W/"c{channel_id}-{scope.value.lower()}-v{version}{suffix}"'


def not_modified(request: Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, lists and ``*``)."""
    header = request.headers.get("if-none-match", "")
    if header.strip() == "*":
        return True
    candidates = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag.removeprefix("W/") in candidates


def _headers(etag: str, max_age: int) -> dict[str, str]:
    return {
        "ETag": etag,
        "Cache-Control": f"private, max-age={max_age}",
        "Vary": "Accept-Encoding, Authorization",
    }


ScopeQuery = Annotated[CatalogScope, Query(description="EXTENDED adds products no longer on sale")]


@router.get(
    "/catalog",
    response_model=s.CatalogData,
    responses={304: {"description": "If-None-Match matched the current version"}},
    operation_id="mirror_catalog",
)
async def catalog(
    request: Request, call: Call = Depends(current_call), scope: ScopeQuery = CatalogScope.STANDARD
) -> Response:
    """The channel's detailed catalog (``catalogData``), cacheable and conditional."""
    context, version = await call.catalog_state(scope)
    etag = _etag(context.sales_channel.id, scope, version.version)
    headers = _headers(etag, call.runtime.settings.catalog_max_age_seconds)
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    entry = await cache_of(call).get(context.sales_channel.id, scope, version.version)
    gzip = accepts_gzip(request)
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return stream(entry.mirror_chunks(gzip=gzip), headers)


@router.get(
    "/catalog/products/{product_id}",
    response_model=s.DetailedSeason,
    responses={304: {"description": "not modified"}, 404: {"description": "no such product here"}},
    operation_id="mirror_catalog_product",
)
async def catalog_product(
    request: Request,
    product_id: Annotated[int, Path(ge=1, le=2**53 - 1)],
    call: Call = Depends(current_call),
    scope: ScopeQuery = CatalogScope.STANDARD,
) -> Response:
    """One product of the channel's catalog, inside its season (with tariffs and price levels)."""
    context, version = await call.catalog_state(scope)
    etag = _etag(context.sales_channel.id, scope, version.version, f"-p{product_id}")
    headers = _headers(etag, call.runtime.settings.catalog_max_age_seconds)
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    entry = await cache_of(call).get(context.sales_channel.id, scope, version.version)
    for season in (await entry.document())["seasons"]:
        for product in season["products"]:
            if product["id"] == product_id:
                return Response(
                    orjson.dumps({**season, "products": [product]}),
                    media_type="application/json",
                    headers=headers,
                )
    raise UnknownProduct(f"no product {product_id} in this channel's catalog")
