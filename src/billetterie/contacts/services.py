"""Contact use cases. Writers own their transaction and write an audit entry and a contact event
in it; readers take a connection.

Tenancy: every call names a :class:`ContactScope`. A contact belongs to one institution; an
operator of a RESELLER channel sees only the contacts created through its own channel (its
customers), every other channel of the institution sees all of the institution's contacts.
A contact outside the scope answers exactly like a contact that does not exist.

Erasure keeps the row (its number stays valid for the orders that reference it) and wipes
every personal field, the login, addresses, choices, consents, holders and external identities.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billetterie.contacts import db
from billetterie.contacts.errors import (
    BadContactCredentials,
    DuplicateLogin,
    ErasedContact,
    InvalidContact,
    UnknownAuthorization,
    UnknownContact,
    UnknownCriterion,
    WeakPassword,
)
from billetterie.contacts.events import contact_event
from billetterie.contacts.models import (
    Address,
    AddressKind,
    Authorization,
    Contact,
    ContactInput,
    ContactState,
    ContactType,
    Criterion,
    Detail,
    TicketHolder,
    normalize_email,
)
from billetterie.shared import audit
from billetterie.shared.db import Sync, transaction

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("billetterie-no-such-contact")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{2,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256


@dataclass(frozen=True)
class ContactScope:
    """Whose contacts a caller may see (see the module docstring)."""

    institution_id: int
    sales_channel_id: int | None = None
    own_channel_only: bool = False

    def allows(self, row: Any) -> bool:
        if row.institution_id != self.institution_id:
            return False
        return not self.own_channel_only or row.origin_sales_channel_id == self.sales_channel_id


@dataclass(frozen=True)
class NewContact:
    general: ContactInput
    identifier: str | None = None
    create_login: bool = False
    password: str | None = None
    addresses: list[Address] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    authorizations: list[Authorization] = field(default_factory=list)


@dataclass(frozen=True)
class ContactChanges:
    """What an update replaces: ``None`` leaves a section as it is."""

    general: ContactInput | None = None
    addresses: list[Address] | None = None
    criteria: list[str] | None = None
    authorizations: list[Authorization] | None = None
    ticket_holders: list[TicketHolder] | None = None


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise WeakPassword(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if password.isdigit() or password.isalpha():
        raise WeakPassword("a password mixes letters with digits or symbols")


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


def _clean(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > limit:
        raise InvalidContact(f"a field is longer than {limit} characters")
    if any(ord(ch) < 32 for ch in value):
        raise InvalidContact("control characters are not allowed")
    return value or None


def _general_values(general: ContactInput) -> dict[str, Any]:
    email = _clean(general.email, 320)
    if email is not None and not EMAIL.match(email):
        raise InvalidContact(f"{email!r} is not an email address")
    birth_date = _clean(general.birth_date, 10)
    if birth_date is not None and not re.match(r"^\d{4}-\d{2}-\d{2}$", birth_date):
        raise InvalidContact("birthDate is YYYY-MM-DD")
    values = {
        "type": general.type.value,
        "title": _clean(general.title, 32),
        "first_name": _clean(general.first_name, 128),
        "last_name": _clean(general.last_name, 128),
        "structure_name": _clean(general.structure_name, 255),
        "nickname": _clean(general.nickname, 64),
        "email": email,
        "email_key": normalize_email(email) if email else None,
        "phone": _clean(general.phone, 32),
        "birth_date": birth_date,
        "language": _clean(general.language, 8),
    }
    if general.type is ContactType.INDIVIDUAL and not values["last_name"]:
        raise InvalidContact("an individual contact has a last name")
    if general.type is ContactType.STRUCTURE and not values["structure_name"]:
        raise InvalidContact("a structure contact has a structure name")
    return values


# --- definitions (setup file) ----------------------------------------------------------------


@dataclass(frozen=True)
class Definitions:
    criteria: list[Criterion]
    authorizations: list[Criterion]


async def sync_definitions(
    conn: AsyncConnection, institution_id: int, definitions: Definitions
) -> int:
    """Bring the organization's criteria and authorization types in line with the setup file
    (by code; ids of kept codes stay). The caller owns the transaction. Returns the changes."""
    sync = Sync(conn, institution_id)
    for table, items in (
        (db.contact_criterion, definitions.criteria),
        (db.contact_authorization_type, definitions.authorizations),
    ):
        await sync.rows(
            table,
            ("code",),
            [
                {"code": c.code, "name": dict(c.name), "rank": rank}
                for rank, c in enumerate(items, start=1)
            ],
        )
    await sync.delete_stale()
    return sync.changes


async def list_definitions(conn: AsyncConnection, institution_id: int) -> Definitions:
    result = []
    for table in (db.contact_criterion, db.contact_authorization_type):
        rows = (
            await conn.execute(
                sa.select(table.c.code, table.c.name)
                .where(table.c.institution_id == institution_id)
                .order_by(table.c.rank, table.c.id)
            )
        ).all()
        result.append([Criterion(r.code, dict(r.name)) for r in rows])
    return Definitions(result[0], result[1])


async def _definition_ids(
    conn: AsyncConnection, table: sa.Table, institution_id: int, codes: Sequence[str]
) -> dict[str, int]:
    rows = (
        await conn.execute(
            sa.select(table.c.code, table.c.id).where(table.c.institution_id == institution_id)
        )
    ).all()
    known = {r.code: r.id for r in rows}
    for code in codes:
        if code not in known:
            error = UnknownCriterion if table is db.contact_criterion else UnknownAuthorization
            raise error(
                f"no {'criterion' if error is UnknownCriterion else 'authorization'} {code}"
            )
    return known


# --- reading ---------------------------------------------------------------------------------


async def _row(conn: AsyncConnection, scope: ContactScope, number: int) -> Any:
    row = (await conn.execute(sa.select(db.contact).where(db.contact.c.id == number))).first()
    if row is None or not scope.allows(row):
        raise UnknownContact(f"no contact {number}")
    return row


def _contact(row: Any, **sections: Any) -> Contact:
    return Contact(
        number=row.id,
        institution_id=row.institution_id,
        type=ContactType(row.type),
        state=ContactState.ERASED if row.erased_at is not None else ContactState.ACTIVE,
        title=row.title,
        first_name=row.first_name,
        last_name=row.last_name,
        structure_name=row.structure_name,
        nickname=row.nickname,
        email=row.email,
        phone=row.phone,
        birth_date=row.birth_date,
        language=row.language,
        login=row.login,
        has_password=row.password_hash is not None,
        email_verified=row.email_verified_at is not None,
        origin_sales_channel_id=row.origin_sales_channel_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        **sections,
    )


async def get_contact(
    conn: AsyncConnection,
    scope: ContactScope,
    number: int,
    details: Collection[Detail] = (Detail.GENERAL,),
) -> Contact:
    """One contact with the sections asked for. An erased contact reads as its anonymised row."""
    row = await _row(conn, scope, number)
    sections: dict[str, Any] = {}
    if Detail.ADDRESSES in details:
        a = db.contact_address.c
        rows = (
            await conn.execute(
                sa.select(db.contact_address).where(a.contact_id == number).order_by(a.kind)
            )
        ).all()
        sections["addresses"] = [
            Address(AddressKind(r.kind), r.street, r.street2, r.zip, r.city, r.country_code)
            for r in rows
        ]
    if Detail.AUTHORIZATIONS in details:
        z = db.contact_authorization.c
        t = db.contact_authorization_type.c
        rows = (
            await conn.execute(
                sa.select(t.code, z.allowed, z.at, z.source)
                .join(db.contact_authorization_type, t.id == z.contact_authorization_type_id)
                .where(z.contact_id == number)
                .order_by(t.rank)
            )
        ).all()
        sections["authorizations"] = [
            Authorization(r.code, r.allowed, r.at, r.source) for r in rows
        ]
    if Detail.CRITERIA in details:
        ch = db.contact_criterion_choice.c
        cr = db.contact_criterion.c
        rows = (
            await conn.execute(
                sa.select(cr.code)
                .join(db.contact_criterion_choice, cr.id == ch.contact_criterion_id)
                .where(ch.contact_id == number)
                .order_by(cr.rank)
            )
        ).all()
        sections["criteria"] = [r.code for r in rows]
    if Detail.TICKET_HOLDERS in details:
        h = db.ticket_holder.c
        rows = (
            await conn.execute(
                sa.select(db.ticket_holder).where(h.contact_id == number).order_by(h.id)
            )
        ).all()
        sections["ticket_holders"] = [
            TicketHolder(r.first_name, r.last_name, r.email, r.birth_date, r.id) for r in rows
        ]
    return _contact(row, **sections)


async def search_by_email(
    conn: AsyncConnection, scope: ContactScope, email: str, *, limit: int = 50
) -> list[Contact]:
    """The scope's active contacts whose email is ``email`` (case-insensitive)."""
    c = db.contact.c
    query = sa.select(db.contact).where(
        c.institution_id == scope.institution_id,
        c.email_key == normalize_email(email),
        c.erased_at.is_(None),
    )
    if scope.own_channel_only:
        query = query.where(c.origin_sales_channel_id == scope.sales_channel_id)
    rows = (await conn.execute(query.order_by(c.id).limit(limit))).all()
    return [_contact(r) for r in rows]


