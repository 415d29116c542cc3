"""availabilityService (module ``tnseb``), v1_33, and the availability GET mirrors.

Counts come from the process's availability board (memory, following the change log); seat maps,
the change feed and ``getUpdatedAvailabilities`` read the log and seats in the database. A caller
sees the products its channel sells, and the general pool plus its own contingents. Levels: 1
GOOD (green), 2 LIMITED (orange, under the product's alert ratio), 3 NONE (red).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.responses import Response

from billetterie.catalog.models import CatalogScope
from billetterie.catalog.services import composed_performances
from billetterie.compat import schemas as s
from billetterie.compat.catalog_api import cache_of, current_catalog
from billetterie.compat.mirror_api import not_modified
from billetterie.compat.rpc import Call, RpcService, current_call
from billetterie.inventory.availability import (
    Filter,
    FilterError,
    breakdown,
    counts_json,
    total,
    visible,
)
from billetterie.inventory.board import Board, StockView
from billetterie.inventory.queries import changes_since, seat_map, updated_products
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError, InvalidRequest, NotFound

VERSIONS = ("v1_33",)
availability_service = RpcService("tnseb", "availabilityService", VERSIONS, "Availability")
router = APIRouter(prefix="/api/v1/availability", tags=["GET mirrors"])
Ids = Annotated[list[Annotated[int, Field(ge=-1, le=2**53 - 1)]], Field(max_length=500)]


class UnknownPerformance(NotFound):
    code = "error.availability.unknown_performance"


class UnknownProduct(NotFound):
    code = "error.availability.unknown_product"


class ForeignFilter(DomainError):
    """A filter names something this caller cannot see (404 on the GET mirrors)."""

    code = "error.availability.invalid_filter"
    http_status = 404


class ForeignPointOfSale(DomainError):
    code = "error.availability.invalid_filter"
    http_status = 403


# --- requests and responses ------------------------------------------------------------------


class FilteredRequest(s.Request):
    pointOfSalesId: int | None = Field(default=None, description="Must be the token's, if given.")
    seatCategoryIds: Ids = Field(default_factory=list, description="[] sum, [-1] each, or ids")
    contingentIds: Ids = Field(
        default_factory=list, description="[] sum, [-1] each (0 = pool), or ids"
    )
    composedProductId: int | None = Field(
        default=None, description="Within this season ticket or package."
    )


class PerformanceAvailabilityRequest(FilteredRequest):
    performanceIds: Ids = Field(min_length=1)


class EventAvailabilityRequest(FilteredRequest):
    eventIds: Ids = Field(default_factory=list)
    performanceIds: Ids = Field(default_factory=list)


class ProductAvailabilityRequest(s.Request):
    pointOfSalesId: int | None = None
    productIds: Ids = Field(min_length=1)
    startDate: s.IsoInstant | None = Field(default=None, description="Timeslots from this instant.")
    endDate: s.IsoInstant | None = Field(default=None, description="Timeslots until this instant.")


class SeatsAvailabilityRequest(s.Request):
    pointOfSalesId: int | None = None
    performanceId: int = Field(ge=1, le=2**53 - 1)
    blockIds: Ids = Field(default_factory=list)


class UpdatedAvailabilitiesRequest(s.Request):
    pointOfSalesId: int | None = None
    productIds: Ids = Field(default_factory=list)
    referenceDate: s.IsoInstant


class Counts(BaseModel):
    availabilityLevel: int = Field(description="1 green, 2 orange, 3 red")
    availabilityLevelName: str = Field(description="GOOD, LIMITED or NONE")
    capacity: int | None = Field(description="None: unlimited")
    free: int | None
    held: int
    sold: int
    blocked: int


class Detail(Counts):
    seatCategoryId: int | None = None
    contingentId: int | None = None


class PerformanceAvailability(Counts):
    performanceId: int
    productId: int
    details: list[Detail]


class PerformanceAvailabilityResponse(s.Envelope):
    sequence: int | None = None
    performanceAvailabilities: list[PerformanceAvailability] | None = None


class EventAvailability(Counts):
    eventId: int
    performanceAvailabilities: list[PerformanceAvailability]


class EventAvailabilityResponse(s.Envelope):
    sequence: int | None = None
    eventAvailabilities: list[EventAvailability] | None = None


class TimeslotAvailability(Counts):
    timeslotId: int
    start: str
    end: str


class ItemAvailability(Counts):
    itemId: int
    timeslots: list[TimeslotAvailability] | None = None


class ProductAvailability(Counts):
    productId: int
    productFamilyType: str
    items: list[ItemAvailability] | None = None
    performanceAvailabilities: list[PerformanceAvailability] | None = None


class ProductAvailabilityResponse(s.Envelope):
    sequence: int | None = None
    productAvailabilities: list[ProductAvailability] | None = None


class SeatAvailability(BaseModel):
    id: int
    seatId: int
    blockId: int
    row: str
    number: str
    x: float
    y: float
    rank: int
    seatCategoryId: int | None
    contingentId: int | None
    state: str = Field(description="FREE, HELD, SOLD, BLOCKED, KILLED or NOT_FOR_SALE")


class SeatsAvailabilityResponse(s.Envelope):
    performanceId: int | None = None
    sequence: int | None = None
    seats: list[SeatAvailability] | None = None


class UpdateData(BaseModel):
    productId: int
    lastUpdate: str


class UpdatedAvailabilitiesResponse(s.Envelope):
    sequence: int | None = None
    availabilityUpdateData: list[UpdateData] | None = None


class Change(BaseModel):
    sequence: int
    at: str
    productId: int
    performanceId: int | None
    seatCategoryId: int | None
    contingentId: int | None
    itemId: int | None
    timeslotId: int | None
    capacity: int | None
    free: int | None
    held: int
    sold: int


class Changes(BaseModel):
    cursor: str = Field(description="Pass it as ?since= to get what changed after.")
    changes: list[Change]


# --- shared logic ------------------------------------------------------------------------------


class View:
    """What one caller may see: its channel's products and contingents, on the board.

    The channel's versions (setup, catalog) come from the board, which follows setup imports
    (``NOTIFY`` or its poll tick), so a warm read makes no database round trip. ``from_memory``
    says so: an answer that such a view refuses (unknown performance or product, a filter
    outside the channel) is checked again against the database's versions (``strict``), so a
    product just imported is never refused for a stale cache.
    """

    def __init__(
        self,
        call: Call,
        board: Board,
        product_ids: frozenset[int],
        contingents: set[int],
        *,
        from_memory: bool = False,
    ) -> None:
        self.call = call
        self.board = board
        self.product_ids = product_ids
        self.contingents = contingents
        self.from_memory = from_memory

    @classmethod
    async def of(cls, call: Call, point_of_sales_id: int | None, *, strict: bool = False) -> View:
        if point_of_sales_id is not None and point_of_sales_id != call.operator.point_of_sale_id:
            raise ForeignPointOfSale("pointOfSalesId is not the point of sale of this token")
        board = await board_of(call).fresh()
        context = None if strict else call.remembered_context()
        if context is not None:
            state = board.channel_states.get((context.sales_channel.id, CatalogScope.EXTENDED))
            if state is not None and state.setup_version == context.setup_version:
                call.trust(context)
                catalog = await cache_of(call).get(
                    context.sales_channel.id, CatalogScope.EXTENDED, state.catalog.version
                )
                return cls(
                    call,
                    board,
                    catalog.product_ids,
                    set(context.contingent_ids),
                    from_memory=True,
                )
        catalog = await current_catalog(call, CatalogScope.EXTENDED)
        context = await call.context()
        return cls(call, board, catalog.product_ids, set(context.contingent_ids))

    @property
    def sequence(self) -> int:
        return self.board.sequence.get(self.call.operator.institution_id, 0)

    def require_product(self, product_id: int) -> None:
        if product_id not in self.product_ids:
            raise UnknownProduct(f"no product {product_id} on this channel")

    async def seats(
        self, performance_id: int, block_ids: Sequence[int] = ()
    ) -> list[dict[str, Any]]:
        self.performance_stocks(performance_id)
        async with read(self.call.runtime.engine) as conn:
            return await seat_map(
                conn,
                institution_id=self.call.operator.institution_id,
                performance_id=performance_id,
                contingents=self.contingents,
                block_ids=block_ids,
                now=self.call.runtime.clock.now(),
            )

    def performance_stocks(self, performance_id: int) -> list[StockView]:
        stocks = self.board.performance_stocks(performance_id)
        if not stocks or stocks[0].product_id not in self.product_ids:
            raise UnknownPerformance(f"no performance {performance_id} on sale on this channel")
        return visible(stocks, self.contingents)

    def performance(self, performance_id: int, body: FilteredRequest) -> dict[str, Any]:
        """One performance's answer; the same question on an unchanged board is answered
        from the board's memo (the answer is never mutated afterwards)."""
        stocks = self.board.performance_stocks(performance_id)
        if not stocks or stocks[0].product_id not in self.product_ids:
            raise UnknownPerformance(f"no performance {performance_id} on sale on this channel")
        key = (
            performance_id,
            tuple(body.seatCategoryIds),
            tuple(body.contingentIds),
            frozenset(self.contingents),
        )
        answer: dict[str, Any] | None = self.board.memo_get(key)
        if answer is None:
            answer = self._performance(performance_id, body)
            self.board.memo_put(key, answer)
        return answer

    def _performance(self, performance_id: int, body: FilteredRequest) -> dict[str, Any]:
        stocks = self.performance_stocks(performance_id)
        ratio = self.board.alert_ratio(stocks[0].product_id)
        try:
            details = breakdown(
                stocks,
                seat_categories=Filter.of(body.seatCategoryIds),
                contingents=Filter.of(body.contingentIds),
                channel_contingents=self.contingents,
                alert_ratio=ratio,
            )
        except FilterError as exc:
            raise ForeignFilter(f"{exc.field}: {exc}") from None
        chosen = [
            st
            for st in stocks
            if (
                not body.seatCategoryIds
                or body.seatCategoryIds == [-1]
                or st.seat_category_id in body.seatCategoryIds
            )
            and (
                not body.contingentIds
                or body.contingentIds == [-1]
                or (st.contingent_id or 0) in body.contingentIds
            )
        ]
        return {
            "performanceId": performance_id,
            "productId": stocks[0].product_id,
            **counts_json(total(chosen), ratio),
            "details": details,
        }

    async def within_composed(self, body: FilteredRequest, performance_ids: list[int]) -> list[int]:
        if body.composedProductId is None:
            return performance_ids
        if body.composedProductId not in self.product_ids:
            raise UnknownProduct(f"no product {body.composedProductId} on this channel")
        async with read(self.call.runtime.engine) as conn:
            members = await composed_performances(
                conn, self.call.operator.institution_id, body.composedProductId
            )
        if not performance_ids:
            return members
        outside = [p for p in performance_ids if p not in members]
        if outside:
            raise ForeignFilter(
                f"performance {outside[0]} is not part of product {body.composedProductId}"
            )
        return performance_ids


