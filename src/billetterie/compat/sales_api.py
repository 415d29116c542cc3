"""externalOrderFacade, externalOrderService and externalOrderHistoryService (module ``tnseb``).

The operator's token fixes the point of sale, so the sales channel, its contingents, payment
methods, cart lifetime and seat rules; ``pointOfSalesId``, when sent, must be the token's.
Amounts are thousandths. Business refusals answer HTTP 200 with the error code in
``statusCode`` (``error.order.availability`` when places are missing); "busy, retry" answers
503 with ``Retry-After``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from billetterie.catalog.offers import tariff_codes
from billetterie.catalog.services import PointOfSaleContext, point_of_sale_context
from billetterie.compat import schemas as s
from billetterie.compat.rpc import Call, RpcService, current_call
from billetterie.compat.runtime import Runtime
from billetterie.payments.services import PaymentGateway
from billetterie.sales import accounts, cancellation, card, carts, closing, queries, tickets
from billetterie.sales.barcode_keys import KeyVault
from billetterie.sales.errors import InvalidOperation, SetupChanged
from billetterie.sales.models import (
    AccountKind,
    Attribution,
    CartRequest,
    ComposedLine,
    OrderType,
    PaymentMethod,
    PaymentRequest,
    Seller,
    SimpleProductLine,
    SingleEntryLine,
)
from billetterie.shared.db import read
from billetterie.shared.errors import DomainError
from billetterie.shared.money import parse_amount

VERSIONS = ("v1_33",)
facade = RpcService("tnseb", "externalOrderFacade", VERSIONS, "Carts")
order_service = RpcService("tnseb", "externalOrderService", VERSIONS, "Orders")
history_service = RpcService("tnseb", "externalOrderHistoryService", VERSIONS, "Order history")
router = APIRouter(prefix="/api/v1", tags=["sales"])

Id = Annotated[int, Field(ge=1, le=2**53 - 1)]
Quantity = Annotated[int, Field(ge=1, le=1000)]
Amount = Annotated[int, Field(ge=0, le=10**12)]


class ForeignPointOfSale(DomainError):
    code = "error.order.invalid_point_of_sale"
    http_status = 403


# --- requests ------------------------------------------------------------------------------


class OperationAttribution(BaseModel):
    performanceId: Id
    seatCategoryId: Id
    audienceSubCategoryId: Id
    quantity: Quantity
    priceLevelId: Id | None = None
    seatIds: list[Id] = Field(
        default_factory=list, max_length=1000, description="Chosen seats (seat map ids)."
    )


class SingleEntryOperation(BaseModel):
    operationAttributions: list[OperationAttribution] = Field(min_length=1, max_length=50)
    preferedAreas: list[Id] | None = Field(
        default=None,
        max_length=100,
        description="Areas (venue area ids) where best-available seats are looked for first; "
        "elsewhere when they have none left together. Ignored for chosen seatIds.",
    )


class SimpleProductOperation(BaseModel):
    itemId: Id
    audienceSubCategoryId: Id
    quantity: Quantity
    timeslotId: Id | None = None
    priceLevelId: Id | None = None


class ComposedProductOperation(BaseModel):
    productId: Id
    seatCategoryId: Id
    audienceSubCategoryId: Id
    quantity: Quantity
    priceLevelId: Id | None = None


class PurchaserInfo(BaseModel):
    contactReference: s.StorableText | None = Field(default=None, max_length=32)
    firstName: s.StorableText | None = Field(default=None, max_length=100)
    lastName: s.StorableText | None = Field(default=None, max_length=100)
    email: s.StorableText | None = Field(default=None, max_length=254)


class CreateOrUpdateOrderRequest(s.Request):
    pointOfSalesId: int | None = None
    orderId: Id | None = Field(default=None, description="Add to this running cart.")
    orderType: Literal["SALE", "RESERVATION", "OPTION"] = "SALE"
    purchasersInfo: list[PurchaserInfo] = Field(default_factory=list, max_length=10)
    externalReference: s.StorableText | None = Field(default=None, max_length=128)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Za-z]{2})?$")
    singleEntryAttributionOperations: list[SingleEntryOperation] = Field(
        default_factory=list, max_length=50
    )
    simpleProductOperations: list[SimpleProductOperation] = Field(
        default_factory=list, max_length=50
    )
    composedProductOperations: list[ComposedProductOperation] = Field(
        default_factory=list, max_length=50
    )


class OrderRequest(s.Request):
    orderId: Id


class Payment(BaseModel):
    paymentMethodId: Id
    amount: Amount
    voucherCode: s.StorableText | None = Field(default=None, max_length=64)


class CloseOrderRequest(OrderRequest):
    orderType: str | None = None
    purchaserInfo: PurchaserInfo | None = None
    generateBarCodes: bool = True
    payments: list[Payment] = Field(default_factory=list, max_length=20)


class CardCloseRequest(CloseOrderRequest):
    returnUrl: s.StorableText = Field(
        min_length=8, max_length=2048, description="Where the payment page sends the buyer back."
    )


class AbandonMovementsRequest(OrderRequest):
    movementIds: list[Id] = Field(min_length=1, max_length=1000)


class CancelOperationsRequest(OrderRequest):
    operationIds: list[Id] = Field(default_factory=list, max_length=1000)
    movementIds: list[Id] = Field(default_factory=list, max_length=1000)


class FileRequest(s.Request):
    fileId: Id | None = None
    orderId: Id | None = None


class SecretRequest(s.Request):
    orderSecretId: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class ContactData(BaseModel):
    contactNumber: s.StorableText | None = Field(default=None, max_length=32)
    firstName: s.StorableText | None = Field(default=None, max_length=100)
    lastName: s.StorableText | None = Field(default=None, max_length=100)
    email: s.StorableText | None = Field(default=None, max_length=254)


class ReissueRequest(OrderRequest):
    movementId: Id


class MovementContactRequest(OrderRequest):
    movementId: Id
    contactData: ContactData


class Pagination(BaseModel):
    startPosition: int = Field(default=0, ge=0, le=10**7)
    maxResult: int = Field(default=100, ge=1, le=1000)


class TicketCriteria(BaseModel):
    pointOfSalesId: int | None = None
    productId: Id | None = None
    performanceId: Id | None = None
    startDate: s.IsoInstant | None = Field(default=None, description="Issued from this instant.")
    endDate: s.IsoInstant | None = Field(default=None, description="Issued before this instant.")
    ticketStates: list[
        Literal["NOT_PRINTED", "PRINTED", "CONTROLLED", "CANCELLED", "INVALIDATED"]
    ] = Field(default_factory=list, max_length=5)


class ListTicketsRequest(s.Request):
    ticketFilterCriteria: TicketCriteria = Field(default_factory=TicketCriteria)
    paginationParameter: Pagination = Field(default_factory=Pagination)


class FileCriteria(BaseModel):
    contactNumber: s.StorableText | None = Field(default=None, max_length=32)
    externalReference: s.StorableText | None = Field(default=None, max_length=128)
    orderStates: list[Literal["RUNNING", "CLOSED", "CANCELED", "ABANDONNED"]] = Field(
        default_factory=list, max_length=4
    )
    startDate: s.IsoInstant | None = None
    endDate: s.IsoInstant | None = None


class SearchFilesRequest(s.Request):
    fileFilterCriteria: FileCriteria = Field(default_factory=FileCriteria)
    paginationParameter: Pagination = Field(default_factory=Pagination)


# --- responses -----------------------------------------------------------------------------


class Seat(BaseModel):
    id: int
    area: Any = None
    block: Any = None
    row: str | None = None
    number: str | None = None


class TicketData(BaseModel):
    ticketId: int
    ticketState: str
    barcode: str | None


class Movement(BaseModel):
    movementId: int
    operationId: int
    state: str
    productId: int
    performanceId: int | None
    seatCategoryId: int | None
    audienceSubCategoryId: int
    priceLevelId: int | None
    itemId: int | None
    timeslotId: int | None
    contingentId: int | None
    seat: Seat | None
    amount: int
    vatRate: int
    holder: dict[str, Any] | None
    ticket: TicketData | None


class Operation(BaseModel):
    operationId: int
    operationType: str
    productId: int
    state: str
    quantity: int
    movements: list[Movement]


class PaymentData(BaseModel):
    paymentId: int
    paymentMethodId: int
    paymentMethodCode: str
    paymentType: str
    amount: int
    reference: str | None
    date: str | None


class CardRefundData(BaseModel):
    refundId: int
    amount: int
    state: str = Field(description="PENDING (being paid back), SUCCEEDED or FAILED (refused).")
    reason: str
    attempts: int = Field(description="Attempts so far of the background job that pays it back.")
    lastError: str | None = Field(description="The last attempt's error, while retried.")


class CardPaymentData(BaseModel):
    paymentState: str = Field(description="PENDING, SUCCEEDED, FAILED, CANCELLED or REFUNDED.")
    provider: str
    reference: str | None
    amount: int
    refundedAmount: int
    refunds: list[CardRefundData]


class OrderData(BaseModel):
    orderId: int
    orderSecretId: str
    orderType: str
    orderState: str
    pointOfSalesId: int
    salesChannelId: int
    currencyCode: str
    totalAmount: int
    paidAmount: int
    remainingAmount: int
    creationDate: str | None
    expirationDate: str | None
    closingDate: str | None
    contactNumber: str | None
    externalReference: str | None
    originOrderId: int | None
    cardPaymentPending: bool
    operations: list[Operation]
    payments: list[PaymentData]
    cardPayments: list[CardPaymentData] = Field(
        default_factory=list,
        description="Card payment attempts (of a cart awaiting one, an abandoned cart, an order "
        "paid by card) with their refunds.",
    )


class OrderUpdateData(OrderData):
    operationDataUpdates: list[Operation]
    movementDataUpdates: list[Movement]


class OrderUpdateResponse(s.Envelope):
    orderUpdateData: OrderUpdateData | None = None


class OrderResponse(s.Envelope):
    orderData: OrderData | None = None


class CardCloseResponse(OrderResponse):
    paymentUrl: str | None = Field(default=None, description="Send the buyer to this page.")


class CancelResponse(OrderResponse):
    refundOrderId: int | None = None


class TicketSummary(BaseModel):
    ticketId: int
    ticketState: str = Field(description="NOT_PRINTED, VALID, CANCELLED or INVALIDATED")
    orderId: int
    movementId: int
    productId: int
    performanceId: int | None
    itemId: int | None
    timeslotId: int | None
    seatCategoryId: int | None
    audienceSubCategoryId: int
    audienceSubCategory: str | None
    priceLevelId: int | None
    price: int
    barcode: str | None
    issueDate: str | None


class ListTicketsResponse(s.Envelope):
    truncated: bool | None = None
    ticketSummaries: list[TicketSummary] | None = None


class FileSummary(BaseModel):
    orderId: int
    orderType: str
    orderState: str
    totalAmount: int
    paidAmount: int
    currencyCode: str
    contactNumber: str | None
    externalReference: str | None
    originOrderId: int | None
    creationDate: str | None
    closingDate: str | None


class SearchFilesResponse(s.Envelope):
    truncated: bool | None = None
    fileSummaries: list[FileSummary] | None = None


# --- the seller ----------------------------------------------------------------------------


def seller_from_context(context: PointOfSaleContext, operator: str) -> Seller:
    """A point of sale as the sales context sees it."""
    pos = context.point_of_sale
    limit = (pos.parameters or {}).get("pendingAccountCreditLimit")
    try:  # a limit the setup file gives as a decimal string; past 10^12 units it is capped
        credit_limit = min(parse_amount(limit), 10**15) if limit is not None else 0
    except ValueError:
        credit_limit = 0
    return Seller(
        institution_id=context.institution_id,
        organization_id=context.organization.id,
        point_of_sale_id=pos.id,
        point_of_sale_code=pos.code,
        sales_channel_id=context.sales_channel.id,
        contingent_ids=context.contingent_ids,
        currency=context.currency,
        operator=operator,
        language=context.organization.main_language,
        split_allowed=pos.split_seating_allowed,
        max_seats_per_performance=pos.max_seats_per_performance,
        abandon_delay_minutes=pos.order_abandon_delay,
        payment_methods=tuple(
            PaymentMethod(m.id, m.code, m.payment_type, m.for_payment, m.for_reimbursement)
            for m in context.payment_methods
        ),
        pending_credit_limit=credit_limit,
        setup_version=context.setup_version,
    )


async def seller_of(call: Call, point_of_sale_id: int | None = None) -> Seller:
    """The operator's point of sale; ``pointOfSalesId``, when sent, must be the token's."""
    context = await call.context()
    if point_of_sale_id is not None and point_of_sale_id != context.point_of_sale.id:
        raise ForeignPointOfSale("pointOfSalesId must be your token's point of sale")
    return seller_from_context(context, call.operator.login)


async def _selling(
    call: Call, point_of_sale_id: int | None, sell: Callable[[Seller], Awaitable[Any]]
) -> Any:
    """Run a sale with the point of sale as this process remembers it: the sale checks the
    setup version in its own transaction (no read of its own first), and when the setup
    changed, the point of sale is read again and the sale runs once more."""
    context = call.remembered_context()
    if context is None:
        context = await call.context()
    else:
        call.trust(context)
    if point_of_sale_id is not None and point_of_sale_id != context.point_of_sale.id:
        raise ForeignPointOfSale("pointOfSalesId must be your token's point of sale")
    try:
        return await sell(seller_from_context(context, call.operator.login))
    except SetupChanged:
        call.forget_context()
        return await sell(await seller_of(call, point_of_sale_id))


async def _rendered(
    conn: AsyncConnection,
    order: Any,
    operations: list[int],
    contents: queries.OrderContents | None,
    *,
    updates: bool,
) -> Any:
    """A sale's answer, rendered in its transaction (``updates``: the operations it added)."""
    return await queries.order_document(
        conn, order, operation_ids=operations if updates else None, contents=contents
    )


