"""What the box office pushes after injection, and what it reads back (seed 004: "Push
cancelled", "Push controlled", "Feedback interface"), plus the ticket-status-log report.

- :func:`delete_tickets`: a ticket some device holds goes DELETION_PENDING until each of those
  devices acknowledged (``services.devices.acknowledge_deletions``) or the deletion timeout passed
  (:func:`sweep`); a ticket no device holds goes DELETED at once. Idempotent.
- :func:`control_tickets`: CONTROLLED; a pending transfer offer is withdrawn; no longer
  transferable. Idempotent.
- :func:`feedback`: the organizer's changes (log entries) after the position its one consumer
  presents (an opaque key), ``limit`` at a time, grouped by ticket with each ticket's current
  state; presenting a key records the consumer's position there. Every change is delivered
  exactly once; a ticket changed again later comes again, with its new entries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie_wallet import db, rotating
from billetterie_wallet.errors import (
    InvalidFeedbackKey,
    NotFound,
    PrivilegeDeleted,
    PrivilegeUsed,
    UnknownPrivilege,
)
from billetterie_wallet.models import GONE, State, TransferState, wire_status
from billetterie_wallet.services.changes import Change, log_changes

Result = dict[str, Any]
FEEDBACK_LIMIT = 1000
FEEDBACK_COLUMNS = (
    "id",
    "external_id",
    "state",
    "activated",
    "owner_email",
    "holder_first_name",
    "holder_last_name",
    "transfer_count",
    "controlled_at",
    "deleted_at",
    "updated_at",
)
CHUNK = 500


async def _tickets_by_id(
    conn: AsyncConnection, organizer_id: int, ids: Sequence[str], *, lock: bool
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    unique = sorted(set(ids))
    for start in range(0, len(unique), CHUNK):
        query = (
            sa.select(db.ticket)
            .where(
                db.ticket.c.organizer_id == organizer_id,
                db.ticket.c.external_id.in_(unique[start : start + CHUNK]),
            )
            .order_by(db.ticket.c.id)
        )
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        for row in (await conn.execute(query)).all():
            found[row.external_id] = row
    return found


async def _withdraw_offers(conn: AsyncConnection, ticket_pks: list[int], now: datetime) -> None:
    if ticket_pks:
        await conn.execute(
            sa.update(db.transfer)
            .where(
                db.transfer.c.ticket_id.in_(ticket_pks),
                db.transfer.c.state == TransferState.PENDING.value,
            )
            .values(state=TransferState.CANCELLED.value, resolved_at=now)
        )


async def _holding_devices(conn: AsyncConnection, ticket_pks: list[int]) -> set[int]:
    """Tickets that some device holds and has not yet dropped."""
    held: set[int] = set()
    for start in range(0, len(ticket_pks), CHUNK):
        query = sa.select(db.device_ticket.c.ticket_id).where(
            db.device_ticket.c.ticket_id.in_(ticket_pks[start : start + CHUNK]),
            db.device_ticket.c.deletion_acknowledged_at.is_(None),
        )
        held.update(row[0] for row in (await conn.execute(query)).all())
    return held


async def delete_tickets(
    engine: AsyncEngine,
    *,
    organizer_id: int,
    ticket_ids: Sequence[str],
    reason: str,
    now: datetime,
    actor: str,
) -> list[Result]:
    async with db.transaction(engine) as conn:
        rows = await _tickets_by_id(conn, organizer_id, ticket_ids, lock=True)
        live = [row for row in rows.values() if row.state not in GONE]
        held = await _holding_devices(conn, [row.id for row in live])
        pending = [row.id for row in live if row.id in held]
        deleted = [row.id for row in live if row.id not in held]
        if pending:
            await conn.execute(
                sa.update(db.ticket)
                .where(db.ticket.c.id.in_(pending))
                .values(
                    state=State.DELETION_PENDING.value,
                    deletion_reason=reason,
                    deletion_requested_at=now,
                )
            )
        if deleted:
            await conn.execute(
                sa.update(db.ticket)
                .where(db.ticket.c.id.in_(deleted))
                .values(
                    state=State.DELETED.value,
                    deletion_reason=reason,
                    deletion_requested_at=now,
                    deleted_at=now,
                )
            )
        await _withdraw_offers(conn, [row.id for row in live], now)
        changes = [
            Change(
                pk,
                "ticket.deletion_requested",
                State.DELETION_PENDING.value,
                actor,
                data={"reason": reason},
            )
            for pk in pending
        ] + [
            Change(pk, "ticket.deleted", State.DELETED.value, actor, data={"reason": reason})
            for pk in deleted
        ]
        await log_changes(conn, organizer_id, changes, now=now)
    pending_set, deleted_set = set(pending), set(deleted)
    results = []
    for ticket_id in ticket_ids:
        row = rows.get(ticket_id)
        if row is None:
            results.append(
                {
                    "ticketId": ticket_id,
                    "status": "ERROR",
                    "code": "error.ticket.unknown",
                    "detail": "no such ticket",
                }
            )
        elif row.id in pending_set:
            results.append({"ticketId": ticket_id, "status": State.DELETION_PENDING.value})
        elif row.id in deleted_set:
            results.append({"ticketId": ticket_id, "status": State.DELETED.value})
        else:
            results.append({"ticketId": ticket_id, "status": row.state})
    return results


async def control_tickets(
    engine: AsyncEngine,
    *,
    organizer_id: int,
    ticket_ids: Sequence[str],
    now: datetime,
    actor: str,
) -> list[Result]:
    async with db.transaction(engine) as conn:
        rows = await _tickets_by_id(conn, organizer_id, ticket_ids, lock=True)
        todo = [
            row.id
            for row in rows.values()
            if row.state not in GONE and row.state != State.CONTROLLED
        ]
        if todo:
            await conn.execute(
                sa.update(db.ticket)
                .where(db.ticket.c.id.in_(todo))
                .values(state=State.CONTROLLED.value, controlled_at=now)
            )
            await _withdraw_offers(conn, todo, now)
            await log_changes(
                conn,
                organizer_id,
                [Change(pk, "ticket.controlled", State.CONTROLLED.value, actor) for pk in todo],
                now=now,
            )
    results = []
    for ticket_id in ticket_ids:
        row = rows.get(ticket_id)
        if row is None:
            results.append(
                {
                    "ticketId": ticket_id,
                    "status": "ERROR",
                    "code": "error.ticket.unknown",
                    "detail": "no such ticket",
                }
            )
        elif row.state in GONE:
            results.append(
                {
                    "ticketId": ticket_id,
                    "status": "ERROR",
                    "code": "error.ticket.deleted",
                    "detail": f"the ticket is {row.state}",
                }
            )
        else:
            results.append({"ticketId": ticket_id, "status": State.CONTROLLED.value})
    return results


# --- feedback -------------------------------------------------------------------------------


def _sign(secret: str, payload: bytes) -> str:
    mac = hmac.new(secret.encode(), b"feedback:" + payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def feedback_key(secret: str, organizer_id: int, position: int) -> str:
    payload = orjson.dumps({"o": organizer_id, "p": position})
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_sign(secret, payload)}"


def read_feedback_key(secret: str, organizer_id: int, key: str) -> int:
    body, _, signature = key.partition(".")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = orjson.loads(payload)
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidFeedbackKey("the pagination key is not one this feed issued") from None
    if (
        not hmac.compare_digest(_sign(secret, payload), signature)
        or not isinstance(data, dict)
        or data.get("o") != organizer_id
        or not isinstance(data.get("p"), int)
    ):
        raise InvalidFeedbackKey("the pagination key is not one this feed issued")
    return int(data["p"])


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def feedback(
    engine: AsyncEngine,
    *,
    organizer_id: int,
    key: str | None,
    limit: int,
    secret: str,
) -> dict[str, Any]:
    """Up to ``limit`` changes after the consumer's position, as changed tickets: with ``key``,
    after that key (and the consumer's position is recorded there); without, after the
    recorded position."""
    limit = max(1, min(limit, FEEDBACK_LIMIT))
    async with db.transaction(engine) as conn:
        if key is not None:
            position = read_feedback_key(secret, organizer_id, key)
            await conn.execute(
                sa.update(db.organizer)
                .where(db.organizer.c.id == organizer_id)
                .values(feedback_position=position)
            )
        else:
            position = (
                await conn.execute(
                    sa.select(db.organizer.c.feedback_position).where(
                        db.organizer.c.id == organizer_id
                    )
                )
            ).scalar_one()
    async with db.read(engine) as conn:
        log_rows = (
            await conn.execute(
                sa.select(db.ticket_log)
                .where(db.ticket_log.c.organizer_id == organizer_id, db.ticket_log.c.seq > position)
                .order_by(db.ticket_log.c.seq)
                .limit(limit + 1)
            )
        ).all()
        more = len(log_rows) > limit
        log_rows = log_rows[:limit]
        logs: dict[int, list[dict[str, Any]]] = {}  # by ticket, in order of first change
        for log in log_rows:
            logs.setdefault(log.ticket_id, []).append(
                {
                    "action": log.action,
                    "status": log.status,
                    "actor": log.actor,
                    "device": log.device,
                    "at": _iso(log.at),
                    "data": log.data,
                }
            )
        tickets: dict[int, Any] = {}
        pks = list(logs)
        for start in range(0, len(pks), CHUNK):
            query = (
                sa.select(
                    *(db.ticket.c[name] for name in FEEDBACK_COLUMNS),
                    db.event_table.c.external_id.label("event_external_id"),
                )
                .join(db.event_table, db.event_table.c.id == db.ticket.c.event_id)
                .where(db.ticket.c.id.in_(pks[start : start + CHUNK]))
            )
            tickets.update((row.id, row) for row in (await conn.execute(query)).all())
    page = []
    for pk, entries in logs.items():
        row = tickets[pk]
        page.append(
            {
                "ticketId": row.external_id,
                "eventId": row.event_external_id,
                "status": wire_status(row.state, row.activated),
                "walletOwner": {"email": row.owner_email},
                "holder": (
                    {"firstName": row.holder_first_name, "lastName": row.holder_last_name}
                    if row.holder_first_name or row.holder_last_name
                    else None
                ),
                "transferCount": row.transfer_count,
                "controlledAt": _iso(row.controlled_at),
                "deletedAt": _iso(row.deleted_at),
                "updatedAt": _iso(row.updated_at),
                "logEntries": entries,
            }
        )
    last = log_rows[-1].seq if log_rows else position
    return {
        "tickets": page,
        "nextKey": feedback_key(secret, organizer_id, last),
        "hasMore": more,
    }


# --- report ---------------------------------------------------------------------------------


async def ticket_status_log(
    engine: AsyncEngine,
    *,
    organizer_id: int,
    ticket_id: str | None,
    event_id: str | None,
    since: datetime | None,
    until: datetime | None,
    after: int,
    limit: int,
) -> dict[str, Any]:
    """The log entries of the organizer's tickets in time order, filtered; ``after`` is the
    last entry id of the previous page (``nextCursor``)."""
    limit = max(1, min(limit, FEEDBACK_LIMIT))
    query = (
        sa.select(
            db.ticket_log,
            db.ticket.c.external_id.label("ticket_external_id"),
            db.event_table.c.external_id.label("event_external_id"),
        )
        .join(db.ticket, db.ticket.c.id == db.ticket_log.c.ticket_id)
        .join(db.event_table, db.event_table.c.id == db.ticket.c.event_id)
        .where(db.ticket_log.c.organizer_id == organizer_id, db.ticket_log.c.id > after)
        .order_by(db.ticket_log.c.id)
        .limit(limit + 1)
    )
    if ticket_id is not None:
        query = query.where(db.ticket.c.external_id == ticket_id)
    if event_id is not None:
        query = query.where(db.event_table.c.external_id == event_id)
    if since is not None:
        query = query.where(db.ticket_log.c.at >= since)
    if until is not None:
        query = query.where(db.ticket_log.c.at < until)
    async with db.read(engine) as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "entries": [
            {
                "ticketId": r.ticket_external_id,
                "eventId": r.event_external_id,
                "action": r.action,
                "status": r.status,
                "actor": r.actor,
                "device": r.device,
                "at": _iso(r.at),
                "data": r.data,
            }
            for r in rows
        ],
        "nextCursor": str(rows[-1].id) if more else None,
    }


# --- activation groups and privileges --------------------------------------------------------


async def group_secret(engine: AsyncEngine, *, organizer_id: int, group_id: str) -> dict[str, Any]:
    """What an offline scanner of the group needs: the group secret and the code parameters."""
    async with db.read(engine) as conn:
        row = (
            await conn.execute(
                sa.select(db.activation_group).where(
                    db.activation_group.c.organizer_id == organizer_id,
                    db.activation_group.c.group_id == group_id,
                )
            )
        ).first()
    if row is None:
        raise NotFound(f"no activation group {group_id!r}", code="error.activation.unknown_group")
    return {
        "groupId": row.group_id,
        "secret": row.secret,
        "algorithm": row.algorithm,
        "stepSeconds": rotating.STEP_SECONDS,
        "digits": rotating.DIGITS,
        "window": rotating.WINDOW,
        "ticketSecret": "HMAC-SHA256(base64decode(secret), utf8(barcode))",
    }


async def use_privilege(
    engine: AsyncEngine, *, organizer_id: int, privilege_id: str, now: datetime, actor: str
) -> dict[str, Any]:
    """Mark a privilege used; a privilege is usable once (the second use is refused)."""
    async with db.transaction(engine) as conn:
        row = (
            await conn.execute(
                sa.update(db.privilege)
                .where(
                    db.privilege.c.organizer_id == organizer_id,
                    db.privilege.c.external_id == privilege_id,
                    db.privilege.c.state == "INJECTED",
                )
                .values(state="USED", used_at=now, used_by=actor, updated_at=now)
                .returning(db.privilege.c.id)
            )
        ).first()
        if row is None:
            existing = (
                await conn.execute(
                    sa.select(db.privilege.c.state, db.privilege.c.used_at).where(
                        db.privilege.c.organizer_id == organizer_id,
                        db.privilege.c.external_id == privilege_id,
                    )
                )
            ).first()
            if existing is None:
                raise UnknownPrivilege(f"no privilege {privilege_id!r}")
            if existing.state == "DELETED":
                raise PrivilegeDeleted("the privilege was cancelled; it cannot be used")
            raise PrivilegeUsed(
                f"the privilege was already used at {_iso(existing.used_at)}",
                usedAt=_iso(existing.used_at),
            )
        await db.record(
            conn,
            organizer_id=organizer_id,
            action="wallet.privilege.used",
            actor=actor,
            at=now,
            privilege_id=privilege_id,
        )
    return {"privilegeId": privilege_id, "status": "USED", "usedAt": _iso(now)}


async def delete_privileges(
    engine: AsyncEngine,
    *,
    organizer_id: int,
    privilege_ids: Sequence[str],
    reason: str,
    now: datetime,
    actor: str,
) -> list[Result]:
    """Revoke privileges the organizer cancelled or invalidated: DELETED at once (a privilege
    is used online, by ``use``, so no device copy has to be waited for), gone from the wallet,
    no longer usable, not injected again. Idempotent; a used privilege can be deleted too."""
    p = db.privilege.c
    found: dict[str, Any] = {}
    unique = sorted(set(privilege_ids))
    async with db.transaction(engine) as conn:
        for start in range(0, len(unique), CHUNK):
            query = (
                sa.select(p.id, p.external_id, p.state)
                .where(
                    p.organizer_id == organizer_id, p.external_id.in_(unique[start : start + CHUNK])
                )
                .order_by(p.id)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            found.update({row.external_id: row for row in (await conn.execute(query)).all()})
        live = sorted(row.id for row in found.values() if row.state != "DELETED")
        for start in range(0, len(live), CHUNK):
            await conn.execute(
                sa.update(db.privilege)
                .where(p.id.in_(live[start : start + CHUNK]))
                .values(state="DELETED", deletion_reason=reason, deleted_at=now, updated_at=now)
            )
        if live:
            await db.record(
                conn,
                organizer_id=organizer_id,
                action="wallet.privilege.deleted",
                actor=actor,
                at=now,
                reason=reason,
                privilege_ids=sorted(r.external_id for r in found.values() if r.state != "DELETED"),
            )
    return [
        {"privilegeId": privilege_id, "status": "DELETED"}
        if privilege_id in found
        else {
            "privilegeId": privilege_id,
            "status": "ERROR",
            "code": "error.privilege.unknown",
            "detail": "no such privilege",
        }
        for privilege_id in privilege_ids
    ]


# --- timeouts -------------------------------------------------------------------------------


async def sweep(
    engine: AsyncEngine, *, now: datetime, deletion_timeout: timedelta
) -> dict[str, int]:
    """Finish deletions that waited longer than ``deletion_timeout`` for devices, and expire
    transfer offers past their time (the ticket goes FAILURE_TRANSFER, back with its sender).
    Safe to run from several processes: each row moves once, under its organizer's lock."""
    counts = {"deleted": 0, "expired_transfers": 0}
    async with db.transaction(engine) as conn:
        due = (
            await conn.execute(
                sa.select(db.ticket.c.id, db.ticket.c.organizer_id)
                .where(
                    db.ticket.c.state == State.DELETION_PENDING.value,
                    db.ticket.c.deletion_requested_at <= now - deletion_timeout,
                )
                .order_by(db.ticket.c.organizer_id, db.ticket.c.id)
                .limit(5000)
            )
        ).all()
        by_organizer: dict[int, list[int]] = {}
        for row in due:
            by_organizer.setdefault(row.organizer_id, []).append(row.id)
        for organizer_id, pks in by_organizer.items():
            await finish_deletions(conn, organizer_id, pks, now, reason="timeout")
            counts["deleted"] += len(pks)
        offers = (
            await conn.execute(
                sa.select(db.transfer.c.id, db.transfer.c.ticket_id, db.transfer.c.organizer_id)
                .where(
                    db.transfer.c.state == TransferState.PENDING.value,
                    db.transfer.c.expires_at <= now,
                )
                .order_by(db.transfer.c.organizer_id, db.transfer.c.id)
                .limit(5000)
            )
        ).all()
        for offer in offers:
            await conn.execute(
                sa.update(db.transfer)
                .where(db.transfer.c.id == offer.id)
                .values(state=TransferState.EXPIRED.value, resolved_at=now)
            )
            await conn.execute(
                sa.update(db.ticket)
                .where(
                    db.ticket.c.id == offer.ticket_id,
                    db.ticket.c.state == State.PENDING_TRANSFER.value,
                )
                .values(state=State.FAILURE_TRANSFER.value)
            )
            await log_changes(
                conn,
                offer.organizer_id,
                [
                    Change(
                        offer.ticket_id, "transfer.expired", State.FAILURE_TRANSFER.value, "system"
                    )
                ],
                now=now,
            )
            counts["expired_transfers"] += 1
    return counts


async def finish_deletions(
    conn: AsyncConnection,
    organizer_id: int,
    pks: list[int],
    now: datetime,
    *,
    reason: str,
    actor: str = "system",
    device: str | None = None,
) -> None:
    """DELETION_PENDING -> DELETED for ``pks`` (callers checked that each is due)."""
    if not pks:
        return
    await conn.execute(
        sa.update(db.ticket)
        .where(db.ticket.c.id.in_(pks), db.ticket.c.state == State.DELETION_PENDING.value)
        .values(state=State.DELETED.value, deleted_at=now)
    )
    await log_changes(
        conn,
        organizer_id,
        [
            Change(pk, "ticket.deleted", State.DELETED.value, actor, device, {"after": reason})
            for pk in pks
        ],
        now=now,
    )
