"""Contact events for webhooks (``contact.created``, ``contact.updated``, ``contact.erased``).

The webhook mechanism (``billetterie.webhooks.services.emit``) lives in its own context; until
it is wired in, :func:`contact_event` records the event in the audit log, in the caller's
transaction, with everything ``emit`` takes. Connecting it is a change to this function alone.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.shared import audit

EVENTS = frozenset({"contact.created", "contact.updated", "contact.erased"})


async def contact_event(
    conn: AsyncConnection,
    *,
    institution_id: int,
    point_of_sale_id: int | None,
    event: str,
    contact_number: int,
    now: datetime,
) -> None:
    """Announce a contact change; call it in the transaction that made the change."""
    assert event in EVENTS, event
    await audit.record(
        conn,
        institution_id=institution_id,
        action=f"contacts.webhook.{event.split('.', 1)[1]}",
        actor="contacts",
        at=now,
        event=event,
        point_of_sale_id=point_of_sale_id,
        subject_id=contact_number,
    )
