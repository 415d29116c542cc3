"""The spectator's side of a ticket: devices, the wallet, holder, transfer, resale, codes.

Every use case finds the ticket by its id *and* the spectator's email (a ticket belongs to the
address that owns it; another account gets ``error.ticket.unknown``), locks it (PostgreSQL:
``FOR UPDATE``; SQLite: the ``BEGIN IMMEDIATE`` writer lock), applies the rule of
:mod:`billetterie_wallet.models`, and logs the change with actor and device
(:mod:`billetterie_wallet.services.changes`).

Devices: a device holds a ticket once it opened it; the organizer's deletion then waits for each
holding device to drop it. A device drops a deleted ticket by acknowledging it, explicitly
(:func:`acknowledge_deletions`) or by rendering the wallet, which no longer shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie_wallet import db, rotating
from billetterie_wallet.errors import (
    Conflict,
    InvalidRequest,
    NotActivated,
    NotTransferable,
    ResaleRefused,
    TicketDeleted,
    TransferClosed,
    TransferLimit,
    UnknownTicket,
    UnknownTransfer,
)
from billetterie_wallet.models import (
    ACTIVATABLE,
    GONE,
    State,
    TicketView,
    TransferRules,
    TransferState,
    normalize_email,
    resale_refusal,
    transfer_refusal,
    wire_status,
)
from billetterie_wallet.services.accounts import _check_email, send_mail
from billetterie_wallet.services.changes import Change, log_changes
from billetterie_wallet.services.organizer_ops import finish_deletions

LAST_SEEN_PRECISION = timedelta(minutes=5)
REFUSALS: dict[str, type[Conflict]] = {
    "error.ticket.deleted": TicketDeleted,
    "error.transfer.not_allowed": NotTransferable,
    "error.transfer.limit_reached": TransferLimit,
    "error.resale.not_allowed": ResaleRefused,
}


@dataclass(frozen=True)
class Device:
    id: int
    uid: str


async def register_device(
    engine: AsyncEngine, *, uid: str, spectator_id: int | None, user_agent: str, now: datetime
) -> Device:
    """The device registry: a device (cookie or ``X-Device-Id``) seen, and whose it is now."""
    async with db.read(engine) as conn:
        row = (
            await conn.execute(sa.select(db.device).where(db.device.c.device_uid == uid))
        ).first()
    if (
        row is not None
        and row.spectator_id == spectator_id
        and now - row.last_seen < LAST_SEEN_PRECISION
    ):
        return Device(row.id, uid)
    try:
        async with db.transaction(engine) as conn:
            if row is None:
                pk = (
                    await conn.execute(
                        sa.insert(db.device)
                        .values(
                            device_uid=uid,
                            spectator_id=spectator_id,
                            user_agent=user_agent[:300],
                            first_seen=now,
                            last_seen=now,
                        )
                        .returning(db.device.c.id)
                    )
                ).scalar_one()
                return Device(pk, uid)
            await conn.execute(
                sa.update(db.device)
                .where(db.device.c.id == row.id)
                .values(spectator_id=spectator_id, last_seen=now, user_agent=user_agent[:300])
            )
            return Device(row.id, uid)
    except IntegrityError:  # the same new device registered by a concurrent request
        async with db.read(engine) as conn:
            pk = (
                await conn.execute(sa.select(db.device.c.id).where(db.device.c.device_uid == uid))
            ).scalar_one()
        return Device(pk, uid)


def _view(row: Any) -> TicketView:
    return TicketView(
        id=row.id,
        organizer_id=row.organizer_id,
        ticket_id=row.external_id,
        state=State(row.state),
        activated=row.activated,
        owner_email=row.owner_email,
        holder_first_name=row.holder_first_name,
        holder_last_name=row.holder_last_name,
        rules=TransferRules(
            transferable=row.transferable,
            max_transfers=row.max_transfers,
            transfer_deadline=row.transfer_deadline,
            resale_allowed=row.resale_allowed,
        ),
        transfer_count=row.transfer_count,
        activation_time=row.activation_time,
    )


async def _ticket(conn: AsyncConnection, email: str, pk: int, *, lock: bool = True) -> Any:
    query = sa.select(db.ticket).where(db.ticket.c.id == pk, db.ticket.c.owner_email == email)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None or row.state == State.DELETED:
        raise UnknownTicket("no such ticket in your wallet")
    return row


def _refuse(refusal: tuple[str, str] | None) -> None:
    if refusal is not None:
        code, detail = refusal
        raise REFUSALS[code](detail)


async def _drop_deleted(
    conn: AsyncConnection, device: Device, ticket_pks: list[int], now: datetime
) -> list[int]:
    """The device acknowledges the deletion of ``ticket_pks``; deletions that no other device
    still waits on complete. Returns the tickets that became DELETED."""
    if not ticket_pks:
        return []
    await conn.execute(
        sa.update(db.device_ticket)
        .where(
            db.device_ticket.c.device_id == device.id,
            db.device_ticket.c.ticket_id.in_(ticket_pks),
            db.device_ticket.c.deletion_acknowledged_at.is_(None),
        )
        .values(deletion_acknowledged_at=now)
    )
    still_held = {
        row[0]
        for row in (
            await conn.execute(
                sa.select(db.device_ticket.c.ticket_id).where(
                    db.device_ticket.c.ticket_id.in_(ticket_pks),
                    db.device_ticket.c.deletion_acknowledged_at.is_(None),
                )
            )
        ).all()
    }
    done: list[int] = []
    rows = (
        await conn.execute(
            sa.select(db.ticket.c.id, db.ticket.c.organizer_id).where(
                db.ticket.c.id.in_(ticket_pks),
                db.ticket.c.state == State.DELETION_PENDING.value,
            )
        )
    ).all()
    by_organizer: dict[int, list[int]] = {}
    for row in rows:
        if row.id not in still_held:
            by_organizer.setdefault(row.organizer_id, []).append(row.id)
    for organizer_id, pks in sorted(by_organizer.items()):
        await finish_deletions(
            conn,
            organizer_id,
            sorted(pks),
            now,
            reason="acknowledged",
            actor="device",
            device=device.uid,
        )
        done.extend(pks)
    return done


async def pending_deletions(engine: AsyncEngine, device: Device) -> list[dict[str, Any]]:
    """Tickets this device holds that the organizer cancelled: the device must drop them."""
    async with db.read(engine) as conn:
        rows = (
            await conn.execute(
                sa.select(db.ticket.c.id, db.ticket.c.external_id)
                .join(db.device_ticket, db.device_ticket.c.ticket_id == db.ticket.c.id)
                .where(
                    db.device_ticket.c.device_id == device.id,
                    db.device_ticket.c.deletion_acknowledged_at.is_(None),
                    db.ticket.c.state == State.DELETION_PENDING.value,
                )
            )
        ).all()
    return [{"id": r.id, "ticketId": r.external_id} for r in rows]


async def acknowledge_deletions(
    engine: AsyncEngine, *, device: Device, ticket_pks: list[int], now: datetime
) -> list[int]:
    async with db.transaction(engine) as conn:
        return await _drop_deleted(conn, device, sorted(set(ticket_pks)), now)


async def wallet(
    engine: AsyncEngine, *, email: str, device: Device, now: datetime, drop_deleted: bool
) -> dict[str, Any]:
    """The spectator's events with their tickets, privileges and transfer offers. With
    ``drop_deleted`` (the page, which shows the device's whole copy) the deleted tickets this
    device still held are acknowledged; an installed app acknowledges them itself."""
    pending = await pending_deletions(engine, device)
    if pending and drop_deleted:
        await acknowledge_deletions(
            engine, device=device, ticket_pks=[p["id"] for p in pending], now=now
        )
    async with db.read(engine) as conn:
        tickets = (
            await conn.execute(
                sa.select(
                    db.ticket,
                    db.event_table.c.name.label("event_name"),
                    db.event_table.c.start_time,
                    db.event_table.c.site,
                    db.event_table.c.city,
                    db.event_table.c.external_id.label("event_ref"),
                )
                .join(db.event_table, db.event_table.c.id == db.ticket.c.event_id)
                .where(
                    db.ticket.c.owner_email == email,
                    db.ticket.c.state.not_in(
                        [
                            State.DELETED.value,
                            State.DELETION_PENDING.value,
                            State.RETURNED_FOR_RESALE.value,
                        ]
                    ),
                )
                .order_by(db.event_table.c.start_time, db.ticket.c.id)
            )
        ).all()
        privileges = (
            await conn.execute(
                sa.select(
                    db.privilege,
                    db.privilege_definition.c.name,
                    db.privilege_definition.c.kind,
                    db.privilege_definition.c.valid_until,
                )
                .join(
                    db.privilege_definition,
                    db.privilege_definition.c.id == db.privilege.c.privilege_definition_id,
                )
                .where(db.privilege.c.owner_email == email, db.privilege.c.state != "DELETED")
                .order_by(db.privilege.c.id)
            )
        ).all()
        incoming = await _offers(conn, db.transfer.c.to_email == email)
        outgoing = await _offers(conn, db.transfer.c.from_email == email)
    events: dict[int, dict[str, Any]] = {}
    for row in tickets:
        event = events.setdefault(
            row.event_id,
            {
                "name": row.event_name,
                "start": row.start_time,
                "site": row.site,
                "city": row.city,
                "tickets": [],
            },
        )
        event["tickets"].append(
            {
                "id": row.id,
                "ticketId": row.external_id,
                "status": wire_status(row.state, row.activated),
                "holder": " ".join(n for n in (row.holder_first_name, row.holder_last_name) if n),
                "seat": _seat(row.purchase_details),
            }
        )
    return {
        "events": list(events.values()),
        "privileges": [
            {
                "privilegeId": p.external_id,
                "name": p.name,
                "kind": p.kind,
                "state": p.state,
                "validUntil": p.valid_until,
                "linkedTicketIds": p.linked_ticket_ids,
                "barcode": p.barcode,
            }
            for p in privileges
        ],
        "incoming": incoming,
        "outgoing": outgoing,
        "dropped": [p["ticketId"] for p in pending],
    }


async def _offers(conn: AsyncConnection, who: sa.ColumnElement[bool]) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(
            sa.select(db.transfer, db.ticket.c.external_id, db.event_table.c.name)
            .join(db.ticket, db.ticket.c.id == db.transfer.c.ticket_id)
            .join(db.event_table, db.event_table.c.id == db.ticket.c.event_id)
            .where(who, db.transfer.c.state == TransferState.PENDING.value)
            .order_by(db.transfer.c.id)
        )
    ).all()
    return [
        {
            "id": r.id,
            "ticketPk": r.ticket_id,
            "ticketId": r.external_id,
            "event": r.name,
            "from": r.from_email,
            "to": r.to_email,
            "expiresAt": r.expires_at,
        }
        for r in rows
    ]


def _seat(details: Any) -> str:
    if not isinstance(details, dict):
        return ""
    seat = details.get("seat")
    if isinstance(seat, dict):
        return " ".join(f"{k} {v}" for k, v in seat.items() if isinstance(v, str | int))
    return str(details.get("seatCategory") or details.get("tariff") or "")


async def open_ticket(
    engine: AsyncEngine, *, email: str, pk: int, device: Device, now: datetime
) -> dict[str, Any]:
    """The ticket as this device shows it. The device now holds it; an INJECTED ticket becomes
    DOWNLOADED. A ticket being deleted is dropped by this device instead."""
    async with db.transaction(engine) as conn:
        row = await _ticket(conn, email, pk)
        if row.state == State.DELETION_PENDING:
            await _drop_deleted(conn, device, [row.id], now)
    if row.state == State.DELETION_PENDING:  # refused once the drop is committed
        raise TicketDeleted("the organizer cancelled this ticket")
    async with db.transaction(engine) as conn:
        row = await _ticket(conn, email, pk)
        holds = (
            await conn.execute(
                sa.select(db.device_ticket.c.id).where(
                    db.device_ticket.c.device_id == device.id, db.device_ticket.c.ticket_id == pk
                )
            )
        ).first()
        if holds is None:
            await conn.execute(
                sa.insert(db.device_ticket).values(
                    organizer_id=row.organizer_id,
                    device_id=device.id,
                    ticket_id=pk,
                    first_seen=now,
                )
            )
        if row.state == State.INJECTED:
            await conn.execute(
                sa.update(db.ticket)
                .where(db.ticket.c.id == pk)
                .values(state=State.DOWNLOADED.value)
            )
            await log_changes(
                conn,
                row.organizer_id,
                [Change(pk, "ticket.downloaded", State.DOWNLOADED.value, email, device.uid)],
                now=now,
            )
        row = await _ticket(conn, email, pk, lock=False)
        event = (
            await conn.execute(sa.select(db.event_table).where(db.event_table.c.id == row.event_id))
        ).one()
        log = (
            await conn.execute(
                sa.select(db.ticket_log)
                .where(db.ticket_log.c.ticket_id == pk)
                .order_by(db.ticket_log.c.seq)
            )
        ).all()
        offer = (
            await conn.execute(
                sa.select(db.transfer).where(
                    db.transfer.c.ticket_id == pk,
                    db.transfer.c.state == TransferState.PENDING.value,
                )
            )
        ).first()
    view = _view(row)
    return {
        "id": row.id,
        "ticketId": row.external_id,
        "status": view.status,
        "state": view.state,
        "event": {
            "name": event.name,
            "start": event.start_time,
            "site": event.site,
            "city": event.city,
        },
        "seat": _seat(row.purchase_details),
        "holderFirstName": row.holder_first_name or "",
        "holderLastName": row.holder_last_name or "",
        "activationTime": row.activation_time,
        "activationMethod": row.activation_method,
        "transferRefusal": transfer_refusal(view, to_email="", now=now),
        "resaleRefusal": resale_refusal(view),
        "transfersLeft": max(0, row.max_transfers - row.transfer_count),
        "offer": None
        if offer is None
        else {"id": offer.id, "to": offer.to_email, "expiresAt": offer.expires_at},
        "log": [
            {
                "action": e.action,
                "status": e.status,
                "actor": e.actor,
                "device": e.device,
                "at": e.at,
            }
            for e in log
        ],
    }


async def _check_release(conn: AsyncConnection, row: Any, device: Device, now: datetime) -> Any:
    """May the ticket's code reach this device now? Refused before the activation time, for
    tickets that are not usable, and for devices that do not hold it. Returns the group row."""
    if row.state in GONE:
        raise TicketDeleted("the organizer cancelled this ticket")
    if row.state in (State.CONTROLLED, State.RETURNED_FOR_RESALE, State.PENDING_TRANSFER):
        raise NotActivated(f"no code for a ticket in state {row.state}")
    if row.activation_time is not None and now < row.activation_time:
        raise NotActivated(
            f"the code is released at {row.activation_time.isoformat()}",
            availableAt=row.activation_time.isoformat(),
        )
    holds = (
        await conn.execute(
            sa.select(db.device_ticket.c.id).where(
                db.device_ticket.c.device_id == device.id, db.device_ticket.c.ticket_id == row.id
            )
        )
    ).first()
    if holds is None:
        raise NotActivated("open the ticket on this device first")
    return (
        await conn.execute(
            sa.select(db.activation_group).where(
                db.activation_group.c.id == row.activation_group_id
            )
        )
    ).one()


async def _release(
    engine: AsyncEngine, *, email: str, pk: int, device: Device, now: datetime, how: str
) -> tuple[Any, Any]:
    """The ticket and its group, once the code may reach the device. Only the first release
    after the activation time writes (the ticket becomes ``*_ACTIVATED``); the 15 s refreshes
    of the code that follow only read."""
    async with db.read(engine) as conn:
        row = await _ticket(conn, email, pk, lock=False)
        if how == "offline" and row.activation_method != "offline":
            raise NotActivated(
                "this ticket's codes are only shown online", code="error.ticket.online_only"
            )
        group = await _check_release(conn, row, device, now)
    if row.activated or row.state not in ACTIVATABLE:
        return row, group
    async with db.transaction(engine) as conn:
        row = await _ticket(conn, email, pk)  # locked: one activation even when racing
        group = await _check_release(conn, row, device, now)
        if not row.activated and row.state in ACTIVATABLE:
            await conn.execute(
                sa.update(db.ticket).where(db.ticket.c.id == row.id).values(activated=True)
            )
            change = Change(
                row.id,
                "ticket.activated",
                wire_status(row.state, True),
                email,
                device.uid,
                {"release": how},
            )
            await log_changes(conn, row.organizer_id, [change], now=now)
    return row, group


async def current_code(
    engine: AsyncEngine, *, email: str, pk: int, device: Device, now: datetime
) -> dict[str, Any]:
    """The QR payload of this 15 s step (server-side codes, for the web app and the ``online``
    method)."""
    row, group = await _release(engine, email=email, pk=pk, device=device, now=now, how="online")
    secret = rotating.ticket_secret(rotating.decode_secret(group.secret), row.barcode)
    code = rotating.totp(secret, now, algorithm=group.algorithm)
    step = rotating.time_step(now)
    return {
        "payload": rotating.payload(group.group_id, row.barcode, code),
        "step": step,
        "validUntil": (step + 1) * rotating.STEP_SECONDS,
    }


async def release_secret(
    engine: AsyncEngine, *, email: str, pk: int, device: Device, now: datetime
) -> dict[str, Any]:
    """The ticket's code secret, for a device that computes codes offline (method ``offline``)."""
    row, group = await _release(engine, email=email, pk=pk, device=device, now=now, how="offline")
    secret = rotating.ticket_secret(rotating.decode_secret(group.secret), row.barcode)
    return {
        "ticketId": row.external_id,
        "groupId": group.group_id,
        "barcode": row.barcode,
        "secret": rotating.encode_secret(secret),
        "algorithm": group.algorithm,
        "stepSeconds": rotating.STEP_SECONDS,
        "digits": rotating.DIGITS,
        "payloadFormat": "BW1|<groupId percent-encoded>|<code>|<barcode>",
    }


async def assign_holder(
    engine: AsyncEngine,
    *,
    email: str,
    pk: int,
    first_name: str,
    last_name: str,
    device: Device,
    now: datetime,
) -> None:
    first_name, last_name = first_name.strip(), last_name.strip()
    if not first_name or not last_name or len(first_name) > 100 or len(last_name) > 100:
        raise InvalidRequest(
            "give the holder's first and last name (up to 100 characters each)",
            code="error.holder.invalid",
        )
    async with db.transaction(engine) as conn:
        row = await _ticket(conn, email, pk)
        if row.state in GONE:
            raise TicketDeleted("the organizer cancelled this ticket")
        if row.state in (State.CONTROLLED, State.PENDING_TRANSFER, State.RETURNED_FOR_RESALE):
            raise NotTransferable(
                f"the holder cannot change while the ticket is {row.state}",
                code="error.holder.not_allowed",
            )
        await conn.execute(
            sa.update(db.ticket)
            .where(db.ticket.c.id == pk)
            .values(
                holder_first_name=first_name,
                holder_last_name=last_name,
                state=State.ASSIGNED.value,
            )
        )
        await log_changes(
            conn,
            row.organizer_id,
            [
                Change(
                    pk,
                    "ticket.assigned",
                    wire_status(State.ASSIGNED, row.activated),
                    email,
                    device.uid,
                    {"firstName": first_name, "lastName": last_name},
                )
            ],
            now=now,
        )


async def offer_transfer(
    engine: AsyncEngine,
    *,
    email: str,
    pk: int,
    to_email: str,
    device: Device,
    now: datetime,
    offer_lifetime: timedelta,
    base_url: str,
) -> int:
    """Offer the ticket to ``to_email``: PENDING_TRANSFER until accepted, rejected, cancelled
    or expired (``offer_lifetime``, capped by the organizer's transfer deadline)."""
    to_email = _check_email(to_email)
    async with db.transaction(engine) as conn:
        row = await _ticket(conn, email, pk)
        view = _view(row)
        _refuse(transfer_refusal(view, to_email=to_email, now=now))
        expires = now + offer_lifetime
        if row.transfer_deadline is not None:
            expires = min(expires, row.transfer_deadline)
        offer_id = (
            await conn.execute(
                sa.insert(db.transfer)
                .values(
                    organizer_id=row.organizer_id,
                    ticket_id=pk,
                    from_email=email,
                    to_email=to_email,
                    state=TransferState.PENDING.value,
                    previous_state=row.state,
                    created_at=now,
                    expires_at=expires,
                )
                .returning(db.transfer.c.id)
            )
        ).scalar_one()
        await conn.execute(
            sa.update(db.ticket)
            .where(db.ticket.c.id == pk)
            .values(state=State.PENDING_TRANSFER.value)
        )
        await log_changes(
            conn,
            row.organizer_id,
            [
                Change(
                    pk,
                    "transfer.offered",
                    State.PENDING_TRANSFER.value,
                    email,
                    device.uid,
                    {"to": to_email},
                )
            ],
            now=now,
        )
        await send_mail(
            conn,
            to=to_email,
            subject=f"{email} sends you a ticket",
            body=f"{email} offers you ticket {row.external_id}. Sign in to accept or decline it "
            f"before {expires.isoformat()}:\n\n{base_url}/app/tickets",
            now=now,
        )
    return int(offer_id)


async def _pending_offer(conn: AsyncConnection, offer_id: int, now: datetime) -> Any:
    query = sa.select(db.transfer).where(db.transfer.c.id == offer_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    offer = (await conn.execute(query)).first()
    if offer is None:
        raise UnknownTransfer("no such transfer offer")
    if offer.state != TransferState.PENDING or offer.expires_at <= now:
        raise TransferClosed("this offer is no longer open")
    return offer


async def cancel_transfer(
    engine: AsyncEngine, *, email: str, pk: int, device: Device, now: datetime
) -> None:
    """The sender withdraws the open offer; the ticket returns to its state before it."""
    async with db.transaction(engine) as conn:
        row = await _ticket(conn, email, pk)
        offer = (
            await conn.execute(
                sa.select(db.transfer.c.id).where(
                    db.transfer.c.ticket_id == pk,
                    db.transfer.c.state == TransferState.PENDING.value,
                )
            )
        ).first()
        if offer is None:
            raise UnknownTransfer("this ticket is not offered to anyone")
        offer = await _pending_offer(conn, offer.id, now)
        await _close(conn, offer, TransferState.CANCELLED, now)
        await conn.execute(
            sa.update(db.ticket).where(db.ticket.c.id == pk).values(state=offer.previous_state)
        )
        await log_changes(
            conn,
            row.organizer_id,
            [
                Change(
                    pk,
                    "transfer.cancelled",
                    wire_status(offer.previous_state, row.activated),
                    email,
                    device.uid,
                    {"to": offer.to_email},
                )
            ],
            now=now,
        )


async def _close(conn: AsyncConnection, offer: Any, state: TransferState, now: datetime) -> None:
    await conn.execute(
        sa.update(db.transfer)
        .where(db.transfer.c.id == offer.id)
        .values(state=state.value, resolved_at=now)
    )


async def answer_transfer(
    engine: AsyncEngine,
    *,
    email: str,
    offer_id: int,
    accept: bool,
    device: Device,
    now: datetime,
) -> int:
    """The recipient accepts (the ticket becomes theirs, TRANSFERRED, holder cleared, one more
    transfer counted) or rejects (FAILURE_TRANSFER, the ticket stays with its sender).
    Returns the ticket id."""
    async with db.transaction(engine) as conn:
        offer = await _pending_offer(conn, offer_id, now)
        if offer.to_email != normalize_email(email):
            raise UnknownTransfer("no such transfer offer")
        row = await _ticket(conn, offer.from_email, offer.ticket_id)
        if accept:
            await _close(conn, offer, TransferState.ACCEPTED, now)
            await conn.execute(
                sa.update(db.ticket)
                .where(db.ticket.c.id == row.id)
                .values(
                    owner_email=offer.to_email,
                    state=State.TRANSFERRED.value,
                    activated=False,
                    holder_first_name=None,
                    holder_last_name=None,
                    transfer_count=db.ticket.c.transfer_count + 1,
                )
            )
            # The sender's devices no longer hold it: nothing to wait for at deletion.
            await conn.execute(
                sa.delete(db.device_ticket).where(db.device_ticket.c.ticket_id == row.id)
            )
            change = Change(
                row.id,
                "transfer.accepted",
                State.TRANSFERRED.value,
                email,
                device.uid,
                {"from": offer.from_email},
            )
        else:
            await _close(conn, offer, TransferState.REJECTED, now)
            await conn.execute(
                sa.update(db.ticket)
                .where(db.ticket.c.id == row.id)
                .values(state=State.FAILURE_TRANSFER.value)
            )
            change = Change(
                row.id,
                "transfer.rejected",
                State.FAILURE_TRANSFER.value,
                email,
                device.uid,
                {"from": offer.from_email},
            )
        await log_changes(conn, row.organizer_id, [change], now=now)
    return int(row.id)


async def return_for_resale(
    engine: AsyncEngine, *, email: str, pk: int, device: Device, now: datetime
) -> None:
    """Give the ticket back to the organizer for resale (when its rules allow it): the
    organizer reads it in the feedback feed and cancels or resells it."""
    async with db.transaction(engine) as conn:
        row = await _ticket(conn, email, pk)
        _refuse(resale_refusal(_view(row)))
        await conn.execute(
            sa.update(db.ticket)
            .where(db.ticket.c.id == pk)
            .values(state=State.RETURNED_FOR_RESALE.value)
        )
        await log_changes(
            conn,
            row.organizer_id,
            [
                Change(
                    pk,
                    "ticket.returned_for_resale",
                    State.RETURNED_FOR_RESALE.value,
                    email,
                    device.uid,
                )
            ],
            now=now,
        )