Refusal = (UnknownPerformance, UnknownProduct, ForeignFilter)


async def viewed(
    call: Call, point_of_sales_id: int | None, use: Callable[[View], Awaitable[Any]]
) -> Any:
    """``use(view)``; a refusal from a view built from memory is checked with a strict one."""
    view = await View.of(call, point_of_sales_id)
    try:
        return await use(view)
    except Refusal:
        if not view.from_memory:
            raise
    return await use(await View.of(call, point_of_sales_id, strict=True))


def board_of(call: Call) -> Board:
    board = call.runtime.caches.get("board")
    if board is None:
        board = call.runtime.caches["board"] = Board(call.runtime.engine, clock=call.runtime.clock)
    assert isinstance(board, Board)
    return board


def product_availability(
    view: View, product_id: int, body: ProductAvailabilityRequest
) -> dict[str, Any]:
    view.require_product(product_id)
    board = view.board
    facts = board.products.get(product_id)
    stocks = visible(board.product_stocks(product_id), view.contingents)
    ratio = board.alert_ratio(product_id)
    result: dict[str, Any] = {
        "productId": product_id,
        "productFamilyType": facts.family if facts else "",
        **counts_json(total(stocks), ratio),
    }
    by_item: dict[int, list[StockView]] = defaultdict(list)
    by_performance: dict[int, list[StockView]] = defaultdict(list)
    for stock in stocks:
        if stock.product_item_id is not None:
            by_item[stock.product_item_id].append(stock)
        elif stock.performance_id is not None:
            by_performance[stock.performance_id].append(stock)
    if by_item:
        items = []
        for item_id, item_stocks in sorted(by_item.items()):
            item: dict[str, Any] = {"itemId": item_id, **counts_json(total(item_stocks), ratio)}
            slots = []
            for stock in item_stocks:
                if stock.timeslot_id is None:
                    continue
                start, end = board.timeslots.get(stock.timeslot_id, (None, None))
                if start is None or end is None:
                    continue
                if (body.startDate and end <= body.startDate) or (
                    body.endDate and start >= body.endDate
                ):
                    continue
                slots.append(
                    {
                        "timeslotId": stock.timeslot_id,
                        "start": start.isoformat(),
                        "end": end.isoformat(),
                        **counts_json(stock.counts, ratio),
                    }
                )
            if slots or any(st.timeslot_id is not None for st in item_stocks):
                item["timeslots"] = sorted(slots, key=lambda x: x["start"])
            items.append(item)
        result["items"] = items
    if by_performance:
        result["performanceAvailabilities"] = [
            {
                "performanceId": pid,
                "productId": product_id,
                **counts_json(total(st), ratio),
                "details": [],
            }
            for pid, st in sorted(by_performance.items())
        ]
    return result


