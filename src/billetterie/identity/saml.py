"""The point of sale as a SAML 2.0 identity provider (pysaml2 with xmlsec1).

Implements, of the SAML 2.0 specifications:
- Core §3.4 authentication request protocol: AuthnRequest in, Response with one signed
  Assertion out (the Response is signed too); NameID format persistent = the contact number;
  attributes ``contactNumber``, ``givenName``, ``sn``, ``mail`` (NameFormat URI).
- Core §3.7 single logout: LogoutRequest in, LogoutResponse out; the shop session ends.
- Bindings §3.4 HTTP-Redirect (requests, and signatures in the query string) and §3.5 HTTP-POST
  (requests in, responses always by auto-submitted form to the registered ACS).
- Metadata §2.4.3 IDPSSODescriptor, published at ``/shop/<code>/saml/metadata``.

Skipped: artifact and SOAP bindings, encrypted assertions, IdP-initiated SSO, attribute
queries, ForceAuthn/IsPassive handling beyond the default (a signed-in contact is not asked
again). pysaml2 reads the wall clock for IssueInstant and validity windows.

Security: only service providers registered for the point of sale in the setup file are
served (``error.saml.unknown_service_provider``); a response goes only to the ACS registered
for the SP (a request naming another is ``error.saml.bad_destination``); each request id is
answered once (``error.saml.replayed``); requests that do not parse or whose signature does
not verify are ``error.saml.invalid_request``; an SP registered with ``wantRequestsSigned``
must sign. Redirect-binding signatures are checked here (Bindings §3.4.4.1), RSA-SHA256/512
only; logout requests must be signed.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus
from xml.sax.saxutils import quoteattr

import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from billetterie.identity import db
from billetterie.identity.keys import StoredKey
from billetterie.identity.models import SamlServiceProvider, SignInSetup
from billetterie.shared.db import transaction
from billetterie.shared.errors import DomainError

with warnings.catch_warnings():
    # pysaml2 names a cipher mode cryptography has moved; it is not used here
    warnings.filterwarnings("ignore", message="CFB has been moved")
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig
    from saml2.metadata import create_metadata_string
    from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT, NameID
    from saml2.server import Server

log = logging.getLogger("billetterie.saml")
REDIRECT = BINDING_HTTP_REDIRECT
POST = BINDING_HTTP_POST
XMLSEC = "/usr/bin/xmlsec1"
PASSWORD_CLASS = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


class SamlError(DomainError):
    http_status = 400


class InvalidSamlRequest(SamlError):
    code = "error.saml.invalid_request"


class UnknownServiceProvider(SamlError):
    code = "error.saml.unknown_service_provider"


class BadDestination(SamlError):
    code = "error.saml.bad_destination"


class ReplayedRequest(SamlError):
    code = "error.saml.replayed"


def _certificate_body(pem: str) -> str:
    lines = [line.strip() for line in pem.strip().splitlines()]
    return "".join(line for line in lines if line and not line.startswith("-----"))


def sp_metadata(sp: SamlServiceProvider) -> str:
    """The SP's metadata as the setup file describes it (pysaml2 reads SPs from metadata)."""
    key = ""
    if sp.certificate:
        key = (
            '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
            f"{_certificate_body(sp.certificate)}"
            "</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        )
    logout = ""
    if sp.single_logout_service:
        logout = "".join(
            f"<md:SingleLogoutService Binding={quoteattr(b)} "
            f"Location={quoteattr(sp.single_logout_service)}/>"
            for b in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST)
        )
    return (
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID={quoteattr(sp.entity_id)}>'
        '<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" '
        f'AuthnRequestsSigned="{"true" if sp.want_requests_signed else "false"}" '
        'WantAssertionsSigned="true">'
        f"{key}{logout}"
        f"<md:AssertionConsumerService Binding={quoteattr(BINDING_HTTP_POST)} "
        f'Location={quoteattr(sp.assertion_consumer_service)} index="0" isDefault="true"/>'
        "</md:SPSSODescriptor></md:EntityDescriptor>"
    )


SIGNATURE_HASHES = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512,
}


