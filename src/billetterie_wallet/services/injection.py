"""Injection of tickets and digital privileges (seed 004: "Tickets external printing" and
"Inject digital privileges").

Contract of :func:`inject_tickets`:

- at most :data:`MAX_BATCH` items, else the whole call is refused
  (``error.request.batch_too_large``);
- each item is validated on its own; a refused item gets ``ERROR`` with a stable code and changes
  nothing, the others go in;
- idempotent by ``ticketId``: the same ticket again is ``UNCHANGED`` (and no feedback change);
  a changed one is ``UPDATED``; a new one ``CREATED`` with status INJECTED;
- the event is created on first sight and updated when a ticket brings new event data;
- the activation group is created on first sight, with a fresh random secret;
- a ticket the organizer already cancelled (DELETION_PENDING, DELETED) is not re-injected.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie_wallet import db, rotating
from billetterie_wallet.errors import BatchTooLarge
from billetterie_wallet.models import GONE, State, wire_status
from billetterie_wallet.schemas import MAX_BATCH, EventIn, PrivilegeIn, TicketIn
from billetterie_wallet.services.changes import Change, append_log

Result = dict[str, Any]
CHUNK = 500
ATTEMPTS = 3


def describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "(item)"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


def fingerprint(model: BaseModel) -> str:
    """The item's canonical JSON, hashed. Raises ValueError for integers beyond 64 bits, which
    the databases' JSON columns cannot hold either."""
    data = model.model_dump(by_alias=True)  # free-form parts are finite (schemas.FreeForm)
    try:
        text = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        raise ValueError("numbers must fit in 64 bits") from None
    return hashlib.sha256(text).hexdigest()


def _error(key: str, id_: str, code: str, detail: str) -> Result:
    return {key: id_, "status": "ERROR", "code": code, "detail": detail}


def _parse(
    items: Sequence[Any], model: type[BaseModel], key: str, id_field: str
) -> tuple[list[Result | None], list[tuple[int, Any, str]]]:
    """Per-item validation: results for refused items, and (index, model, fingerprint) of the
    others."""
    if len(items) > MAX_BATCH:
        raise BatchTooLarge(
            f"at most {MAX_BATCH} items per call, got {len(items)}", maximum=MAX_BATCH
        )
    results: list[Result | None] = [None] * len(items)
    valid: list[tuple[int, Any, str]] = []
    seen: set[str] = set()
    for index, raw in enumerate(items):
        raw_id = raw.get(key) if isinstance(raw, dict) else None
        shown = str(raw_id) if isinstance(raw_id, str | int) else f"#{index}"
        invalid = "error.ticket.invalid" if key == "ticketId" else "error.privilege.invalid"
        try:
            item = model.model_validate(raw)
            digest = fingerprint(item)
        except ValidationError as exc:
            results[index] = _error(key, shown, invalid, describe(exc))
            continue
        except ValueError as exc:
            results[index] = _error(key, shown, invalid, str(exc))
            continue
        item_id = getattr(item, id_field)
        if item_id in seen:
            results[index] = _error(
                key,
                item_id,
                "error.request.duplicate_in_batch",
                f"{key} appears twice in the batch",
            )
            continue
        seen.add(item_id)
        valid.append((index, item, digest))
    return results, valid