# --- RPC methods -------------------------------------------------------------------------------


@availability_service.method(
    "getPerformanceAvailability",
    request=PerformanceAvailabilityRequest,
    response=PerformanceAvailabilityResponse,
)
async def get_performance_availability(
    body: PerformanceAvailabilityRequest, call: Call
) -> dict[str, Any]:
    """Counts and level of performances, with the seat category / contingent breakdown the
    filters ask for."""

    async def use(view: View) -> dict[str, Any]:
        ids = await view.within_composed(body, list(dict.fromkeys(body.performanceIds)))
        return {
            "sequence": view.sequence,
            "performanceAvailabilities": [view.performance(p, body) for p in ids],
        }

    result: dict[str, Any] = await viewed(call, body.pointOfSalesId, use)
    return result


@availability_service.method(
    "getEventAvailability", request=EventAvailabilityRequest, response=EventAvailabilityResponse
)
async def get_event_availability(body: EventAvailabilityRequest, call: Call) -> dict[str, Any]:
    """Events (SINGLE_ENTRY products) with each of their performances; ``performanceIds``
    restricts which performances are reported."""

    async def use(view: View) -> dict[str, Any]:
        return {"sequence": view.sequence, "eventAvailabilities": await events(view, body)}

    result: dict[str, Any] = await viewed(call, body.pointOfSalesId, use)
    return result


