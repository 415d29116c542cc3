"""Who calls the partner surface."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operator:
    """A virtual operator: bound to one point of sale, which fixes its institution, sales
    channel, catalog and payment methods."""

    id: int
    institution_id: int
    login: str
    partner: str
    point_of_sale_id: int
    calls_per_minute: int | None


@dataclass(frozen=True)
class SamlServiceProvider:
    entity_id: str
    assertion_consumer_service: str
    single_logout_service: str | None
    certificate: str | None
    want_requests_signed: bool


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    name: str | None
    redirect_uris: tuple[str, ...]
    client_secret_hash: str | None


@dataclass(frozen=True)
class ExternalProvider:
    issuer: str
    client_id: str
    client_secret: str
    name: str
    scopes: tuple[str, ...]
    exclusive: bool


@dataclass(frozen=True)
class SignInSetup:
    """How contacts sign in on one point of sale, as its setup file says."""

    website_public_key: str | None = None
    return_hosts: tuple[str, ...] = ()
    saml_service_providers: tuple[SamlServiceProvider, ...] = ()
    oidc_clients: tuple[OidcClient, ...] = ()
    identity_provider: ExternalProvider | None = None

    def service_provider(self, entity_id: str) -> SamlServiceProvider | None:
        return next((p for p in self.saml_service_providers if p.entity_id == entity_id), None)

    def oidc_client(self, client_id: str) -> OidcClient | None:
        return next((c for c in self.oidc_clients if c.client_id == client_id), None)


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """``host`` (lower-case, with its port if any) matches a registered host; ``*.example.org``
    matches the sub-domains of example.org, never example.org itself or look-alikes."""
    host = host.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False
