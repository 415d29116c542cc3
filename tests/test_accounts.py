"""Shop accounts over HTTP on both databases: registration and email verification, login and
its throttle, remember-me rotation and theft detection, password reset, logout, CSRF, return
URLs, and the mail port's contract (SMTP and the development sink)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.contacts import db as contacts_db
from billetterie.identity import db as identity_db
from billetterie.identity.mail import MailSink, OutgoingMail, SmtpMailer
from billetterie.shared.audit import audit_entry
from billetterie.shared.clock import FixedClock
from billetterie.shared.db import read
from tests.conftest import NOW, Api, Backend
from tests.identity_support import (
    browser,
    contact_world,
    csrf_of,
    error_code,
    link_in,
    mails,
    post_form,
    register,
    shop_app,
    sign_in,
)

PASSWORD = "correct horse 42"
SHOP = "/shop/ACMEWEB"


@pytest.fixture
async def app(
    scratch_engine: AsyncEngine, backend: Backend, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    await contact_world(scratch_engine)
    async with shop_app(backend.scratch_url, tmp_path, clock) as app:
        yield app


async def count(engine: AsyncEngine, table: sa.Table, *where: Any) -> int:
    async with read(engine) as conn:
        query = sa.select(sa.func.count()).select_from(table)
        return int((await conn.execute(query.where(*where))).scalar_one())


async def test_register_verify_and_account_page(app: FastAPI, scratch_engine: AsyncEngine) -> None:
    async with browser(app) as client:
        page = await client.get(f"{SHOP}/account/register")
        assert 'name="criteria" value="JAZZ"' in page.text
        assert 'name="authorizations" value="NEWS"' in page.text
        response = await register(
            client,
            "ACMEWEB",
            "Ada@Example.org",
            PASSWORD,
            criteria=["OPERA"],
            authorizations=["NEWS"],
            city="Lausanne",
            country="ch",
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"{SHOP}/account"
        account = await client.get(f"{SHOP}/account")
        assert account.status_code == 200
        assert "Ada Lovelace" in account.text and "(not confirmed yet)" in account.text

        [mail] = mails(app)
        assert (mail.recipient, mail.subject) == ("Ada@Example.org", "Confirm your email address")
        link = link_in(mail.body)
        assert link.startswith(f"http://testserver{SHOP}/account/verify?token=")
        verified = await client.get(link.removeprefix("http://testserver"))
        assert verified.status_code == 200 and "confirmed" in verified.text
        again = await client.get(link.removeprefix("http://testserver"))
        assert again.status_code == 400 and error_code(again.text) == "error.account.invalid_token"
        assert "(not confirmed yet)" not in (await client.get(f"{SHOP}/account")).text

    async with read(scratch_engine) as conn:
        row = (await conn.execute(sa.select(contacts_db.contact))).one()
        assert (row.login, row.email, row.language) == ("ada@example.org", "Ada@Example.org", "en")
        address = (await conn.execute(sa.select(contacts_db.contact_address))).one()
        assert (address.kind, address.city, address.country_code) == ("MAIN", "Lausanne", "CH")
        consent = (await conn.execute(sa.select(contacts_db.contact_authorization))).all()
        assert [(c.allowed, c.source) for c in consent] == [
            (True, "shop:ACMEWEB"),
            (False, "shop:ACMEWEB"),
        ]

    # The same email cannot register twice; the form comes back with the code.
    async with browser(app) as client:
        response = await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        assert response.status_code == 409
        assert error_code(response.text) == "error.contact.duplicate_login"
        assert 'value="ada@example.org"' in response.text  # what was typed stays
        weak = await register(client, "ACMEWEB", "bob@example.org", "password")
        assert error_code(weak.text) == "error.contact.weak_password"
    assert await count(scratch_engine, contacts_db.contact) == 1


async def test_csrf_is_required_on_every_form(app: FastAPI, scratch_engine: AsyncEngine) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        token = csrf_of((await client.get(f"{SHOP}/account/login")).text)
        sessions = await count(scratch_engine, identity_db.account_session)
        forms = {
            "login": {"email": "ada@example.org", "password": PASSWORD},
            "register": {"email": "eve@example.org", "password": PASSWORD, "lastName": "E"},
            "forgot": {"email": "ada@example.org"},
            "reset": {"token": "x", "password": PASSWORD},
            "logout": {},
        }
        for name, data in forms.items():
            for extra in ({}, {"csrf_token": token + "x"}, {"csrf_token": ""}):
                response = await client.post(f"{SHOP}/account/{name}", data={**data, **extra})
                assert response.status_code == 403, (name, extra)
                assert error_code(response.text) == "error.account.csrf"
        # A token from another browser does not do either.
        async with browser(app) as other:
            foreign = csrf_of((await other.get(f"{SHOP}/account/login")).text)
        response = await client.post(
            f"{SHOP}/account/login", data={**forms["login"], "csrf_token": foreign}
        )
        assert response.status_code == 403
        assert (await client.get(f"{SHOP}/account")).status_code == 200  # still signed in
    assert await count(scratch_engine, identity_db.account_session) == sessions
    assert await count(scratch_engine, contacts_db.contact) == 1
    assert len(mails(app)) == 1  # the verification mail only


async def test_login_and_throttling(app: FastAPI, scratch_engine: AsyncEngine) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
    async with browser(app) as client:
        assert (await client.get(f"{SHOP}/account")).headers["location"] == f"{SHOP}/account/login"
        for _ in range(5):
            wrong = await sign_in(client, "ACMEWEB", "ada@example.org", "wrong password 1")
            assert wrong.status_code == 401
            assert error_code(wrong.text) == "error.contact.bad_credentials"
        blocked = await sign_in(client, "ACMEWEB", "ADA@example.org", PASSWORD)
        assert blocked.status_code == 429 and error_code(blocked.text) == "error.account.throttled"
    # From elsewhere too: the account is what is throttled.
    async with browser(app, "203.0.113.9") as client:
        blocked = await sign_in(client, "ACMEWEB", "ada@example.org", PASSWORD)
        assert blocked.status_code == 429
    # Once the window has passed the right password works.
    app.state.runtime.clock.set(NOW.replace(minute=16))
    try:
        async with browser(app) as client:
            response = await sign_in(client, "ACMEWEB", "ada@example.org", PASSWORD)
            assert response.status_code == 303
            assert (await client.get(f"{SHOP}/account")).status_code == 200
    finally:
        app.state.runtime.clock.set(NOW)


async def test_one_address_is_throttled_across_accounts(app: FastAPI) -> None:
    async with browser(app, "192.0.2.1") as client:
        for i in range(20):
            response = await sign_in(client, "ACMEWEB", f"user{i}@example.org", "wrong password 1")
            assert response.status_code == 401
        blocked = await sign_in(client, "ACMEWEB", "user99@example.org", "wrong password 1")
        assert error_code(blocked.text) == "error.account.throttled"
    async with browser(app, "192.0.2.2") as client:
        response = await sign_in(client, "ACMEWEB", "user99@example.org", "wrong password 1")
        assert error_code(response.text) == "error.contact.bad_credentials"


async def test_remember_me_rotates_and_detects_theft(
    app: FastAPI, scratch_engine: AsyncEngine
) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
    async with browser(app) as client:
        await sign_in(client, "ACMEWEB", "ada@example.org", PASSWORD, remember="1")
        first = client.cookies["bt_remember"]
    # A new browser session with only the remember-me cookie is signed in, and the token turns.
    async with browser(app) as client:
        client.cookies.set("bt_remember", first, domain="testserver.local", path=SHOP)
        assert (await client.get(f"{SHOP}/account")).status_code == 200
        second = client.cookies["bt_remember"]
        assert second != first and second.split(".")[0] == first.split(".")[0]
        signed_in_browser = client.cookies["bt_session"]
    # The old token comes back (it was copied): refused, and the whole series is revoked.
    async with browser(app) as thief:
        thief.cookies.set("bt_remember", first, domain="testserver.local", path=SHOP)
        response = await thief.get(f"{SHOP}/account")
        assert response.headers["location"] == f"{SHOP}/account/login"
    async with browser(app) as client:
        client.cookies.set("bt_remember", second, domain="testserver.local", path=SHOP)
        assert (await client.get(f"{SHOP}/account")).status_code == 303
        client.cookies.set("bt_session", signed_in_browser, domain="testserver.local", path=SHOP)
        assert (await client.get(f"{SHOP}/account")).status_code == 303  # its session ended
    async with read(scratch_engine) as conn:
        actions = (
            (
                await conn.execute(
                    sa.select(audit_entry.c.action).where(
                        audit_entry.c.action.like("identity.remember.%")
                    )
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["identity.remember.stolen"]


async def test_forgot_and_reset(app: FastAPI, scratch_engine: AsyncEngine) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        old_session = client.cookies["bt_session"]
    async with browser(app) as client:
        unknown = await post_form(client, f"{SHOP}/account/forgot", {"email": "eve@example.org"})
        known = await post_form(client, f"{SHOP}/account/forgot", {"email": "ADA@example.org"})
        assert unknown.status_code == known.status_code == 200
        assert unknown.text == known.text
        reset_mails = [m for m in mails(app) if m.subject == "Reset your password"]
        assert [m.recipient for m in reset_mails] == ["ada@example.org"]
        link = link_in(reset_mails[0].body).removeprefix("http://testserver")
        token = link.split("token=")[1]
        weak = await post_form(client, link, {"token": token, "password": "abcdefgh"})
        assert error_code(weak.text) == "error.contact.weak_password"
        done = await post_form(client, link, {"token": token, "password": "new horse 43"})
        assert done.status_code == 200 and "Password changed" in done.text
        again = await post_form(client, link, {"token": token, "password": "newer horse 44"})
        assert error_code(again.text) == "error.account.invalid_token"
        # A token of the verification kind is not a reset token.
        [verify] = [m for m in mails(app) if m.subject.startswith("Confirm")]
        verify_token = link_in(verify.body).split("token=")[1]
        wrong_kind = await post_form(
            client, link, {"token": verify_token, "password": "newer horse 44"}
        )
        assert error_code(wrong_kind.text) == "error.account.invalid_token"
    async with browser(app) as client:
        client.cookies.set("bt_session", old_session, domain="testserver.local", path=SHOP)
        assert (await client.get(f"{SHOP}/account")).status_code == 303  # reset ended it
        assert (await sign_in(client, "ACMEWEB", "ada@example.org", PASSWORD)).status_code == 401
        assert (
            await sign_in(client, "ACMEWEB", "ada@example.org", "new horse 43")
        ).status_code == 303
    async with read(scratch_engine) as conn:
        verified = (await conn.execute(sa.select(contacts_db.contact.c.email_verified_at))).scalar()
    assert verified == NOW  # the reset link proved the address


async def test_logout_ends_everything(app: FastAPI, scratch_engine: AsyncEngine) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
    async with browser(app) as client:
        await sign_in(client, "ACMEWEB", "ada@example.org", PASSWORD, remember="1")
        session, remember = client.cookies["bt_session"], client.cookies["bt_remember"]
        response = await post_form(client, f"{SHOP}/account", {}, action=f"{SHOP}/account/logout")
        assert response.status_code == 303
        assert response.headers["location"] == f"{SHOP}/account/login"
        cleared = response.headers.get_list("set-cookie")
        assert any(
            c.startswith("stx_contact_ACME_WEB_v1=")
            and "Domain=.acme.example" in c
            and "Max-Age=0" in c
            for c in cleared
        )
    async with browser(app) as client:
        client.cookies.set("bt_session", session, domain="testserver.local", path=SHOP)
        client.cookies.set("bt_remember", remember, domain="testserver.local", path=SHOP)
        assert (await client.get(f"{SHOP}/account")).status_code == 303
    assert (
        await count(
            scratch_engine,
            identity_db.remember_token,
            identity_db.remember_token.c.revoked_at.is_(None),
        )
        == 0
    )


async def test_return_urls_only_to_registered_hosts(app: FastAPI) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
    for bad in (
        "https://evil.example/",
        "//evil.example/x",
        "https://www.acme.example.evil.example/",
        "https://www.acme.example@evil.example/",
        "javascript:alert(1)",
        "/\\evil.example",
        "https://acme.example/",
    ):
        async with browser(app) as client:
            page = await client.get(f"{SHOP}/account/login", params={"next": bad})
            assert (
                page.status_code == 400 and error_code(page.text) == "error.account.bad_return_url"
            )
            page = await client.get(f"{SHOP}/account/register", params={"callbackUrl": bad})
            assert page.status_code == 400
            login = await client.get(f"{SHOP}/account/login")
            response = await client.post(
                f"{SHOP}/account/login",
                data={
                    "email": "ada@example.org",
                    "password": PASSWORD,
                    "next": bad,
                    "csrf_token": csrf_of(login.text),
                },
            )
            assert response.status_code == 400
            assert "bt_session" not in client.cookies
    async with browser(app) as client:
        good = "https://www.acme.example/welcome?x=1"
        response = await sign_in(client, "ACMEWEB", "ada@example.org", PASSWORD, next=good)
        assert response.status_code == 303 and response.headers["location"] == good


async def test_points_of_sale_do_not_share_sessions(app: FastAPI) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        session = client.cookies["bt_session"]
        # ACME's account is not an OTHR account, and ACME's session is not valid there.
        response = await sign_in(client, "OTHRWEB", "ada@example.org", PASSWORD)
        assert response.status_code == 401
        client.cookies.set("bt_session", session, domain="testserver.local", path="/shop/OTHRWEB")
        assert (await client.get("/shop/OTHRWEB/account")).status_code == 303
        missing = await client.get("/shop/NOSUCH/account/login")
        assert missing.status_code == 404
        assert error_code(missing.text) == "error.catalog.unknown_point_of_sale"


async def test_dev_mail_page_lists_the_sink(app: FastAPI) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        page = await client.get("/dev/mail")
        assert page.status_code == 200
        assert "Confirm your email address" in page.text and "ada@example.org" in page.text


# --- the mail port -----------------------------------------------------------------------------


class SmtpServer:
    """A minimal SMTP server (RFC 5321 commands a client sends to deliver one message)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        sender, recipients = "", []
        while line := await reader.readline():
            command = line.decode().strip()
            verb = command[:4].upper()
            if verb in {"EHLO", "HELO"}:
                writer.write(b"250 test\r\n")
            elif verb == "MAIL":
                sender = command.split(":", 1)[1].strip()
                writer.write(b"250 OK\r\n")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip())
                writer.write(b"250 OK\r\n")
            elif verb == "DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                data = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    data += chunk
                self.received.append((sender, recipients, data))
                writer.write(b"250 queued\r\n")
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 OK\r\n")
            await writer.drain()
        writer.close()