def verify_query_signature(raw_query: str, sp: SamlServiceProvider, *, message: str) -> bool:
    """Check an HTTP-Redirect signature (Bindings §3.4.4.1): the signed octets are
    ``<message>=…&RelayState=…&SigAlg=…`` as they appear, still URL-encoded, in the query.
    False when there is no signature; raises when there is one that does not verify."""
    raw = dict(part.split("=", 1) for part in raw_query.split("&") if "=" in part)
    if "Signature" not in raw:
        return False
    algorithm = SIGNATURE_HASHES.get(unquote_plus(raw.get("SigAlg", "")))
    if algorithm is None or not sp.certificate or message not in raw:
        raise InvalidSamlRequest("the request's signature cannot be checked (algorithm, key)")
    octets = "&".join(
        f"{name}={raw[name]}" for name in (message, "RelayState", "SigAlg") if name in raw
    )
    try:
        key = x509.load_pem_x509_certificate(sp.certificate.encode()).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(
            base64.b64decode(unquote_plus(raw["Signature"])),
            octets.encode(),
            padding.PKCS1v15(),
            algorithm(),
        )
    except (InvalidSignature, ValueError, AssertionError):
        raise InvalidSamlRequest("the request's signature does not verify") from None
    return True


@dataclass(frozen=True)
class IdentityProvider:
    server: Server
    setup: SignInSetup
    entity_id: str


_lock = threading.Lock()


def identity_provider(
    *,
    base_url: str,
    name: str,
    setup: SignInSetup,
    key: StoredKey,
    work_dir: Path,
    cache: dict[str, IdentityProvider],
) -> IdentityProvider:
    """The pysaml2 server of one point of sale, built once per configuration and key."""
    fingerprint = hashlib.sha256(
        repr((base_url, setup.saml_service_providers, key.certificate_pem)).encode()
    ).hexdigest()
    found = cache.get(fingerprint)
    if found is not None:
        return found
    with _lock:
        work_dir.mkdir(parents=True, exist_ok=True)
        key_file = work_dir / f"{fingerprint[:16]}.key.pem"
        cert_file = work_dir / f"{fingerprint[:16]}.cert.pem"
        key_file.write_text(key.private_pem)
        key_file.chmod(0o600)
        assert key.certificate_pem is not None
        cert_file.write_text(key.certificate_pem)
        entity_id = f"{base_url}/saml/metadata"
        config = IdPConfig()
        config.load(
            {
                "entityid": entity_id,
                "name": name,
                "service": {
                    "idp": {
                        "name": name,
                        "endpoints": {
                            "single_sign_on_service": [
                                (f"{base_url}/saml/sso", BINDING_HTTP_REDIRECT),
                                (f"{base_url}/saml/sso", BINDING_HTTP_POST),
                            ],
                            "single_logout_service": [
                                (f"{base_url}/saml/slo", BINDING_HTTP_REDIRECT),
                                (f"{base_url}/saml/slo", BINDING_HTTP_POST),
                            ],
                        },
                        "policy": {
                            "default": {
                                "lifetime": {"minutes": 5},
                                "attribute_restrictions": None,
                                "name_form": NAME_FORMAT_URI,
                            }
                        },
                        "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                        "sign_assertion": True,
                        "sign_response": True,
                        "want_authn_requests_signed": False,  # checked per SP below
                    }
                },
                "key_file": str(key_file),
                "cert_file": str(cert_file),
                "xmlsec_binary": XMLSEC,
                "metadata": {"inline": [sp_metadata(sp) for sp in setup.saml_service_providers]},
                "allow_unknown_attributes": True,
                "accepted_time_diff": 60,
            }
        )
        provider = IdentityProvider(Server(config=config), setup, entity_id)
        if len(cache) > 100:
            cache.clear()
        cache[fingerprint] = provider
        return provider


def metadata(provider: IdentityProvider) -> str:
    data = create_metadata_string(None, config=provider.server.config, sign=False)
    return data.decode() if isinstance(data, bytes) else str(data)


@dataclass(frozen=True)
class ParsedRequest:
    request_id: str
    service_provider: SamlServiceProvider
    response_args: dict[str, Any]
    relay_state: str | None


def parse_authn_request(
    provider: IdentityProvider,
    saml_request: str,
    *,
    binding: str,
    relay_state: str | None,
    raw_query: str | None,
) -> ParsedRequest:
    """Decode, find the registered SP, and check the signature: in the query string for
    HTTP-Redirect (``raw_query``), in the XML for HTTP-POST (pysaml2 verifies it)."""
    if not saml_request or len(saml_request) > 100_000:
        raise InvalidSamlRequest("no SAMLRequest, or one too large")
    try:
        request = provider.server.parse_authn_request(saml_request, binding)
    except Exception as exc:  # pysaml2 raises many kinds; all mean "not acceptable"
        log.info("SAML request refused: %s", exc)
        raise InvalidSamlRequest(
            "the SAML request is not valid or its signature is wrong"
        ) from None
    if request is None or request.message is None:
        raise InvalidSamlRequest("the SAML request is not valid")
    message = request.message
    issuer = (
        message.issuer.text.strip() if message.issuer is not None and message.issuer.text else ""
    )
    sp = provider.setup.service_provider(issuer)
    if sp is None:
        raise UnknownServiceProvider(f"service provider {issuer[:200]!r} is not registered here")
    if binding == BINDING_HTTP_REDIRECT:
        signed = verify_query_signature(raw_query or "", sp, message="SAMLRequest")
    else:
        signed = message.signature is not None
    if sp.want_requests_signed and not signed:
        raise InvalidSamlRequest("this service provider must sign its requests")
    if message.assertion_consumer_service_url not in (None, sp.assertion_consumer_service):
        raise BadDestination("the request asks for an ACS that is not the registered one")
    try:
        args = provider.server.response_args(message, [BINDING_HTTP_POST])
    except Exception as exc:
        log.info("SAML response arguments refused: %s", exc)
        raise BadDestination("no HTTP-POST ACS is registered for this service provider") from None
    if args.get("destination") != sp.assertion_consumer_service:
        raise BadDestination("the ACS is not the registered one")
    return ParsedRequest(str(message.id), sp, args, relay_state)