async def seller_at(conn: AsyncConnection, point_of_sale_id: int) -> Seller:
    """The seller of an order's point of sale, for work no operator calls (a card webhook)."""
    return seller_from_context(await point_of_sale_context(conn, point_of_sale_id), "payments")


def vault_of(call: Call) -> KeyVault:
    vault: KeyVault = call.runtime.caches["barcode_vault"]  # set at start-up
    return vault


async def _order(call: Call, seller: Seller, order_id: int, **kwargs: Any) -> dict[str, Any]:
    async with read(call.runtime.engine) as conn:
        row = await queries.order_row(conn, seller, order_id)
        return await queries.order_document(conn, row, **kwargs)


def _cart_request(payload: CreateOrUpdateOrderRequest) -> CartRequest:
    purchaser = payload.purchasersInfo[0] if payload.purchasersInfo else None
    lines: list[Any] = [
        SingleEntryLine(
            tuple(
                Attribution(
                    a.performanceId,
                    a.seatCategoryId,
                    a.audienceSubCategoryId,
                    a.quantity,
                    a.priceLevelId,
                    tuple(a.seatIds),
                )
                for a in op.operationAttributions
            ),
            tuple(op.preferedAreas or ()),
        )
        for op in payload.singleEntryAttributionOperations
    ]
    lines += [
        SimpleProductLine(
            op.itemId, op.audienceSubCategoryId, op.quantity, op.timeslotId, op.priceLevelId
        )
        for op in payload.simpleProductOperations
    ]
    lines += [
        ComposedLine(
            op.productId, op.seatCategoryId, op.audienceSubCategoryId, op.quantity, op.priceLevelId
        )
        for op in payload.composedProductOperations
    ]
    return CartRequest(
        order_id=payload.orderId,
        order_type=OrderType(payload.orderType),
        lines=tuple(lines),
        contact_number=purchaser.contactReference if purchaser else None,
        external_reference=payload.externalReference,
        purchaser={
            k: v
            for k, v in (
                purchaser.model_dump(exclude={"contactReference"}) if purchaser else {}
            ).items()
            if v
        },
        language=payload.language,
    )