async def events(view: View, body: EventAvailabilityRequest) -> list[dict[str, Any]]:
    if not body.eventIds and not body.performanceIds and body.composedProductId is None:
        raise ForeignFilter("give eventIds, performanceIds or composedProductId")
    wanted = await view.within_composed(body, list(dict.fromkeys(body.performanceIds)))
    by_event: dict[int, list[int]] = {e: [] for e in dict.fromkeys(body.eventIds)}
    for event_id in by_event:
        view.require_product(event_id)
        performances = sorted(
            {
                st.performance_id
                for st in view.board.product_stocks(event_id)
                if st.performance_id is not None
            }
        )
        by_event[event_id] = [p for p in performances if not wanted or p in wanted]
    for performance_id in wanted:
        event_id = view.performance_stocks(performance_id)[0].product_id
        if performance_id not in by_event.setdefault(event_id, []):
            by_event[event_id].append(performance_id)
    answers = []
    for event_id, performance_ids in by_event.items():
        rows = [view.performance(p, body) for p in performance_ids]
        stocks = [st for p in performance_ids for st in view.performance_stocks(p)]
        answers.append(
            {
                "eventId": event_id,
                **counts_json(total(stocks), view.board.alert_ratio(event_id)),
                "performanceAvailabilities": rows,
            }
        )
    return answers


@availability_service.method(
    "getProductAvailability",
    request=ProductAvailabilityRequest,
    response=ProductAvailabilityResponse,
)
async def get_product_availability(body: ProductAvailabilityRequest, call: Call) -> dict[str, Any]:
    """Products of any family: passes with their items and timeslots, services, memberships;
    events summed over their performances."""

    async def use(view: View) -> dict[str, Any]:
        return {
            "sequence": view.sequence,
            "productAvailabilities": [
                product_availability(view, p, body) for p in dict.fromkeys(body.productIds)
            ],
        }

    result: dict[str, Any] = await viewed(call, body.pointOfSalesId, use)
    return result