async def claim_request_id(
    engine: AsyncEngine,
    *,
    institution_id: int,
    point_of_sale_id: int,
    request_id: str,
    now: Any,
) -> None:
    """Record that this request id is answered; a second time is a replay."""
    try:
        async with transaction(engine) as conn:
            await conn.execute(
                sa.insert(db.saml_request).values(
                    institution_id=institution_id,
                    point_of_sale_id=point_of_sale_id,
                    request_id=request_id[:255],
                    seen_at=now,
                )
            )
    except IntegrityError:
        raise ReplayedRequest("this SAML request was already answered") from None


def authn_response(
    provider: IdentityProvider,
    parsed: ParsedRequest,
    *,
    contact_number: int,
    first_name: str | None,
    last_name: str | None,
    email: str | None,
) -> tuple[str, list[tuple[str, str]]]:
    """The signed response and where to post it: (ACS URL, form fields)."""
    identity = {"contactNumber": [str(contact_number)]}
    for name, value in (("givenName", first_name), ("sn", last_name), ("mail", email)):
        if value:
            identity[name] = [value]
    name_id = NameID(
        format=NAMEID_FORMAT_PERSISTENT,
        text=str(contact_number),
        name_qualifier=provider.entity_id,
        sp_name_qualifier=parsed.service_provider.entity_id,
    )
    response = provider.server.create_authn_response(
        identity,
        userid=str(contact_number),
        name_id=name_id,
        authn={"class_ref": PASSWORD_CLASS, "authn_auth": provider.entity_id},
        sign_response=True,
        sign_assertion=True,
        **parsed.response_args,
    )
    fields = [("SAMLResponse", base64.b64encode(str(response).encode()).decode())]
    if parsed.relay_state:
        fields.append(("RelayState", parsed.relay_state))
    return parsed.service_provider.assertion_consumer_service, fields


@dataclass(frozen=True)
class LogoutAnswer:
    """Where the browser goes after a single logout: a redirect URL or a form to post."""

    location: str | None
    action: str | None
    fields: list[tuple[str, str]]


def logout(
    provider: IdentityProvider,
    saml_request: str,
    *,
    binding: str,
    relay_state: str | None,
    raw_query: str | None,
) -> LogoutAnswer:
    """Parse a LogoutRequest of a registered SP and answer it with a signed LogoutResponse.
    The request must be signed (Profiles §4.4.4.1) with the SP's registered certificate."""
    if not saml_request or len(saml_request) > 100_000:
        raise InvalidSamlRequest("no SAMLRequest, or one too large")
    try:
        request = provider.server.parse_logout_request(saml_request, binding)
    except Exception as exc:
        log.info("SAML logout request refused: %s", exc)
        raise InvalidSamlRequest("the logout request is not valid") from None
    if request is None or request.message is None:
        raise InvalidSamlRequest("the logout request is not valid")
    issuer = (request.message.issuer.text or "").strip() if request.message.issuer else ""
    sp = provider.setup.service_provider(issuer)
    if sp is None or not sp.single_logout_service:
        raise UnknownServiceProvider("this service provider has no registered logout service")
    if binding == BINDING_HTTP_REDIRECT:
        signed = verify_query_signature(raw_query or "", sp, message="SAMLRequest")
    else:
        signed = request.message.signature is not None and bool(sp.certificate)
    if not signed:
        raise InvalidSamlRequest("a logout request must be signed")
    response = provider.server.create_logout_response(
        request.message, [BINDING_HTTP_REDIRECT], sign=True
    )
    args = provider.server.apply_binding(
        BINDING_HTTP_REDIRECT,
        str(response),
        sp.single_logout_service,
        relay_state or "",
        response=True,
        sign=True,
    )
    location = dict(args["headers"]).get("Location")
    return LogoutAnswer(location, None, [])