# --- externalOrderFacade -------------------------------------------------------------------


@facade.method(
    "createOrUpdateOrder", request=CreateOrUpdateOrderRequest, response=OrderUpdateResponse
)
async def create_or_update_order(payload: CreateOrUpdateOrderRequest, call: Call) -> dict[str, Any]:
    """Create a cart, or add operations to the running cart `orderId`: single entries (best
    available, or chosen `seatIds`), simple products (passes by `itemId`, with `timeslotId` for
    visit passes), composed products (season tickets, packages). All or nothing; the cart
    expires `orderAbandonDelay` minutes after it was created. Sold out answers
    `error.order.availability` and holds nothing."""

    async def sell(seller: Seller) -> Any:
        _, _, document = await carts.create_or_update_order(
            call.runtime.engine,
            seller,
            _cart_request(payload),
            now=call.runtime.clock.now(),
            answer=functools.partial(_rendered, updates=True),
        )
        return document

    return {"orderUpdateData": await _selling(call, payload.pointOfSalesId, sell)}


# --- externalOrderService ------------------------------------------------------------------


@order_service.method("closeOrder", request=CloseOrderRequest, response=OrderResponse)
async def close_order(payload: CloseOrderRequest, call: Call) -> dict[str, Any]:
    """Close a running cart: the payments (methods of this point of sale; a voucher's code in
    `voucherCode`; the reseller's pending-account method) must add up to `totalAmount`. Sells
    the places and issues one ticket per movement with a signed barcode."""
    contact = payload.purchaserInfo.contactReference if payload.purchaserInfo else None

    async def sell(seller: Seller) -> Any:

        _, document = await closing.close_order(
            call.runtime.engine,
            seller,
            payload.orderId,
            [PaymentRequest(p.paymentMethodId, p.amount, p.voucherCode) for p in payload.payments],
            contact_number=contact,
            with_barcodes=payload.generateBarCodes,
            vault=vault_of(call),
            now=call.runtime.clock.now(),
            answer=functools.partial(_rendered, updates=False),
        )
        return document

    return {"orderData": await _selling(call, None, sell)}