@pytest.mark.parametrize("adapter", ["smtp", "sink"])
async def test_mailers_keep_the_same_contract(adapter: str) -> None:
    message = OutgoingMail("ada@example.org", "Confirm your email address", "Open http://x/y\n")
    if adapter == "sink":
        sink = MailSink()
        await sink.send(message)
        [got] = list(sink.messages)
        assert (got.recipient, got.subject, got.body) == (
            message.recipient,
            message.subject,
            message.body,
        )
        return
    server = SmtpServer()
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        await SmtpMailer("127.0.0.1", port, "shop@acme.example").send(message)
    finally:
        listening.close()
        await listening.wait_closed()
    [(sender, recipients, data)] = server.received
    assert (sender, recipients) == ("<shop@acme.example>", ["<ada@example.org>"])
    text = data.decode()
    assert "Subject: Confirm your email address" in text and "To: ada@example.org" in text
    assert "Open http://x/y" in text


async def test_an_erased_contact_is_signed_out(app: FastAPI) -> None:
    async with browser(app) as client:
        await register(client, "ACMEWEB", "ada@example.org", PASSWORD)
        page = (await client.get(f"{SHOP}/account")).text
        number = int(page.split('data-contact-number="')[1].split('"')[0])
        api = Api(client)
        token = await api.token("ACME_WEB", "web")
        erased = await api.rpc(
            "contactInformationPublicService",
            "deleteContact",
            {"contactNumber": number},
            token=token,
            module="tnco",
            version="v2_21",
        )
        assert erased.json()["statusCode"] == "success"
        response = await client.get(f"{SHOP}/account")
        assert response.headers["location"] == f"{SHOP}/account/login"


