"""The S-360 envelope, bad input, and the catalog's GET mirrors."""

from __future__ import annotations

import gzip

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.shared.db import metadata, read
from tests.conftest import Api

CATALOG = "/tnseb/backend-apis/catalogService/v1_33"


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with read(engine) as conn:
        return {
            t.name: (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one()
            for t in metadata.sorted_tables
        }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (f"{CATALOG}/getNothing", b"{}", 404, "error.request.unknown_method"),
        (
            "/tnseb/backend-apis/catalogService/v9_99/getPOSConfig",
            b"{}",
            404,
            "error.request.unknown_method",
        ),
        (
            "/tnseb/backend-apis/noSuchService/v1_33/getPOSConfig",
            b"{}",
            404,
            "error.request.unknown_method",
        ),
        (f"{CATALOG}/getCatalogDetailed", b"{not json", 400, "error.request.malformed_json"),
        (f"{CATALOG}/getCatalogDetailed", b"[1, 2]", 400, "error.request.invalid"),
        (f"{CATALOG}/getCatalogDetailed", b'{"scope": "EVERYTHING"}', 400, "error.request.invalid"),
        (f"{CATALOG}/getCatalogDetailed", b'{"seasonCode": 12}', 400, "error.request.invalid"),
        (f"{CATALOG}/getCatalogDetailed", b'{"requestId": {"a": 1}}', 400, "error.request.invalid"),
        (
            "/tnseb/backend-apis/setupService/v1_33/listPriceLevels",
            b"{}",
            400,
            "error.request.invalid",
        ),
        (
            "/tnseb/backend-apis/setupService/v1_33/listPriceLevels",
            b'{"seasonId": "abc"}',
            400,
            "error.request.invalid",
        ),
        (
            "/tnseb/backend-apis/setupService/v1_33/listPriceLevels",
            b'{"seasonId": -4}',
            400,
            "error.request.invalid",
        ),
        (
            "/tnseb/backend-apis/setupService/v1_33/listPriceLevels",
            b'{"seasonId": 99999999}',
            200,
            "error.catalog.unknown_season",
        ),
        (
            "/tnseb/backend-apis/setupService/v1_33/searchProductsByCriteria",
            b'{"startDate": "soon"}',
            400,
            "error.request.invalid",
        ),
    ],
)
async def test_bad_input_gets_a_stable_code_and_writes_nothing(
    demo_api: Api,
    demo_engine: AsyncEngine,
    tokens: dict[str, str],
    path: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    before = await row_counts(demo_engine)
    response = await demo_api.client.post(path, content=body, headers=bearer(tokens["b2c"]))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["statusCode"] == code
    assert response.json()["statusDetail"]
    assert await row_counts(demo_engine) == before


async def test_request_id_is_echoed_on_errors(demo_api: Api, tokens: dict[str, str]) -> None:
    response = await demo_api.rpc(
        "setupService",
        "listPriceLevels",
        {"requestId": "abc-1", "seasonId": "x"},
        token=tokens["b2c"],
    )
    assert response.status_code == 400
    assert response.json()["requestId"] == "abc-1"
    assert response.json()["statusDetail"].startswith("seasonId:")


async def test_get_on_an_rpc_path_is_405(demo_api: Api, tokens: dict[str, str]) -> None:
    response = await demo_api.client.get(f"{CATALOG}/getPOSConfig", headers=bearer(tokens["b2c"]))
    assert response.status_code == 405
    assert response.json()["statusCode"] == "error.request.method_not_allowed"


async def test_empty_body_and_form_content_type_are_read_as_json(
    demo_api: Api, tokens: dict[str, str]
) -> None:
    empty = await demo_api.client.post(
        f"{CATALOG}/isCatalogServiceAlive", headers=bearer(tokens["b2c"])
    )
    assert empty.json() == {"statusCode": "success", "statusDetail": "OK"}
    form = await demo_api.client.post(
        f"{CATALOG}/isCatalogServiceAlive",
        content=b'{"requestId": "f"}',
        headers={**bearer(tokens["b2c"]), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.json() == {"statusCode": "success", "statusDetail": "OK", "requestId": "f"}


async def test_detailed_catalog_gzip_and_identity_are_the_same_document(
    demo_api: Api, tokens: dict[str, str]
) -> None:
    plain = await demo_api.client.post(
        f"{CATALOG}/getCatalogDetailed",
        json={"requestId": 'q"1'},
        headers={**bearer(tokens["b2c"]), "Accept-Encoding": "identity"},
    )
    async with demo_api.client.stream(
        "POST",
        f"{CATALOG}/getCatalogDetailed",
        json={"requestId": 'q"1'},
        headers={**bearer(tokens["b2c"]), "Accept-Encoding": "gzip"},
    ) as zipped:
        raw = b"".join([chunk async for chunk in zipped.aiter_raw()])  # before httpx decodes it
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == plain.content
    document = orjson.loads(plain.content)
    assert document["statusCode"] == "success"
    assert document["requestId"] == 'q"1'
    assert len(raw) < len(plain.content) / 5
    without_id = await demo_api.rpc("catalogService", "getCatalogDetailed", token=tokens["b2c"])
    assert "requestId" not in without_id.json()
    assert without_id.json()["catalogData"] == document["catalogData"]


async def test_catalog_mirror_etag_and_304(demo_api: Api, tokens: dict[str, str]) -> None:
    headers = {**bearer(tokens["b2c"]), "Accept-Encoding": "gzip"}
    first = await demo_api.client.get("/api/v1/catalog", headers=headers)
    assert first.status_code == 200
    assert first.headers["content-encoding"] == "gzip"
    assert first.headers["cache-control"] == "private, max-age=60"
    etag = first.headers["etag"]
    assert etag.startswith('W/"c') and etag.endswith('-standard-v1"')
    rpc = await demo_api.rpc("catalogService", "getCatalogDetailed", token=tokens["b2c"])
    assert first.json() == rpc.json()["catalogData"]

    again = await demo_api.client.get("/api/v1/catalog", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    listed = await demo_api.client.get(
        "/api/v1/catalog",
        headers={**headers, "If-None-Match": f'"other", {etag.removeprefix("W/")}'},
    )
    assert listed.status_code == 304
    stale = await demo_api.client.get(
        "/api/v1/catalog", headers={**headers, "If-None-Match": 'W/"c1-standard-v0"'}
    )
    assert stale.status_code == 200
    extended = await demo_api.client.get(
        "/api/v1/catalog?scope=EXTENDED", headers={**headers, "If-None-Match": etag}
    )
    assert extended.status_code == 200
    assert extended.headers["etag"] != etag


async def test_other_channels_etag_does_not_match(demo_api: Api, tokens: dict[str, str]) -> None:
    b2c = await demo_api.client.get("/api/v1/catalog", headers=bearer(tokens["b2c"]))
    reseller = await demo_api.client.get(
        "/api/v1/catalog",
        headers={**bearer(tokens["reseller"]), "If-None-Match": b2c.headers["etag"]},
    )
    assert reseller.status_code == 200
    assert reseller.headers["etag"] != b2c.headers["etag"]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/catalog/products/abc", 400, "error.request.invalid"),
        ("/api/v1/catalog/products/0", 400, "error.request.invalid"),
        ("/api/v1/catalog/products/99999999", 404, "error.catalog.unknown_product"),
        ("/api/v1/catalog?scope=ALL", 400, "error.request.invalid"),
        ("/api/v1/nothing", 404, "error.not_found"),
    ],
)
async def test_mirror_errors_are_problem_json(
    demo_api: Api, tokens: dict[str, str], path: str, status: int, code: str
) -> None:
    response = await demo_api.client.get(path, headers=bearer(tokens["b2c"]))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert response.json()["status"] == status