def gateway_of(call: Call) -> PaymentGateway:
    gateway: PaymentGateway = call.request.app.state.payments
    return gateway


@order_service.method(
    "createPaymentsAndCloseOrder", request=CardCloseRequest, response=CardCloseResponse
)
async def create_payments_and_close_order(payload: CardCloseRequest, call: Call) -> dict[str, Any]:
    """Pay a running cart by card: one card payment, alone or beside voucher (`voucherCode`),
    credit-balance and pending-account payments of this point of sale that cover part of the
    total; together they must add up to `totalAmount`. The non-card parts are held (debited)
    at once; answers the payment page's `paymentUrl` for the buyer; the provider's confirmation
    closes the order and issues its tickets (then `orderState` is CLOSED). Until then the cart
    cannot change; `reopenOrder` gives the payment up and the held parts back, as does the
    cart's expiry."""
    seller = await seller_of(call)
    url = await card.start_card_payment(
        call.runtime.engine,
        gateway_of(call),
        seller,
        payload.orderId,
        [PaymentRequest(p.paymentMethodId, p.amount, p.voucherCode) for p in payload.payments],
        return_url=payload.returnUrl,
        contact_number=payload.purchaserInfo.contactReference if payload.purchaserInfo else None,
        with_barcodes=payload.generateBarCodes,
        now=call.runtime.clock.now(),
    )
    return {"orderData": await _order(call, seller, payload.orderId), "paymentUrl": url}


