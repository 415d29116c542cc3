"""Contact tables. Every row carries ``institution_id``; a contact's number is its id."""

from __future__ import annotations

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

contact = sa.Table(
    "contact",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("title", sa.String(32), nullable=True),
    sa.Column("first_name", sa.String(128), nullable=True),
    sa.Column("last_name", sa.String(128), nullable=True),
    sa.Column("structure_name", sa.String(255), nullable=True),
    sa.Column("nickname", sa.String(64), nullable=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("email_key", sa.String(320), nullable=True, index=True),  # lower-cased, for search
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("birth_date", sa.String(10), nullable=True),
    sa.Column("language", sa.String(8), nullable=True),
    sa.Column("login", sa.String(320), nullable=True),  # lower-cased email; unique per institution
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("email_verified_at", UtcDateTime, nullable=True),
    sa.Column("origin_sales_channel_id", sa.BigInteger, nullable=True),
    sa.Column("origin_point_of_sale_id", sa.BigInteger, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("erased_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("institution_id", "login"),
)

contact_address = sa.Table(
    "contact_address",
    metadata,
    id_column(),
    institution_column(),
    ref("contact"),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("street", sa.String(255), nullable=True),
    sa.Column("street2", sa.String(255), nullable=True),
    sa.Column("zip", sa.String(16), nullable=True),
    sa.Column("city", sa.String(128), nullable=True),
    sa.Column("country_code", sa.String(2), nullable=True),
    sa.UniqueConstraint("contact_id", "kind"),
)

# What an organization lets its contacts choose (interests) and consent to; from the setup file.
contact_criterion = sa.Table(
    "contact_criterion",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", sa.JSON, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

contact_authorization_type = sa.Table(
    "contact_authorization_type",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", sa.JSON, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

contact_criterion_choice = sa.Table(
    "contact_criterion_choice",
    metadata,
    id_column(),
    institution_column(),
    ref("contact"),
    ref("contact_criterion"),
    sa.UniqueConstraint("contact_id", "contact_criterion_id"),
)

contact_authorization = sa.Table(
    "contact_authorization",
    metadata,
    id_column(),
    institution_column(),
    ref("contact"),
    ref("contact_authorization_type"),
    sa.Column("allowed", sa.Boolean, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("source", sa.String(128), nullable=False),
    sa.UniqueConstraint("contact_id", "contact_authorization_type_id"),
)

ticket_holder = sa.Table(
    "ticket_holder",
    metadata,
    id_column(),
    institution_column(),
    ref("contact"),
    sa.Column("first_name", sa.String(128), nullable=False),
    sa.Column("last_name", sa.String(128), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("birth_date", sa.String(10), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# A contact known to an external identity provider (OIDC ``sub``) of a point of sale.
contact_external_identity = sa.Table(
    "contact_external_identity",
    metadata,
    id_column(),
    institution_column(),
    ref("contact"),
    sa.Column("provider", sa.String(255), nullable=False),  # the provider's issuer
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("institution_id", "provider", "subject"),
)
