"""Operator authentication and the authorization matrix of the wire surface."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from billetterie.app import build_app
from billetterie.config import Settings
from tests.conftest import NOW, SECRET, Api, settings_for

AUTH = "/tnai/backend-apis/v1/auth"


def rpc_paths() -> list[str]:
    paths = build_app(Settings()).openapi()["paths"]
    return sorted(path for path in paths if path.startswith("/tnseb/"))


def key() -> str:
    return settings_for("sqlite://", __import__("pathlib").Path("/tmp")).jwt_secret


async def test_token_names_institution_operator_and_partner(demo_api: Api) -> None:
    response = await demo_api.client.post(
        AUTH, json={"operator": "DEMO_RESELLER1", "partner": "reseller1", "secret": SECRET}
    )
    assert response.status_code == 200
    assert list(response.json()) == ["token"]
    claims = jwt.decode(
        response.json()["token"],
        key(),
        algorithms=["HS256"],
        audience="DEMO_RESELLER1",
        options={"verify_exp": False},
    )
    assert claims["sub"] == "DEMO"
    assert claims["aud"] == "DEMO_RESELLER1"
    assert claims["iss"] == "reseller1"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iat"] == int(NOW.timestamp())


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"operator": "DEMO_B2C", "partner": "demo-website", "secret": "wrong"},
            401,
            "error.auth.bad_credentials",
        ),
        (
            {"operator": "DEMO_B2C", "partner": "reseller1", "secret": SECRET},
            401,
            "error.auth.bad_credentials",
        ),
        (
            {"operator": "NOBODY_X", "partner": "demo-website", "secret": SECRET},
            401,
            "error.auth.bad_credentials",
        ),
        ({"operator": "DEMO_B2C", "partner": "demo-website"}, 400, "error.request.invalid"),
        (
            {"operator": 12, "partner": "demo-website", "secret": SECRET},
            400,
            "error.request.invalid",
        ),
    ],
)
async def test_failed_login_is_a_json_error(
    demo_api: Api, body: dict[str, object], status: int, code: str
) -> None:
    response = await demo_api.client.post(AUTH, json=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["statusCode"] == code
    assert "token" not in response.json()


async def test_malformed_login_body(demo_api: Api) -> None:
    response = await demo_api.client.post(AUTH, content=b"{not json")
    assert response.status_code == 400
    assert response.json()["statusCode"] == "error.request.malformed_json"


def forged(claims: dict[str, object], signing_key: str) -> str:
    return jwt.encode(claims, signing_key, algorithm="HS256")


def valid_claims(**changes: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "sub": "DEMO",
        "aud": "DEMO_B2C",
        "iss": "demo-website",
        "pos": 1,
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(hours=1)).timestamp()),
    }
    claims.update(changes)
    return claims


@pytest.mark.parametrize("path", rpc_paths())
@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("none", "error.auth.missing_token"),
        ("basic", "error.auth.missing_token"),
        ("garbage", "error.auth.invalid_token"),
        ("forged", "error.auth.invalid_token"),
        ("expired", "error.auth.expired_token"),
    ],
)
async def test_every_method_refuses_without_a_valid_token(
    demo_api: Api, path: str, case: str, code: str
) -> None:
    headers = {
        "none": {},
        "basic": {"Authorization": "Basic REVNTzpzZWNyZXQ="},
        "garbage": {"Authorization": "Bearer not-a-jwt"},
        "forged": {
            "Authorization": "Bearer " + forged(valid_claims(), "some-other-key-" + "y" * 32)
        },
        "expired": {
            "Authorization": "Bearer "
            + forged(valid_claims(exp=int((NOW - timedelta(seconds=1)).timestamp())), key())
        },
    }[case]
    response = await demo_api.client.post(path, json={"requestId": "r-1"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "statusCode": code,
        "statusDetail": response.json()["statusDetail"],
        "requestId": "r-1",
    }


async def test_token_for_another_point_of_sale_is_refused(demo_api: Api) -> None:
    token = forged(valid_claims(pos=999), key())
    response = await demo_api.rpc("catalogService", "getPOSConfig", token=token)
    assert response.status_code == 401
    assert response.json()["statusCode"] == "error.auth.invalid_token"


async def _season_id(api: Api, token: str) -> int:
    response = await api.rpc("setupService", "listSeasons", token=token)
    season_id: int = response.json()["seasons"][0]["id"]
    return season_id


@pytest.mark.parametrize(("caller", "owner"), [("other", "b2c"), ("b2c", "other")])
async def test_other_institutions_ids_are_unknown(
    demo_api: Api, tokens: dict[str, str], caller: str, owner: str
) -> None:
    foreign_season = await _season_id(demo_api, tokens[owner])
    for method in ("listAudienceSubCategories", "listPriceLevels"):
        response = await demo_api.rpc(
            "setupService", method, {"seasonId": foreign_season}, token=tokens[caller]
        )
        assert response.status_code == 200
        assert response.json()["statusCode"] == "error.catalog.unknown_season"
        own = await demo_api.rpc(
            "setupService",
            method,
            {"seasonId": await _season_id(demo_api, tokens[caller])},
            token=tokens[caller],
        )
        assert own.json()["statusCode"] == "success"


async def _product_ids(api: Api, token: str) -> dict[str, int]:
    response = await api.rpc("catalogService", "getCatalog", token=token)
    return {
        p["code"]: p["id"] for s in response.json()["catalogData"]["seasons"] for p in s["products"]
    }


async def test_catalog_matrix_by_channel_and_institution(
    demo_api: Api, tokens: dict[str, str]
) -> None:
    b2c = await _product_ids(demo_api, tokens["b2c"])
    reseller = await _product_ids(demo_api, tokens["reseller"])
    other = await _product_ids(demo_api, tokens["other"])
    assert set(reseller) == {"HAMLET", "FCDEMO1", "MUSVISIT"}
    assert set(reseller) < set(b2c)
    assert set(other) == {"SHOW", "PASS"}
    cases = [
        ("b2c", b2c["PARKING"], 200),
        ("reseller", b2c["PARKING"], 404),  # not sold on the reseller's channel
        ("reseller", b2c["HAMLET"], 200),
        ("other", b2c["HAMLET"], 404),  # another institution's product
        ("b2c", other["SHOW"], 404),
        ("other", other["SHOW"], 200),
        ("none", b2c["HAMLET"], 401),
    ]
    for caller, product_id, status in cases:
        headers = {} if caller == "none" else {"Authorization": f"Bearer {tokens[caller]}"}
        response = await demo_api.client.get(
            f"/api/v1/catalog/products/{product_id}", headers=headers
        )
        assert response.status_code == status, (caller, product_id)
        if status != 200:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == status
        else:
            assert [p["id"] for p in response.json()["products"]] == [product_id]


async def test_point_of_sale_fixes_the_channel(demo_api: Api, tokens: dict[str, str]) -> None:
    expected = {
        "b2c": ("WEBSHOP", "WEB"),
        "reseller": ("RES1POS", "RESELL1"),
        "box": ("BOXPOS", "BOX"),
    }
    for caller, (pos, channel) in expected.items():
        data = (await demo_api.rpc("catalogService", "getPOSConfig", token=tokens[caller])).json()[
            "posConfigData"
        ]
        assert (data["posCode"], data["salesChannelCode"], data["institCode"]) == (
            pos,
            channel,
            "DEMO",
        )