@availability_service.method(
    "getSeatsAvailability", request=SeatsAvailabilityRequest, response=SeatsAvailabilityResponse
)
async def get_seats_availability(body: SeatsAvailabilityRequest, call: Call) -> dict[str, Any]:
    """Every seat of a performance (or of some blocks) with coordinates, category and state,
    for seat maps. Read from the database, not the board."""

    async def use(view: View) -> dict[str, Any]:
        seats = await view.seats(body.performanceId, body.blockIds)
        return {"performanceId": body.performanceId, "sequence": view.sequence, "seats": seats}

    result: dict[str, Any] = await viewed(call, body.pointOfSalesId, use)
    return result


def _checked_products(product_ids: list[int]) -> Callable[[View], Awaitable[View]]:
    async def check(view: View) -> View:
        for product_id in product_ids:
            view.require_product(product_id)
        return view

    return check


@availability_service.method(
    "getUpdatedAvailabilities",
    request=UpdatedAvailabilitiesRequest,
    response=UpdatedAvailabilitiesResponse,
)
async def get_updated_availabilities(
    body: UpdatedAvailabilitiesRequest, call: Call
) -> dict[str, Any]:
    """Products whose availability changed after ``referenceDate`` (from the change log)."""
    view = await viewed(call, body.pointOfSalesId, _checked_products(body.productIds))
    async with read(call.runtime.engine) as conn:
        rows = await updated_products(
            conn,
            institution_id=call.operator.institution_id,
            since=body.referenceDate,
            product_ids=body.productIds,
        )
    return {
        "sequence": view.sequence,
        "availabilityUpdateData": [
            {"productId": product_id, "lastUpdate": at.isoformat()}
            for product_id, at in rows
            if product_id in view.product_ids
        ],
    }


# --- GET mirrors -------------------------------------------------------------------------------


async def _mirror(
    request: Request,
    call: Call,
    what: str,
    check: Callable[[View], object],
    render: Callable[[View], Awaitable[Any]],
) -> Response:
    """A conditional GET: ``check`` refuses what the caller may not see (before any 304),
    ``render`` builds the answer when the caller's ETag is stale."""

    async def checked(view: View) -> View:
        check(view)
        return view

    view: View = await viewed(call, None, checked)
    etag = f'W/"s{view.sequence}-{what}"'
    max_age = call.runtime.settings.availability_max_age_seconds
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={max_age}",
        "Vary": "Authorization",
    }
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(
        orjson.dumps(await render(view)), media_type="application/json", headers=headers
    )


async def _done(value: Any) -> Any:
    return value


IdPath = Annotated[int, Path(ge=1, le=2**53 - 1)]
IdsQuery = Annotated[
    list[Annotated[int, Field(ge=-1, le=2**53 - 1)]],
    Query(max_length=500, description="[] sum, [-1] each, or ids"),
]
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "not modified"}}


MAX_ID = 2**53 - 1
ID_TEXT = re.compile(r"-?[0-9]{1,16}")


