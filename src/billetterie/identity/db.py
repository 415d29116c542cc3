"""Identity tables."""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

operator = sa.Table(
    "operator",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    sa.Column("login", sa.String(64), nullable=False, unique=True),
    sa.Column("partner", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(255), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("calls_per_minute", sa.Integer, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# --- contact sign-in on a point of sale (shop accounts, SSO) ---------------------------------
Big = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def contact_column() -> sa.Column[int]:
    """The contact a row is about: a contact number (contacts own that table)."""
    return sa.Column("contact_id", Big, nullable=False, index=True)


# What the setup file says about signing in on a point of sale.
point_of_sale_identity = sa.Table(
    "point_of_sale_identity",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    sa.Column("website_public_key", sa.Text, nullable=True),
    sa.Column("return_hosts", sa.JSON, nullable=False),
    sa.Column("saml_service_providers", sa.JSON, nullable=False),
    sa.Column("oidc_clients", sa.JSON, nullable=False),
    sa.Column("identity_provider", sa.JSON, nullable=True),
    sa.UniqueConstraint("point_of_sale_id"),
)

# The point of sale's own keys (SAML signing, OIDC token signing, cookie signing), made on
# first use.
identity_key = sa.Table(
    "identity_key",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("private_key", sa.Text, nullable=False),
    sa.Column("certificate", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("point_of_sale_id", "purpose"),
)

account_session = sa.Table(
    "account_session",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    contact_column(),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("method", sa.String(16), nullable=False),  # password, remember, oidc
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
)

remember_token = sa.Table(
    "remember_token",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    contact_column(),
    sa.Column("series", sa.String(32), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("used_at", UtcDateTime, nullable=True),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
)

login_failure = sa.Table(
    "login_failure",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("subject", sa.String(400), nullable=False),  # "account:<login>" or "address:<ip>"
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Index("ix_login_failure_subject_at", "institution_id", "subject", "at"),
)

account_token = sa.Table(
    "account_token",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    contact_column(),
    sa.Column("purpose", sa.String(16), nullable=False),  # verify, reset
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("used_at", UtcDateTime, nullable=True),
)

mail_message = sa.Table(
    "mail_message",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("point_of_sale_id", Big, nullable=True),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(255), nullable=True),
)

# SAML request ids and OIDC codes seen, so that none is accepted twice.
saml_request = sa.Table(
    "saml_request",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    sa.Column("request_id", sa.String(255), nullable=False),
    sa.Column("seen_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("point_of_sale_id", "request_id"),
)

oidc_code = sa.Table(
    "oidc_code",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    contact_column(),
    sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("redirect_uri", sa.String(2048), nullable=False),
    sa.Column("scope", sa.String(255), nullable=False),
    sa.Column("nonce", sa.String(255), nullable=True),
    sa.Column("code_challenge", sa.String(128), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("used_at", UtcDateTime, nullable=True),
)