async def contact_by_login(conn: AsyncConnection, institution_id: int, email: str) -> int | None:
    c = db.contact.c
    row = (
        await conn.execute(
            sa.select(c.id).where(
                c.institution_id == institution_id, c.login == normalize_email(email)
            )
        )
    ).first()
    return None if row is None else int(row[0])


async def contact_by_external_identity(
    conn: AsyncConnection, institution_id: int, provider: str, subject: str
) -> int | None:
    x = db.contact_external_identity.c
    row = (
        await conn.execute(
            sa.select(x.contact_id).where(
                x.institution_id == institution_id, x.provider == provider, x.subject == subject
            )
        )
    ).first()
    return None if row is None else int(row[0])


# --- writing ---------------------------------------------------------------------------------


async def _replace_sections(
    conn: AsyncConnection,
    institution_id: int,
    number: int,
    changes: ContactChanges,
    *,
    source: str,
    now: datetime,
) -> None:
    if changes.addresses is not None:
        kinds = [a.kind for a in changes.addresses]
        if len(set(kinds)) != len(kinds):
            raise InvalidContact("one address per kind (MAIN, BILLING, SHIPPING)")
        await conn.execute(
            sa.delete(db.contact_address).where(db.contact_address.c.contact_id == number)
        )
        for address in changes.addresses:
            country = _clean(address.country_code, 2)
            if country is not None and not re.match(r"^[A-Z]{2}$", country):
                raise InvalidContact("countryCode is ISO 3166-1 alpha-2")
            await conn.execute(
                sa.insert(db.contact_address).values(
                    institution_id=institution_id,
                    contact_id=number,
                    kind=address.kind.value,
                    street=_clean(address.street, 255),
                    street2=_clean(address.street2, 255),
                    zip=_clean(address.zip, 16),
                    city=_clean(address.city, 128),
                    country_code=country,
                )
            )
    if changes.criteria is not None:
        ids = await _definition_ids(conn, db.contact_criterion, institution_id, changes.criteria)
        ch = db.contact_criterion_choice
        await conn.execute(sa.delete(ch).where(ch.c.contact_id == number))
        for code in dict.fromkeys(changes.criteria):
            await conn.execute(
                sa.insert(ch).values(
                    institution_id=institution_id,
                    contact_id=number,
                    contact_criterion_id=ids[code],
                )
            )
    if changes.authorizations is not None:
        codes = [a.code for a in changes.authorizations]
        if len(set(codes)) != len(codes):
            raise InvalidContact("an authorization code is given twice")
        ids = await _definition_ids(conn, db.contact_authorization_type, institution_id, codes)
        z = db.contact_authorization
        current = {
            r.contact_authorization_type_id: r
            for r in (await conn.execute(sa.select(z).where(z.c.contact_id == number))).all()
        }
        for given in changes.authorizations:
            type_id = ids[given.code]
            row = current.get(type_id)
            if row is not None and row.allowed == given.allowed:
                continue  # a consent keeps the time and source it was given with
            values = {"allowed": given.allowed, "at": now, "source": source[:128]}
            if row is None:
                await conn.execute(
                    sa.insert(z).values(
                        institution_id=institution_id,
                        contact_id=number,
                        contact_authorization_type_id=type_id,
                        **values,
                    )
                )
            else:
                await conn.execute(sa.update(z).where(z.c.id == row.id).values(**values))
    if changes.ticket_holders is not None:
        h = db.ticket_holder
        await conn.execute(sa.delete(h).where(h.c.contact_id == number))
        for holder in changes.ticket_holders:
            first, last = _clean(holder.first_name, 128), _clean(holder.last_name, 128)
            email = _clean(holder.email, 320)
            if not first or not last:
                raise InvalidContact("a ticket holder has a first and a last name")
            if email is not None and not EMAIL.match(email):
                raise InvalidContact(f"{email!r} is not an email address")
            await conn.execute(
                sa.insert(h).values(
                    institution_id=institution_id,
                    contact_id=number,
                    first_name=first,
                    last_name=last,
                    email=email,
                    birth_date=_clean(holder.birth_date, 10),
                    created_at=now,
                )
            )


