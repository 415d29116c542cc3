"""The wallet's organizer API as the box office calls it (over HTTP only).

Implements, of docs/wallet/organizer-api.md: authentication (HTTP Basic ``login:API key``),
``POST tickets``, ``POST tickets/delete``, ``POST tickets/controlled``, ``GET feedback``,
``POST privileges``, ``POST privileges/delete`` and ``PUT barcode-keys``; every other endpoint
is found from the configured URL by stripping its final ``tickets``. Skipped: reports,
activation groups and the scanner (access control's).

Retry policy: a network error, a timeout, a 5xx or a 429 is *transient* and the same call is
sent again after ``delays`` (every batch endpoint of the wallet is idempotent); a 4xx is final
and raised at once. :class:`~billetterie.printing.errors.WalletError` says which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from billetterie.printing.errors import WalletError

DEFAULT_DELAYS = (0.5, 1.0, 2.0, 4.0)
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
JSON = {"Content-Type": "application/json"}


@dataclass
class WalletClient:
    """One interface's view of the wallet. ``http`` is shared (its own base URL is not used)."""

    url: str  # .../organizer/tickets
    login: str
    api_key: str
    http: httpx.AsyncClient
    delays: Sequence[float] = field(default=DEFAULT_DELAYS)

    @property
    def base(self) -> str:
        return self.url[: -len("tickets")]

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        attempts = len(self.delays) + 1
        for attempt in range(attempts):
            try:
                response = await self.http.request(
                    method,
                    self.base + path,
                    auth=httpx.BasicAuth(self.login, self.api_key),
                    content=None if body is None else orjson.dumps(body),
                    headers=None if body is None else JSON,
                    params=params,
                )
            except httpx.HTTPError as exc:
                error = WalletError(f"wallet unreachable: {type(exc).__name__}", transient=True)
            else:
                if response.status_code == 200:
                    try:
                        answer = orjson.loads(response.content)
                    except orjson.JSONDecodeError:
                        answer = None
                    if isinstance(answer, dict):
                        return answer
                    error = WalletError(
                        "the wallet answered a body that is not JSON", transient=True
                    )
                else:
                    transient = response.status_code >= 500 or response.status_code == 429
                    error = WalletError(
                        f"the wallet answered {response.status_code}: {_problem(response)}",
                        transient=transient,
                        status=response.status_code,
                    )
            if not error.transient or attempt == attempts - 1:
                raise error
            await asyncio.sleep(self.delays[attempt])
        raise AssertionError("unreachable")

    async def inject(self, tickets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _results(await self._call("POST", "tickets", {"tickets": tickets}), tickets)

    async def delete(self, ticket_ids: list[str], reason: str) -> list[dict[str, Any]]:
        body = {"ticketIds": ticket_ids, "reason": reason}
        return _results(await self._call("POST", "tickets/delete", body), ticket_ids)

    async def controlled(self, ticket_ids: list[str]) -> list[dict[str, Any]]:
        body = {"ticketIds": ticket_ids}
        return _results(await self._call("POST", "tickets/controlled", body), ticket_ids)

    async def privileges(self, privileges: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"privileges": privileges}
        return _results(await self._call("POST", "privileges", body), privileges)

    async def delete_privileges(
        self, privilege_ids: list[str], reason: str
    ) -> list[dict[str, Any]]:
        body = {"privilegeIds": privilege_ids, "reason": reason}
        return _results(await self._call("POST", "privileges/delete", body), privilege_ids)

    async def register_keys(self, keys: list[dict[str, Any]]) -> dict[str, Any]:
        """The barcode public keys still verifiable, all of them (the wallet retires the
        others); answers what the wallet holds."""
        answer = await self._call("PUT", "barcode-keys", {"keys": keys})
        if not isinstance(answer.get("keys"), list):
            raise WalletError("the wallet answered no keys", transient=True)
        return answer

    async def feedback(self, key: str | None, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if key is not None:
            params["key"] = key
        page = await self._call("GET", "feedback", params=params)
        if not isinstance(page.get("tickets"), list) or not isinstance(page.get("nextKey"), str):
            raise WalletError("the feedback page has no tickets or nextKey", transient=True)
        return page


def _results(body: dict[str, Any], sent: Sequence[Any]) -> list[dict[str, Any]]:
    results = body.get("results")
    if not isinstance(results, list) or len(results) != len(sent):
        raise WalletError("the wallet answered results that do not match the batch", transient=True)
    return [r if isinstance(r, dict) else {} for r in results]


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("code") or body.get("title") or "")[:100] + (
            f" ({body['detail']})"[:300] if body.get("detail") else ""
        )
    return ""
