from tests.conftest import Api


async def test_alive(demo_api: Api, tokens: dict[str, str]) -> None:
    response = await demo_api.rpc(
        "catalogService", "isCatalogServiceAlive", {"requestId": "x"}, token=tokens["b2c"]
    )
    assert response.status_code == 200
    assert response.json() == {"statusCode": "success", "statusDetail": "OK", "requestId": "x"}