async def create_contacts(
    engine: AsyncEngine,
    scope: ContactScope,
    contacts: Sequence[NewContact],
    *,
    point_of_sale_id: int | None,
    actor: str,
    now: datetime,
) -> list[int]:
    """Create contacts, all or none; returns their numbers in order.

    ``create_login`` gives the contact a login (its email, unique per institution); the
    password is optional (without one, the contact sets it through the shop's password reset).
    """
    if not 1 <= len(contacts) <= 100:
        raise InvalidContact("give 1 to 100 contacts")
    numbers: list[int] = []
    try:
        async with transaction(engine) as conn:
            for item in contacts:
                values = _general_values(item.general)
                login = None
                password_hash = None
                if item.create_login:
                    if not values["email_key"]:
                        raise InvalidContact("a login needs an email")
                    login = values["email_key"]
                    if await contact_by_login(conn, scope.institution_id, login) is not None:
                        raise DuplicateLogin(f"{login} already has an account")
                    if item.password is not None:
                        password_hash = hash_password(item.password)
                elif item.password is not None:
                    raise InvalidContact("a password needs createLogin")
                number = (
                    await conn.execute(
                        sa.insert(db.contact)
                        .values(
                            institution_id=scope.institution_id,
                            login=login,
                            password_hash=password_hash,
                            origin_sales_channel_id=scope.sales_channel_id,
                            origin_point_of_sale_id=point_of_sale_id,
                            created_at=now,
                            updated_at=now,
                            **values,
                        )
                        .returning(db.contact.c.id)
                    )
                ).scalar_one()
                await _replace_sections(
                    conn,
                    scope.institution_id,
                    number,
                    ContactChanges(
                        addresses=item.addresses,
                        criteria=item.criteria,
                        authorizations=item.authorizations,
                    ),
                    source=actor,
                    now=now,
                )
                await audit.record(
                    conn,
                    institution_id=scope.institution_id,
                    action="contacts.contact.created",
                    actor=actor,
                    at=now,
                    contact_number=number,
                    login=login is not None,
                )
                await contact_event(
                    conn,
                    institution_id=scope.institution_id,
                    point_of_sale_id=point_of_sale_id,
                    event="contact.created",
                    contact_number=number,
                    now=now,
                )
                numbers.append(number)
    except IntegrityError:
        # Two concurrent creations of the same login: the unique constraint decides.
        raise DuplicateLogin("this email already has an account") from None
    return numbers