async def _select_in(
    conn: AsyncConnection,
    table: sa.Table,
    column: str,
    organizer_id: int,
    values: list[str],
    *,
    lock: bool = False,
    columns: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Rows by business key; with ``lock`` (PostgreSQL) they stay locked, in id order."""
    found: dict[str, Any] = {}
    values = sorted(set(values))
    for start in range(0, len(values), CHUNK):
        chunk = values[start : start + CHUNK]
        selected = [table.c[c] for c in columns] if columns else [table]
        query = sa.select(*selected).where(
            table.c.organizer_id == organizer_id, table.c[column].in_(chunk)
        )
        if lock and conn.dialect.name == "postgresql":
            query = query.order_by(table.c.id).with_for_update()
        for row in (await conn.execute(query)).all():
            found[row._mapping[column]] = row
    return found


def _event_values(event: EventIn) -> dict[str, Any]:
    address = event.address
    return {
        "name": event.name,
        "start_time": event.start_time,
        "expiration_date": event.expiration_date,
        "site": address.site if address else None,
        "city": address.city if address else None,
        "country_code": address.country_code.upper() if address and address.country_code else None,
        "zip": address.zip if address else None,
        "details": event.metadata,
    }


async def _events(
    conn: AsyncConnection, organizer_id: int, events: dict[str, EventIn], now: datetime
) -> dict[str, int]:
    """Create events seen for the first time, update those whose data changed; their ids."""
    existing = await _select_in(conn, db.event_table, "external_id", organizer_id, list(events))
    ids = {external: row.id for external, row in existing.items()}
    inserts, updates = [], []
    for external, event in events.items():
        values = _event_values(event)
        row = existing.get(external)
        if row is None:
            inserts.append(
                {
                    "organizer_id": organizer_id,
                    "external_id": external,
                    "created_at": now,
                    "updated_at": now,
                    **values,
                }
            )
        elif any(getattr(row, k) != v for k, v in values.items()):
            updates.append({"_id": row.id, "updated_at": now, **values})
    if inserts:
        query = sa.insert(db.event_table).returning(
            db.event_table.c.id, db.event_table.c.external_id
        )
        for row in (await conn.execute(query, inserts)).all():
            ids[row.external_id] = row.id
    if updates:
        columns = [c for c in updates[0] if c != "_id"]
        await conn.execute(
            sa.update(db.event_table)
            .where(db.event_table.c.id == sa.bindparam("_id"))
            .values({c: sa.bindparam(c) for c in columns}),
            updates,
        )
    return ids


async def _groups(
    conn: AsyncConnection, organizer_id: int, groups: dict[str, str], now: datetime
) -> dict[str, int]:
    existing = await _select_in(conn, db.activation_group, "group_id", organizer_id, list(groups))
    ids = {group: row.id for group, row in existing.items()}
    inserts = [
        {
            "organizer_id": organizer_id,
            "group_id": group,
            "secret": rotating.encode_secret(secrets.token_bytes(32)),
            "algorithm": algorithm,
            "created_at": now,
        }
        for group, algorithm in groups.items()
        if group not in ids
    ]
    if inserts:
        query = sa.insert(db.activation_group).returning(
            db.activation_group.c.id, db.activation_group.c.group_id
        )
        for row in (await conn.execute(query, inserts)).all():
            ids[row.group_id] = row.id
    return ids


def _ticket_values(
    item: TicketIn, event_id: int, group_id: int, default_max: int, digest: str
) -> dict[str, Any]:
    rules = item.transfer_rules
    spectator = item.spectator_details
    activation = item.activation_parameters
    return {
        "event_id": event_id,
        "barcode": item.security.barcode,
        "purchase_details": item.purchase_details,
        "spectator_first_name": spectator.first_name,
        "spectator_last_name": spectator.last_name,
        "spectator_email": spectator.email,
        "spectator_gender": spectator.gender,
        "activation_group_id": group_id,
        "activation_method": activation.method,
        "activation_time": activation.time,
        "transferable": rules.transferable,
        "max_transfers": default_max if rules.max_transfers is None else rules.max_transfers,
        "transfer_deadline": rules.transfer_deadline,
        "resale_allowed": rules.resale_allowed,
        "injected_hash": digest,
    }


async def inject_tickets(
    engine: AsyncEngine,
    *,
    organizer_id: int,
    items: Sequence[Any],
    default_max_transfers: int,
    now: datetime,
    actor: str,
) -> list[Result]:
    """Inject a batch of tickets (see the module docstring); one result per item, in order."""
    results, valid = _parse(items, TicketIn, "ticketId", "ticket_id")
    for attempt in range(ATTEMPTS):
        if not valid:
            break
        try:
            async with db.transaction(engine) as conn:
                await _inject_valid(
                    conn, organizer_id, valid, results, default_max_transfers, now, actor
                )
            break
        except IntegrityError:
            # A concurrent batch inserted one of these tickets, events or groups first: the
            # next attempt finds them and updates instead.
            if attempt == ATTEMPTS - 1:
                raise
    return [r for r in results if r is not None]


async def _inject_valid(
    conn: AsyncConnection,
    organizer_id: int,
    valid: list[tuple[int, TicketIn, str]],
    results: list[Result | None],
    default_max: int,
    now: datetime,
    actor: str,
) -> None:
    events: dict[str, EventIn] = {}
    groups: dict[str, str] = {}
    for _, item, _digest in valid:
        events[item.event.id] = item.event  # the last ticket's event data wins
        groups.setdefault(item.activation_parameters.group_id, item.activation_parameters.algorithm)
    # Known tickets are locked first (tickets before the organizer's sequence row, the order
    # every use case takes), then events and groups are brought up to date.
    existing = await _select_in(
        conn,
        db.ticket,
        "external_id",
        organizer_id,
        [i.ticket_id for _, i, _d in valid],
        lock=True,
        columns=("id", "external_id", "state", "activated", "owner_email", "injected_hash"),
    )
    event_ids = await _events(conn, organizer_id, events, now)
    group_ids = await _groups(conn, organizer_id, groups, now)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for index, item, digest in valid:
        values = _ticket_values(
            item,
            event_ids[item.event.id],
            group_ids[item.activation_parameters.group_id],
            default_max,
            digest,
        )
        row = existing.get(item.ticket_id)
        if row is None:
            inserts.append(
                {
                    "organizer_id": organizer_id,
                    "external_id": item.ticket_id,
                    "state": State.INJECTED.value,
                    "activated": False,
                    "owner_email": item.spectator_details.email,
                    "transfer_count": 0,
                    "created_at": now,
                    "updated_at": now,
                    **values,
                }
            )
            results[index] = {"ticketId": item.ticket_id, "status": "CREATED"}
        elif row.state in GONE:
            results[index] = _error(
                "ticketId",
                item.ticket_id,
                "error.ticket.deleted",
                f"the ticket is {row.state}; a cancelled ticket is not injected again",
            )
        elif row.injected_hash == digest:
            results[index] = {"ticketId": item.ticket_id, "status": "UNCHANGED"}
        else:
            # While nobody took it (INJECTED), the owner follows the injected data.
            owner = item.spectator_details.email if row.state == State.INJECTED else row.owner_email
            updates.append(
                {
                    "_id": row.id,
                    "_status": wire_status(row.state, row.activated),
                    **values,
                    "owner_email": owner,
                    "updated_at": now,
                }
            )
            results[index] = {"ticketId": item.ticket_id, "status": "UPDATED"}
    if not inserts and not updates:
        return
    # One sequence number per change (new tickets first, then updates in id order).
    seq = await db.next_sequence(conn, organizer_id, len(inserts) + len(updates))
    entries: list[tuple[int, Change]] = []
    if inserts:
        # RETURNING the business key, not relying on row order: that keeps the insert one
        # multi-row statement (a guaranteed order would make SQLite insert row by row).
        query = sa.insert(db.ticket).returning(db.ticket.c.id, db.ticket.c.external_id)
        new_ids = {row.external_id: row.id for row in (await conn.execute(query, inserts)).all()}
        for row_values in inserts:
            change = Change(
                new_ids[row_values["external_id"]], "ticket.injected", State.INJECTED.value, actor
            )
            entries.append((seq, change))
            seq += 1
    updates.sort(key=lambda u: u["_id"])
    for row_values in updates:
        entries.append(
            (seq, Change(row_values["_id"], "ticket.updated", row_values.pop("_status"), actor))
        )
        seq += 1
    if updates:
        columns = [c for c in updates[0] if c != "_id"]
        await conn.execute(
            sa.update(db.ticket)
            .where(db.ticket.c.id == sa.bindparam("_id"))
            .values({c: sa.bindparam(c) for c in columns}),
            updates,
        )
    await append_log(conn, organizer_id, entries, now=now)


async def inject_privileges(
    engine: AsyncEngine, *, organizer_id: int, items: Sequence[Any], now: datetime, actor: str
) -> list[Result]:
    """Inject digital privileges: the definition is created on first sight (updated after), each
    instance is INJECTED, non-transferable, and may link to tickets of the same organizer."""
    results, valid = _parse(items, PrivilegeIn, "privilegeId", "privilege_id")
    for attempt in range(ATTEMPTS):
        if not valid:
            break
        try:
            await _inject_privileges(engine, organizer_id, valid, results, now, actor)
            break
        except IntegrityError:  # a concurrent batch inserted one first: try again
            if attempt == ATTEMPTS - 1:
                raise
    return [r for r in results if r is not None]


async def _inject_privileges(
    engine: AsyncEngine,
    organizer_id: int,
    valid: list[tuple[int, Any, str]],
    results: list[Result | None],
    now: datetime,
    actor: str,
) -> None:
    async with db.transaction(engine) as conn:
        linked = sorted({t for _, item, _d in valid for t in item.linked_ticket_ids})
        known = await _select_in(
            conn, db.ticket, "external_id", organizer_id, linked, columns=("id", "external_id")
        )
        definitions: dict[str, Any] = {}
        for _, item, _d in valid:
            definitions[item.definition.id] = item.definition
        definition_ids = await _definitions(conn, organizer_id, definitions, now)
        existing = await _select_in(
            conn, db.privilege, "external_id", organizer_id, [i.privilege_id for _, i, _d in valid]
        )
        for index, item, digest in valid:
            missing = [t for t in item.linked_ticket_ids if t not in known]
            if missing:
                results[index] = _error(
                    "privilegeId",
                    item.privilege_id,
                    "error.privilege.unknown_ticket",
                    f"linked ticket(s) not injected: {', '.join(missing[:5])}",
                )
                continue
            values = {
                "privilege_definition_id": definition_ids[item.definition.id],
                "barcode": item.security.barcode,
                "first_name": item.spectator_details.first_name,
                "last_name": item.spectator_details.last_name,
                "owner_email": item.spectator_details.email,
                "linked_ticket_ids": item.linked_ticket_ids,
                "injected_hash": digest,
                "updated_at": now,
            }
            row = existing.get(item.privilege_id)
            if row is not None and row.state == "DELETED":
                results[index] = _error(
                    "privilegeId",
                    item.privilege_id,
                    "error.privilege.deleted",
                    "the privilege was cancelled; a cancelled privilege is not injected again",
                )
                continue
            if row is None:
                await conn.execute(
                    sa.insert(db.privilege).values(
                        organizer_id=organizer_id,
                        external_id=item.privilege_id,
                        state="INJECTED",
                        created_at=now,
                        **values,
                    )
                )
                status = "CREATED"
            elif row.injected_hash == values["injected_hash"]:
                status = "UNCHANGED"
            else:
                await conn.execute(
                    sa.update(db.privilege).where(db.privilege.c.id == row.id).values(**values)
                )
                status = "UPDATED"
            if status != "UNCHANGED":
                await db.record(
                    conn,
                    organizer_id=organizer_id,
                    action=f"wallet.privilege.{status.lower()}",
                    actor=actor,
                    at=now,
                    privilege_id=item.privilege_id,
                )
            results[index] = {"privilegeId": item.privilege_id, "status": status}


async def _definitions(
    conn: AsyncConnection, organizer_id: int, definitions: dict[str, Any], now: datetime
) -> dict[str, int]:
    existing = await _select_in(
        conn, db.privilege_definition, "external_id", organizer_id, list(definitions)
    )
    ids: dict[str, int] = {}
    for external, definition in definitions.items():
        values = {
            "name": definition.name,
            "kind": definition.type,
            "valid_from": definition.valid_from,
            "valid_until": definition.valid_until,
            "details": definition.metadata,
        }
        row = existing.get(external)
        if row is None:
            ids[external] = (
                await conn.execute(
                    sa.insert(db.privilege_definition)
                    .values(
                        organizer_id=organizer_id,
                        external_id=external,
                        created_at=now,
                        updated_at=now,
                        **values,
                    )
                    .returning(db.privilege_definition.c.id)
                )
            ).scalar_one()
        else:
            ids[external] = row.id
            if any(getattr(row, k) != v for k, v in values.items()):
                await conn.execute(
                    sa.update(db.privilege_definition)
                    .where(db.privilege_definition.c.id == row.id)
                    .values(updated_at=now, **values)
                )
    return ids