async def test_edit_profile_consents_and_password(
    app: FastAPI, scratch_engine: AsyncEngine
) -> None:
    async with browser(app) as client:
        await register(
            client,
            "ACMEWEB",
            "ada@example.org",
            PASSWORD,
            criteria=["JAZZ"],
            authorizations=["NEWS"],
        )
        page = await client.get(f"{SHOP}/account/edit")
        assert 'value="JAZZ" checked' in page.text and 'value="NEWS" checked' in page.text
        assert 'value="PARTNERS">' in page.text
        changes = {
            "firstName": "Augusta",
            "lastName": "King",
            "city": "London",
            "country": "gb",
            "criteria": ["OPERA"],
            "authorizations": ["PARTNERS"],
        }
        wrong = await post_form(
            client,
            f"{SHOP}/account/edit",
            {**changes, "oldPassword": "not it at all 1", "newPassword": "new horse 43"},
        )
        assert wrong.status_code == 401
        assert error_code(wrong.text) == "error.contact.bad_credentials"
        saved = await post_form(
            client,
            f"{SHOP}/account/edit",
            {**changes, "oldPassword": PASSWORD, "newPassword": "new horse 43"},
        )
        assert saved.status_code == 200 and "Saved." in saved.text
        assert 'value="OPERA" checked' in saved.text and 'value="NEWS">' in saved.text
        cookie = next(
            c
            for c in saved.headers.get_list("set-cookie")
            if c.startswith("stx_contact_ACME_WEB_v1=")
        )
        assert "Augusta" in cookie
    async with read(scratch_engine) as conn:
        row = (await conn.execute(sa.select(contacts_db.contact))).one()
        consents = (
            (
                await conn.execute(
                    sa.select(contacts_db.contact_authorization.c.allowed).order_by(
                        contacts_db.contact_authorization.c.contact_authorization_type_id
                    )
                )
            )
            .scalars()
            .all()
        )
        address = (await conn.execute(sa.select(contacts_db.contact_address))).one()
    assert (row.first_name, row.last_name, row.login) == ("Augusta", "King", "ada@example.org")
    assert consents == [False, True] and (address.city, address.country_code) == ("London", "GB")
    async with browser(app) as client:
        assert (
            await sign_in(client, "ACMEWEB", "ada@example.org", "new horse 43")
        ).status_code == 303
        assert (
            await client.get(f"{SHOP}/account/edit?callbackUrl=https://evil.example/")
        ).status_code == 400
    async with browser(app) as client:
        response = await client.get(f"{SHOP}/account/edit")
        assert response.headers["location"].startswith(f"{SHOP}/account/login?next=")