async def update_contact(
    engine: AsyncEngine,
    scope: ContactScope,
    number: int,
    changes: ContactChanges,
    *,
    point_of_sale_id: int | None,
    actor: str,
    now: datetime,
) -> Contact:
    """Replace the sections given. A contact with a login keeps the login in line with its
    email (a changed email must be free as a login, and becomes unverified)."""
    try:
        async with transaction(engine) as conn:
            row = await _row(conn, scope, number)
            if row.erased_at is not None:
                raise ErasedContact(f"contact {number} has been erased")
            if changes.general is not None:
                values = _general_values(changes.general)
                if row.login is not None:
                    if not values["email_key"]:
                        raise InvalidContact("a contact with a login keeps an email")
                    if values["email_key"] != row.login:
                        other = await contact_by_login(
                            conn, row.institution_id, values["email_key"]
                        )
                        if other is not None:
                            raise DuplicateLogin(f"{values['email_key']} already has an account")
                        values["login"] = values["email_key"]
                        values["email_verified_at"] = None
                await conn.execute(
                    sa.update(db.contact)
                    .where(db.contact.c.id == number)
                    .values(updated_at=now, **values)
                )
            else:
                await conn.execute(
                    sa.update(db.contact).where(db.contact.c.id == number).values(updated_at=now)
                )
            await _replace_sections(
                conn, row.institution_id, number, changes, source=actor, now=now
            )
            await audit.record(
                conn,
                institution_id=row.institution_id,
                action="contacts.contact.updated",
                actor=actor,
                at=now,
                contact_number=number,
                sections=[
                    name
                    for name in ("general", "addresses", "criteria", "authorizations")
                    if getattr(changes, name) is not None
                ]
                + (["ticket_holders"] if changes.ticket_holders is not None else []),
            )
            await contact_event(
                conn,
                institution_id=row.institution_id,
                point_of_sale_id=point_of_sale_id,
                event="contact.updated",
                contact_number=number,
                now=now,
            )
            return await get_contact(conn, scope, number, list(Detail))
    except IntegrityError:
        raise DuplicateLogin("this email already has an account") from None


