"""The scanner: validates a rotating code the way an offline gate would.

It uses only what the QR carries (group id, code, barcode), the group's secret and the
organizer's barcode public keys (registered by the box office, ``services.barcode_keys``): no
ticket row is read, so a gate with the group secret (``GET .../activation-groups/{id}``) and the
keys (``GET .../barcode-keys``) gets the same answer without the network. Checked in order:

- ``MALFORMED``: not a wallet code;
- ``UNKNOWN_GROUP``: no such activation group for this organizer;
- ``INVALID_BARCODE``: the barcode is not the box office's: malformed, signed by no key of the
  organizer's that is still verifiable (never registered, or retired), a signature that does
  not verify, or past its validity; ``code`` says which (``error.barcode.*``);
- ``EXPIRED``: a well-formed code that matches no step in the window (a replayed screenshot);
- ``VALID``: the code matches the barcode within one 15 s step either side; first admission;
- ``DUPLICATE``: a valid code for a barcode already admitted (second scan of the same ticket).

Every scan is logged. Admission is one row per barcode under a unique key, so two gates
scanning the same ticket at the same instant yield one VALID and one DUPLICATE.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie_wallet import barcodes, db, rotating
from billetterie_wallet.services.barcode_keys import verification_keys


async def validate(
    engine: AsyncEngine, *, organizer_id: int, code: str, scanner: str, now: datetime
) -> dict[str, Any]:
    parsed = rotating.parse_payload(code.strip())
    if parsed is None:
        return {"result": "MALFORMED", "detail": "not a wallet code"}
    async with db.read(engine) as conn:
        group = (
            await conn.execute(
                sa.select(db.activation_group).where(
                    db.activation_group.c.organizer_id == organizer_id,
                    db.activation_group.c.group_id == parsed.group_id,
                )
            )
        ).first()
        keys = await verification_keys(conn, organizer_id) if group is not None else {}
    if group is None:
        return {"result": "UNKNOWN_GROUP", "groupId": parsed.group_id}
    result: dict[str, Any] = {"groupId": parsed.group_id, "barcode": parsed.barcode}
    offset = None
    try:
        barcodes.verify(parsed.barcode, keys, int(now.timestamp()))
    except barcodes.BarcodeRefused as refusal:
        result |= {"result": "INVALID_BARCODE", "code": refusal.code, "detail": refusal.detail}
    else:
        secret = rotating.ticket_secret(rotating.decode_secret(group.secret), parsed.barcode)
        offset = rotating.check_code(secret, parsed.code, now, algorithm=group.algorithm)
        if offset is None:
            result["result"] = "EXPIRED"
    if offset is not None:
        result["stepOffset"] = offset
        try:
            async with db.transaction(engine) as conn:
                await conn.execute(
                    sa.insert(db.admission).values(
                        organizer_id=organizer_id, barcode=parsed.barcode, at=now
                    )
                )
            result["result"] = "VALID"
        except IntegrityError:
            async with db.read(engine) as conn:
                first = (
                    await conn.execute(
                        sa.select(db.admission.c.at).where(
                            db.admission.c.organizer_id == organizer_id,
                            db.admission.c.barcode == parsed.barcode,
                        )
                    )
                ).scalar_one()
            result["result"] = "DUPLICATE"
            result["firstScanAt"] = first.isoformat()
    async with db.transaction(engine) as conn:
        await conn.execute(
            sa.insert(db.scan).values(
                organizer_id=organizer_id,
                barcode=parsed.barcode,
                group_id=parsed.group_id,
                result=result["result"],
                scanner=scanner,
                at=now,
            )
        )
    return result