def _ids_parameter(name: str) -> dict[str, Any]:
    """The OpenAPI text of an id-list query parameter that a handler reads itself."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": "[] sum, [-1] each, or ids",
        "schema": {
            "type": "array",
            "items": {"type": "integer", "minimum": -1, "maximum": MAX_ID},
            "maxItems": 500,
            "default": [],
        },
    }


def query_ids(request: Request, name: str) -> list[int]:
    """An id-list query parameter (``?name=1&name=2``), checked as the declared ones are:
    integers from -1 to 2^53 - 1, at most 500; RequestValidationError otherwise. Read by hand
    on the hottest mirror: declaring it costs FastAPI more than the whole answer."""
    values = request.query_params.getlist(name)
    if not values:
        return []
    errors: list[dict[str, Any]] = []
    if len(values) > 500:
        errors.append(
            {
                "type": "too_long",
                "loc": ("query", name),
                "msg": "List should have at most 500 items",
                "input": values,
            }
        )
    ids: list[int] = []
    for position, value in enumerate(values):
        if ID_TEXT.fullmatch(value.strip()) is None:
            errors.append(
                {
                    "type": "int_parsing",
                    "loc": ("query", name, position),
                    "msg": "Input should be a valid integer",
                    "input": value,
                }
            )
            continue
        number = int(value)
        if not -1 <= number <= MAX_ID:
            errors.append(
                {
                    "type": "less_than_equal" if number > MAX_ID else "greater_than_equal",
                    "loc": ("query", name, position),
                    "msg": f"Input should be between -1 and {MAX_ID}",
                    "input": value,
                }
            )
            continue
        ids.append(number)
    if errors:
        raise RequestValidationError(errors)
    return ids


@router.get(
    "/performances/{performance_id}",
    response_model=PerformanceAvailability,
    responses=NOT_MODIFIED,
    operation_id="mirror_performance_availability",
    openapi_extra={
        "parameters": [_ids_parameter("seatCategoryIds"), _ids_parameter("contingentIds")]
    },
)
async def performance_mirror(
    request: Request, performance_id: IdPath, call: Call = Depends(current_call)
) -> Response:
    """One performance's availability; the ETag is the institution's change sequence.
    ``seatCategoryIds`` and ``contingentIds`` filter as in ``getPerformanceAvailability``."""
    body = FilteredRequest.model_construct(
        seatCategoryIds=query_ids(request, "seatCategoryIds"),
        contingentIds=query_ids(request, "contingentIds"),
    )
    return await _mirror(
        request,
        call,
        f"p{performance_id}",
        lambda view: view.performance_stocks(performance_id),
        lambda view: _done(view.performance(performance_id, body)),
    )


@router.get(
    "/products/{product_id}",
    response_model=ProductAvailability,
    responses=NOT_MODIFIED,
    operation_id="mirror_product_availability",
)
async def product_mirror(
    request: Request, product_id: IdPath, call: Call = Depends(current_call)
) -> Response:
    """One product's availability (items and timeslots, or performances)."""
    body = ProductAvailabilityRequest(productIds=[product_id])
    return await _mirror(
        request,
        call,
        f"r{product_id}",
        lambda view: view.require_product(product_id),
        lambda view: _done(product_availability(view, product_id, body)),
    )


@router.get(
    "/events/{event_id}",
    response_model=EventAvailability,
    responses=NOT_MODIFIED,
    operation_id="mirror_event_availability",
)
async def event_mirror(
    request: Request, event_id: IdPath, call: Call = Depends(current_call)
) -> Response:
    """One event with its performances."""

    async def render(view: View) -> Any:
        return (await events(view, EventAvailabilityRequest(eventIds=[event_id])))[0]

    return await _mirror(
        request, call, f"e{event_id}", lambda view: view.require_product(event_id), render
    )


@router.get(
    "/performances/{performance_id}/seats",
    response_model=list[SeatAvailability],
    responses=NOT_MODIFIED,
    operation_id="mirror_seats_availability",
)
async def seats_mirror(
    request: Request, performance_id: IdPath, call: Call = Depends(current_call)
) -> Response:
    """Every seat of a performance with its state, for seat maps."""
    return await _mirror(
        request,
        call,
        f"s{performance_id}",
        lambda view: view.performance_stocks(performance_id),
        lambda view: view.seats(performance_id),
    )


@router.get("/changes", response_model=Changes, operation_id="mirror_availability_changes")
async def changes(
    call: Call = Depends(current_call),
    since: Annotated[
        str,
        Query(
            pattern=r"^s?[0-9]{0,18}$",
            description="A cursor from a previous answer; '0' or nothing for everything",
        ),
    ] = "0",
) -> Response:
    """What changed after a cursor, in sequence order (at most 1000 rows; resume with the new
    cursor). Only stocks the caller's channel sees."""
    try:
        after = int(since.removeprefix("s") or "0")
        if after < 0:
            raise ValueError
    except ValueError:
        raise InvalidRequest("since: not a cursor from this feed") from None
    view = await View.of(call, None)  # (this feed filters, it refuses nothing)
    async with read(call.runtime.engine) as conn:
        rows, cursor = await changes_since(
            conn, institution_id=call.operator.institution_id, since=after
        )
    items = [
        {
            "sequence": r.sequence,
            "at": r.at.isoformat(),
            "productId": r.product_id,
            "performanceId": r.performance_id,
            "seatCategoryId": r.seat_category_id,
            "contingentId": r.contingent_id,
            "itemId": r.product_item_id,
            "timeslotId": r.timeslot_id,
            "capacity": r.capacity,
            "free": None
            if r.capacity is None
            else max(r.capacity - r.held - r.sold - r.blocked, 0),
            "held": r.held,
            "sold": r.sold,
        }
        for r in rows
        if r.product_id in view.product_ids
        and (r.contingent_id is None or r.contingent_id in view.contingents)
    ]
    return Response(
        orjson.dumps({"cursor": f"s{cursor}", "changes": items}),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