@order_service.method("reopenOrder", request=OrderRequest, response=OrderResponse)
async def reopen_order(payload: OrderRequest, call: Call) -> dict[str, Any]:
    """Give up a pending card payment: the cart can change again or be paid otherwise."""
    seller = await seller_of(call)
    await card.reopen_order(
        call.runtime.engine, seller, payload.orderId, now=call.runtime.clock.now()
    )
    return {"orderData": await _order(call, seller, payload.orderId)}


@order_service.method("abandonMovements", request=AbandonMovementsRequest, response=OrderResponse)
async def abandon_movements(payload: AbandonMovementsRequest, call: Call) -> dict[str, Any]:
    """Take movements out of a running cart; their places are released at once."""
    seller = await seller_of(call)
    await carts.abandon_movements(
        call.runtime.engine,
        seller,
        payload.orderId,
        payload.movementIds,
        now=call.runtime.clock.now(),
    )
    return {"orderData": await _order(call, seller, payload.orderId)}


@order_service.method("cancelOperations", request=CancelOperationsRequest, response=CancelResponse)
async def cancel_operations(payload: CancelOperationsRequest, call: Call) -> dict[str, Any]:
    """Cancel operations or movements. In a running cart: release them. In a closed order:
    cancel the tickets (their barcodes are revoked), return the places to inventory and pay the
    amount back through the order's payments in a refund order (`refundOrderId`). A card
    share is refunded through the provider after commit, by a background job (retried while
    the provider is unavailable); `cardPayments` of the order shows its progress."""
    seller = await seller_of(call)
    now = call.runtime.clock.now()

    async def refund_card(conn: AsyncConnection, payment: Any, amount: int) -> None:
        # the refund and its outbox job commit with the cancellation; the worker pays it back
        await card.refund_card_in(conn, payment, amount, now)

    refund_order_id = await cancellation.cancel_operations(
        call.runtime.engine,
        seller,
        payload.orderId,
        operation_ids=payload.operationIds,
        movement_ids=payload.movementIds,
        now=now,
        card_refund=refund_card,
    )
    return {
        "orderData": await _order(call, seller, payload.orderId),
        "refundOrderId": refund_order_id,
    }