async def erase_contact(
    engine: AsyncEngine,
    scope: ContactScope,
    number: int,
    *,
    point_of_sale_id: int | None,
    actor: str,
    now: datetime,
) -> None:
    """Anonymise a contact (right to erasure). Idempotent: erasing again changes nothing."""
    async with transaction(engine) as conn:
        row = await _row(conn, scope, number)
        if row.erased_at is not None:
            return
        for table in (
            db.contact_address,
            db.contact_criterion_choice,
            db.contact_authorization,
            db.ticket_holder,
            db.contact_external_identity,
        ):
            await conn.execute(sa.delete(table).where(table.c.contact_id == number))
        await conn.execute(
            sa.update(db.contact)
            .where(db.contact.c.id == number)
            .values(
                title=None,
                first_name=None,
                last_name=None,
                structure_name=None,
                nickname=None,
                email=None,
                email_key=None,
                phone=None,
                birth_date=None,
                login=None,
                password_hash=None,
                email_verified_at=None,
                updated_at=now,
                erased_at=now,
            )
        )
        await audit.record(
            conn,
            institution_id=row.institution_id,
            action="contacts.contact.erased",
            actor=actor,
            at=now,
            contact_number=number,
        )
        await contact_event(
            conn,
            institution_id=row.institution_id,
            point_of_sale_id=point_of_sale_id,
            event="contact.erased",
            contact_number=number,
            now=now,
        )


# --- login -----------------------------------------------------------------------------------


async def authenticate(
    conn: AsyncConnection, institution_id: int, login: str, password: str
) -> int:
    """The number of the contact whose login and password these are. Unknown logins cost the
    same as wrong passwords and answer the same."""
    c = db.contact.c
    row = (
        await conn.execute(
            sa.select(c.id, c.password_hash).where(
                c.institution_id == institution_id, c.login == normalize_email(login)
            )
        )
    ).first()
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        raise BadContactCredentials("unknown login or wrong password") from None
    if row is None or not row.password_hash:
        raise BadContactCredentials("unknown login or wrong password")
    return int(row.id)


async def _set_password(
    conn: AsyncConnection,
    institution_id: int,
    number: int,
    password: str,
    actor: str,
    now: datetime,
) -> None:
    await conn.execute(
        sa.update(db.contact)
        .where(db.contact.c.id == number, db.contact.c.institution_id == institution_id)
        .values(password_hash=hash_password(password), updated_at=now)
    )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="contacts.password.changed",
        actor=actor,
        at=now,
        contact_number=number,
    )


