"""The feedback function: the wallet's feed of changed tickets, stored in the box office.

Implements ``GET feedback`` of docs/wallet/organizer-api.md as its one consumer per organizer:
each page is stored (mobile status, wallet owner, holder, transfer count, history) together with
its ``nextKey`` in one transaction, so after a crash the wallet gives the page again (it resumes
from the key last presented) and nothing is stored twice. A new owner's email is linked to a
contact of the institution, created (without a login) when none has that email.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.contacts.models import ContactInput
from billetterie.contacts.services import ContactScope, NewContact, create_contacts, search_by_email
from billetterie.printing import db
from billetterie.printing.models import Counts, Interface, Progress
from billetterie.printing.wallet import WalletClient
from billetterie.shared.clock import Clock
from billetterie.shared.db import read, transaction
from billetterie.shared.errors import DomainError

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{2,63}$")


def _when(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        if parsed.tzinfo is not None:
            return parsed
    return fallback


async def _owner_contacts(
    engine: AsyncEngine,
    item: Interface,
    owners: dict[str, dict[str, Any]],
    counts: Counts,
    now: datetime,
) -> dict[str, str]:
    """Contact numbers of the new owners (email -> the holder the wallet gave, if any): found by
    email, else created without a login, named by the holder or, lacking one, by the email's
    local part (the wallet knows nothing more of them)."""
    scope = ContactScope(item.institution_id)
    numbers: dict[str, str] = {}
    async with read(engine) as conn:
        for email in sorted(owners):
            found = await search_by_email(conn, scope, email, limit=1)
            if found:
                numbers[email] = str(found[0].number)
    missing = sorted(e for e in owners if e not in numbers and EMAIL.match(e))
    for start in range(0, len(missing), 100):
        chunk = missing[start : start + 100]
        people = [
            ContactInput(
                email=e,
                first_name=str(owners[e].get("firstName") or "")[:100] or None,
                last_name=str(owners[e].get("lastName") or "")[:100] or e.split("@")[0][:100],
            )
            for e in chunk
        ]
        try:
            created = await create_contacts(
                engine,
                scope,
                [NewContact(general=person) for person in people],
                point_of_sale_id=None,
                actor=f"printing:{item.code}",
                now=now,
            )
        except DomainError as exc:  # the owners stay stored; only the link is missing
            counts.errors.append(f"contacts: {exc.code} {exc.detail}")
            continue
        numbers |= {e: str(n) for e, n in zip(chunk, created, strict=True)}
    return numbers


async def fetch_feedback(
    engine: AsyncEngine,
    item: Interface,
    wallet: WalletClient,
    clock: Clock,
    counts: Counts,
    progress: Progress | None = None,
) -> None:
    p, i = db.printing_ticket.c, db.printing_interface.c
    limit = min(item.batch_size, 1000)
    while True:
        async with read(engine) as conn:
            key = (
                await conn.execute(sa.select(i.feedback_key).where(i.id == item.id))
            ).scalar_one()
        page = await wallet.feedback(key, limit)
        entries = [t for t in page["tickets"] if isinstance(t, dict)]
        ids: dict[int, dict[str, Any]] = {}
        for entry in entries:
            name = str(entry.get("ticketId", ""))
            counts.sent += 1
            if name.isdigit() and len(name) < 19:
                ids[int(name)] = entry  # the last time a ticket appears is its state
            else:
                counts.refuse(f"{name[:40]}: not a ticket of this box office")
        async with read(engine) as conn:
            known = {
                r.ticket_id: r.wallet_owner
                for r in await conn.execute(
                    sa.select(p.ticket_id, p.wallet_owner).where(
                        p.interface_id == item.id, p.ticket_id.in_(list(ids))
                    )
                )
            }
        for ticket_id in sorted(set(ids) - set(known)):
            counts.refuse(f"{ticket_id}: not injected by this interface")
        now = clock.now()
        owners = {
            ticket_id: str((ids[ticket_id].get("walletOwner") or {}).get("email") or "").lower()
            for ticket_id in known
        }
        new_owners: dict[str, dict[str, Any]] = {
            e: ids[t]["holder"] if isinstance(ids[t].get("holder"), dict) else {}
            for t, e in owners.items()
            if e and e != known[t]
        }
        contacts = (
            await _owner_contacts(engine, item, new_owners, counts, now) if new_owners else {}
        )
        updates, history = [], []
        for ticket_id in sorted(known):
            entry = ids[ticket_id]
            holder = entry.get("holder")
            update = {
                "_id": ticket_id,
                "mobile_status": str(entry.get("status") or "")[:32] or "UNKNOWN",
                "wallet_owner": owners[ticket_id][:320] or None,
                "holder": holder if isinstance(holder, dict) else None,
                "transfer_count": int(entry.get("transferCount") or 0),
                "feedback_at": now,
            }
            updates.append(update)
            for log in entry.get("logEntries") or []:
                if not isinstance(log, dict):
                    continue
                history.append(
                    {
                        "institution_id": item.institution_id,
                        "ticket_id": ticket_id,
                        "action": str(log.get("action") or "")[:64],
                        "status": (str(log["status"])[:32] if log.get("status") else None),
                        "actor": (str(log["actor"])[:320] if log.get("actor") else None),
                        "device": (str(log["device"])[:128] if log.get("device") else None),
                        "at": _when(log.get("at"), now),
                        "data": log.get("data") if isinstance(log.get("data"), dict) else {},
                    }
                )
        async with transaction(engine) as conn:
            if updates:
                await conn.execute(
                    sa.update(db.printing_ticket)
                    .where(p.ticket_id == sa.bindparam("_id"))
                    .values(
                        mobile_status=sa.bindparam("mobile_status"),
                        wallet_owner=sa.bindparam("wallet_owner"),
                        holder=sa.bindparam("holder"),
                        transfer_count=sa.bindparam("transfer_count"),
                        feedback_at=sa.bindparam("feedback_at"),
                    ),
                    updates,
                )
                linked = [
                    {"_id": t, "number": contacts[owners[t]]}
                    for t in known
                    if owners[t] in contacts
                ]
                if linked:
                    await conn.execute(
                        sa.update(db.printing_ticket)
                        .where(p.ticket_id == sa.bindparam("_id"))
                        .values(owner_contact_number=sa.bindparam("number")),
                        linked,
                    )
            if history:
                await conn.execute(sa.insert(db.printing_ticket_history), history)
            await conn.execute(
                sa.update(db.printing_interface)
                .where(i.id == item.id)
                .values(feedback_key=page["nextKey"])
            )
        counts.accepted += len(updates)
        if progress:
            progress(counts)
        if not page.get("hasMore") or not entries:
            return