@order_service.method("getOrderDetails", request=OrderRequest, response=OrderResponse)
async def get_order_details(payload: OrderRequest, call: Call) -> dict[str, Any]:
    """The order with its operations, movements, tickets and payments."""
    return {"orderData": await _order(call, await seller_of(call), payload.orderId)}


@order_service.method("getFileDetails", request=FileRequest, response=OrderResponse)
async def get_file_details(payload: FileRequest, call: Call) -> dict[str, Any]:
    """The same as getOrderDetails; the file is named by `fileId` (or `orderId`)."""
    file_id = payload.fileId or payload.orderId
    if file_id is None:
        raise InvalidOperation("give fileId (or orderId)")
    return {"orderData": await _order(call, await seller_of(call), file_id)}


@order_service.method(
    "getFileDetailsFromOrderSecretId", request=SecretRequest, response=OrderResponse
)
async def get_file_details_from_secret(payload: SecretRequest, call: Call) -> dict[str, Any]:
    """The order whose public `orderSecretId` this is (the buyer's proof of possession)."""
    seller = await seller_of(call)
    async with read(call.runtime.engine) as conn:
        row = await queries.order_by_secret(conn, seller.institution_id, payload.orderSecretId)
        return {"orderData": await queries.order_document(conn, row)}


@order_service.method(
    "setMovementContactData", request=MovementContactRequest, response=OrderResponse
)
async def set_movement_contact_data(payload: MovementContactRequest, call: Call) -> dict[str, Any]:
    """Name the holder of a movement's ticket (a contact number, or first and last name and
    email)."""
    seller = await seller_of(call)
    await tickets.set_holder(
        call.runtime.engine,
        seller,
        payload.orderId,
        payload.movementId,
        payload.contactData.model_dump(exclude_none=True),
        now=call.runtime.clock.now(),
    )
    return {"orderData": await _order(call, seller, payload.orderId)}


@order_service.method("reissueTicket", request=ReissueRequest, response=OrderResponse)
async def reissue_ticket(payload: ReissueRequest, call: Call) -> dict[str, Any]:
    """Replace a sold movement's ticket: the old one becomes INVALIDATED (its barcode revoked),
    a new one with a new barcode takes its place."""
    seller = await seller_of(call)
    await tickets.reissue_ticket(
        call.runtime.engine,
        seller,
        payload.orderId,
        payload.movementId,
        vault=vault_of(call),
        now=call.runtime.clock.now(),
    )
    return {"orderData": await _order(call, seller, payload.orderId)}


