"""Contact events for webhooks (``contact.created``, ``contact.updated``, ``contact.erased``).

:func:`contact_event` records the change in the audit log and, for a change made through a point
of sale, enqueues ``contact.created`` / ``contact.updated`` to that point of sale's webhook
subscriptions (:func:`billetterie.webhooks.services.emit`), in the caller's transaction: a
partner hears of a contact exactly when the change is committed. An erasure is announced as an
update of the (now anonymised) contact. The full payload is the contact's general data, read
when the delivery is sent (:func:`register_webhook_payloads`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from billetterie.shared import audit
from billetterie.shared.errors import DomainError
from billetterie.webhooks.services import emit, register_payload_renderer

EVENTS = frozenset({"contact.created", "contact.updated", "contact.erased"})
WEBHOOK_EVENT = {
    "contact.created": "contact.created",
    "contact.updated": "contact.updated",
    "contact.erased": "contact.updated",
}


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
    if point_of_sale_id is not None:
        await emit(
            conn,
            institution_id=institution_id,
            point_of_sale_id=point_of_sale_id,
            event=WEBHOOK_EVENT[event],
            subject_id=contact_number,
            now=now,
            dedupe_key=f"{event}:{contact_number}:{now.isoformat()}",
        )


async def _contact_payload(
    conn: AsyncConnection, institution_id: int, contact_number: Any
) -> dict[str, Any]:
    from billetterie.contacts.services import ContactScope, get_contact  # services import us

    try:
        contact = await get_contact(conn, ContactScope(institution_id), int(contact_number))
    except DomainError as gone:  # an unknown contact: the delivery fails for good
        raise LookupError(str(gone)) from None
    return {
        "contactNumber": contact.number,
        "type": contact.type.value,
        "state": contact.state.value,
        "firstName": contact.first_name,
        "lastName": contact.last_name,
        "structureName": contact.structure_name,
        "email": contact.email,
        "language": contact.language,
        "updatedAt": contact.updated_at.isoformat(),
    }


def register_webhook_payloads() -> None:
    for event in ("contact.created", "contact.updated"):
        register_payload_renderer(event, _contact_payload)