async def change_password(
    engine: AsyncEngine,
    institution_id: int,
    *,
    login: str,
    old_password: str,
    new_password: str,
    actor: str,
    now: datetime,
) -> int:
    """Change a password knowing the old one; returns the contact number."""
    check_password(new_password)
    async with transaction(engine) as conn:
        number = await authenticate(conn, institution_id, login, old_password)
        await _set_password(conn, institution_id, number, new_password, actor, now)
    return number


async def reset_password(
    conn: AsyncConnection,
    institution_id: int,
    number: int,
    new_password: str,
    *,
    actor: str,
    now: datetime,
) -> None:
    """Set a password without the old one (a verified reset link); the caller's transaction.
    A reset proves the email, so it also marks it verified."""
    row = await _row(conn, ContactScope(institution_id), number)
    if row.erased_at is not None or row.login is None:
        raise ErasedContact(f"contact {number} has no login")
    await _set_password(conn, institution_id, number, new_password, actor, now)
    if row.email_verified_at is None:
        await mark_email_verified(conn, institution_id, number, actor=actor, now=now)


async def mark_email_verified(
    conn: AsyncConnection, institution_id: int, number: int, *, actor: str, now: datetime
) -> None:
    """The caller's transaction (a verification link was followed)."""
    await conn.execute(
        sa.update(db.contact)
        .where(db.contact.c.id == number, db.contact.c.institution_id == institution_id)
        .values(email_verified_at=now)
    )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="contacts.email.verified",
        actor=actor,
        at=now,
        contact_number=number,
    )


async def link_external_identity(
    conn: AsyncConnection,
    institution_id: int,
    number: int,
    *,
    provider: str,
    subject: str,
    actor: str,
    now: datetime,
) -> None:
    """Remember that ``provider`` knows this contact as ``subject``; the caller's transaction."""
    await conn.execute(
        sa.insert(db.contact_external_identity).values(
            institution_id=institution_id,
            contact_id=number,
            provider=provider,
            subject=subject,
            created_at=now,
        )
    )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="contacts.external_identity.linked",
        actor=actor,
        at=now,
        contact_number=number,
        provider=provider,
    )


async def create_contact_in(
    conn: AsyncConnection,
    institution_id: int,
    general: ContactInput,
    *,
    password: str | None,
    verified: bool,
    point_of_sale_id: int | None,
    sales_channel_id: int | None,
    criteria: Sequence[str] = (),
    authorizations: Sequence[Authorization] = (),
    actor: str,
    now: datetime,
) -> int:
    """Create one contact with a login in the caller's transaction (shop registration, SSO).
    Raises DuplicateLogin when the email already has an account."""
    values = _general_values(general)
    if not values["email_key"]:
        raise InvalidContact("an account needs an email")
    if await contact_by_login(conn, institution_id, values["email_key"]) is not None:
        raise DuplicateLogin(f"{values['email_key']} already has an account")
    number = (
        await conn.execute(
            sa.insert(db.contact)
            .values(
                institution_id=institution_id,
                login=values["email_key"],
                password_hash=hash_password(password) if password is not None else None,
                email_verified_at=now if verified else None,
                origin_sales_channel_id=sales_channel_id,
                origin_point_of_sale_id=point_of_sale_id,
                created_at=now,
                updated_at=now,
                **values,
            )
            .returning(db.contact.c.id)
        )
    ).scalar_one()
    await _replace_sections(
        conn,
        institution_id,
        number,
        ContactChanges(criteria=list(criteria), authorizations=list(authorizations)),
        source=actor,
        now=now,
    )
    await audit.record(
        conn,
        institution_id=institution_id,
        action="contacts.contact.created",
        actor=actor,
        at=now,
        contact_number=number,
        login=True,
    )
    await contact_event(
        conn,
        institution_id=institution_id,
        point_of_sale_id=point_of_sale_id,
        event="contact.created",
        contact_number=number,
        now=now,
    )
    return int(number)