# --- externalOrderHistoryService -----------------------------------------------------------


@history_service.method(
    "listTicketsByCriteria", request=ListTicketsRequest, response=ListTicketsResponse
)
async def list_tickets_by_criteria(payload: ListTicketsRequest, call: Call) -> dict[str, Any]:
    """Tickets sold on your sales channel, oldest first, by product, performance, issue date
    and state; `truncated` says more follow the page."""
    criteria = payload.ticketFilterCriteria
    seller = await seller_of(call, criteria.pointOfSalesId)
    async with read(call.runtime.engine) as conn:
        summaries, truncated = await queries.list_tickets(
            conn,
            seller,
            queries.TicketFilter(
                product_id=criteria.productId,
                performance_id=criteria.performanceId,
                start=criteria.startDate,
                end=criteria.endDate,
                states=tuple(criteria.ticketStates),
            ),
            start_position=payload.paginationParameter.startPosition,
            max_results=payload.paginationParameter.maxResult,
            tariff_codes=await tariff_codes(conn, seller.institution_id),
        )
    return {"truncated": truncated, "ticketSummaries": summaries}


@history_service.method(
    "searchFilesByCriteria", request=SearchFilesRequest, response=SearchFilesResponse
)
async def search_files_by_criteria(payload: SearchFilesRequest, call: Call) -> dict[str, Any]:
    """Orders (files) of your sales channel by contact, external reference, state and creation
    date, newest first; `truncated` says more follow the page."""
    criteria = payload.fileFilterCriteria
    seller = await seller_of(call)
    async with read(call.runtime.engine) as conn:
        summaries, truncated = await queries.search_orders(
            conn,
            seller,
            queries.OrderFilter(
                contact_number=criteria.contactNumber,
                external_reference=criteria.externalReference,
                states=tuple(criteria.orderStates),
                start=criteria.startDate,
                end=criteria.endDate,
            ),
            start_position=payload.paginationParameter.startPosition,
            max_results=payload.paginationParameter.maxResult,
        )
    return {"truncated": truncated, "fileSummaries": summaries}


# --- GET: the pending account's statement, tickets as PDF ----------------------------------


@router.get(
    "/accounts/pending/statement.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="The reseller's pending-account statement over a period, as CSV",
)
async def pending_statement(
    start: Annotated[s.IsoInstant, Query(description="From this instant (included).")],
    end: Annotated[s.IsoInstant, Query(description="Until this instant (excluded).")],
    call: Call = Depends(current_call),
) -> Response:
    seller = await seller_of(call)
    account, opening, lines = await accounts.statement(
        call.runtime.engine,
        institution_id=seller.institution_id,
        kind=AccountKind.PENDING_ACCOUNT,
        code=seller.point_of_sale_code,
        start=start,
        end=end,
    )
    return Response(
        accounts.statement_csv(account, opening, lines),
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="statement-{seller.point_of_sale_code}'
            f'-{start.date()}-{end.date()}.csv"'
        },
    )


@router.get(
    "/orders/{orderSecretId}/tickets.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
    summary="An order's tickets as a PDF (the buyer's link: the order's secret is the key)",
)
async def tickets_pdf(
    orderSecretId: Annotated[str, Path(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    request: Request,
    lang: Annotated[str | None, Query(pattern=r"^[a-z]{2}$")] = None,
    ticketId: Annotated[int | None, Query(ge=1, le=2**53 - 1)] = None,
) -> Response:
    runtime: Runtime = request.app.state.runtime
    async with read(runtime.engine) as conn:
        order = await queries.order_by_public_secret(conn, orderSecretId)
        context = await point_of_sale_context(conn, order.point_of_sale_id)
    body = await tickets.print_tickets(
        runtime.engine,
        order=order,
        organization_id=context.organization.id,
        vault=runtime.caches["barcode_vault"],
        language=lang,
        ticket_id=ticketId,
        now=runtime.clock.now(),
        actor="buyer",
    )
    name = f"tickets-{order.id}" + (f"-{ticketId}" if ticketId else "")
    return Response(
        body,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{name}.pdf"',
            "Cache-Control": "private, no-store",
        },
    )
