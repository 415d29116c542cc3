"""Catalog tables. Every row carries ``institution_id``; business codes are unique per parent."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from billetterie.shared.db import UtcDateTime, id_column, institution_column, metadata, ref

Text = sa.JSON  # localised text: {"en": "...", "fr": "..."}
Big = sa.BigInteger().with_variant(sa.Integer, "sqlite")

institution = sa.Table(
    "institution",
    metadata,
    id_column(),
    sa.Column("code", sa.String(16), nullable=False, unique=True),
    sa.Column("name", Text, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("setup_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("setup_updated_at", UtcDateTime, nullable=True),
)


def setup_version_query() -> sa.Select[Any]:
    """The setup version of the institution ``:institution_id`` (a bind parameter)."""
    return sa.select(institution.c.setup_version).where(
        institution.c.id == sa.bindparam("institution_id")
    )


organization = sa.Table(
    "organization",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("time_zone", sa.String(64), nullable=False),
    sa.Column("main_language", sa.String(8), nullable=False),
    sa.Column("languages", sa.JSON, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

sales_channel = sa.Table(
    "sales_channel",
    metadata,
    id_column(),
    institution_column(),
    ref("organization"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("channel_type", sa.String(24), nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

payment_method = sa.Table(
    "payment_method",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("payment_type", sa.String(24), nullable=False),
    sa.Column("for_payment", sa.Boolean, nullable=False),
    sa.Column("for_reimbursement", sa.Boolean, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

point_of_sale = sa.Table(
    "point_of_sale",
    metadata,
    id_column(),
    institution_column(),
    ref("sales_channel"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("pos_type", sa.String(24), nullable=False),
    sa.Column("order_abandon_delay", sa.Integer, nullable=False),
    sa.Column("seat_selection_mode", sa.String(32), nullable=False),
    sa.Column("split_seating_allowed", sa.Boolean, nullable=False),
    sa.Column("max_seats_per_performance", sa.Integer, nullable=False),
    sa.Column("contact_login_mode", sa.String(24), nullable=False),
    sa.Column("guest_login_available", sa.Boolean, nullable=False),
    sa.Column("contact_account_creation_allowed", sa.Boolean, nullable=False),
    sa.Column("cookie_domain", sa.String(255), nullable=True),
    sa.Column("languages", sa.JSON, nullable=False),
    sa.Column("external_urls", sa.JSON, nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

point_of_sale_payment_method = sa.Table(
    "point_of_sale_payment_method",
    metadata,
    id_column(),
    institution_column(),
    ref("point_of_sale"),
    ref("payment_method"),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.UniqueConstraint("point_of_sale_id", "payment_method_id"),
)

vat_code = sa.Table(
    "vat_code",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("rate", sa.Integer, nullable=False),  # thousandths of a percent: 2100 = 2.1 %
    sa.Column("country", sa.String(2), nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

season = sa.Table(
    "season",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("start", UtcDateTime, nullable=False),
    sa.Column("end", UtcDateTime, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

audience_category = sa.Table(
    "audience_category",
    metadata,
    id_column(),
    institution_column(),
    ref("season"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("main_category", sa.String(24), nullable=False),
    sa.Column("secondary_category", sa.String(24), nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.UniqueConstraint("season_id", "code"),
)

audience_sub_category = sa.Table(
    "audience_sub_category",
    metadata,
    id_column(),
    institution_column(),
    ref("audience_category"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # FULL | REDUCED | FREE
    sa.Column("cross_seat_category", sa.Boolean, nullable=False),
    sa.Column("required_codes", sa.JSON, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.UniqueConstraint("audience_category_id", "code"),
)

price_level = sa.Table(
    "price_level",
    metadata,
    id_column(),
    institution_column(),
    ref("season"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.UniqueConstraint("season_id", "code"),
)

theme = sa.Table(
    "theme",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("parent_id", Big, sa.ForeignKey("theme.id", ondelete="CASCADE"), nullable=True),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

# --- venues: site -> space -> physical configuration -> areas, blocks, seats ----------------

site = sa.Table(
    "site",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("address", sa.JSON, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

space = sa.Table(
    "space",
    metadata,
    id_column(),
    institution_column(),
    ref("site"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.UniqueConstraint("site_id", "code"),
)

physical_configuration = sa.Table(
    "physical_configuration",
    metadata,
    id_column(),
    institution_column(),
    ref("space"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("stage_x", sa.Float, nullable=False),
    sa.Column("stage_y", sa.Float, nullable=False),
    sa.UniqueConstraint("space_id", "code"),
)

area = sa.Table(
    "area",
    metadata,
    id_column(),
    institution_column(),
    ref("physical_configuration"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.UniqueConstraint("physical_configuration_id", "code"),
)

block = sa.Table(
    "block",
    metadata,
    id_column(),
    institution_column(),
    ref("area"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.UniqueConstraint("area_id", "code"),
)

seat = sa.Table(
    "seat",
    metadata,
    id_column(),
    institution_column(),
    ref("physical_configuration"),
    ref("block"),
    sa.Column("row", sa.String(8), nullable=False),
    sa.Column("number", sa.String(8), nullable=False),
    sa.Column("x", sa.Float, nullable=False),
    sa.Column("y", sa.Float, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),  # lower is better, for best-available
    sa.UniqueConstraint("block_id", "row", "number"),
)

logical_configuration = sa.Table(
    "logical_configuration",
    metadata,
    id_column(),
    institution_column(),
    ref("physical_configuration"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.UniqueConstraint("physical_configuration_id", "code"),
)

seat_category = sa.Table(
    "seat_category",
    metadata,
    id_column(),
    institution_column(),
    ref("logical_configuration"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("color", sa.String(7), nullable=True),
    sa.UniqueConstraint("logical_configuration_id", "code"),
)

seat_assignment = sa.Table(
    "seat_assignment",
    metadata,
    id_column(),
    institution_column(),
    ref("logical_configuration"),
    ref("seat"),
    ref("seat_category"),
    sa.UniqueConstraint("logical_configuration_id", "seat_id"),
)

zone = sa.Table(  # a non-numbered part of a logical configuration
    "zone",
    metadata,
    id_column(),
    institution_column(),
    ref("logical_configuration"),
    ref("seat_category"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("capacity", sa.Integer, nullable=False),
    sa.UniqueConstraint("logical_configuration_id", "code"),
)

# --- products -----------------------------------------------------------------------------

product = sa.Table(
    "product",
    metadata,
    id_column(),
    institution_column(),
    ref("season"),
    ref("vat_code", ondelete="RESTRICT"),
    sa.Column("theme_id", Big, sa.ForeignKey("theme.id", ondelete="SET NULL"), nullable=True),
    sa.Column("sub_theme_id", Big, sa.ForeignKey("theme.id", ondelete="SET NULL"), nullable=True),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("family", sa.String(16), nullable=False),
    sa.Column("sub_type", sa.String(32), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("description", Text, nullable=False),
    sa.Column("alert_ratio", sa.Integer, nullable=False),  # percent of capacity left
    sa.Column("contact_required", sa.Boolean, nullable=False),
    sa.Column("external_url", sa.String(512), nullable=True),
    # images: [{"url": ..., "alt": {"en": ..., ...}}]
    sa.Column("media", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

sales_period = sa.Table(
    "sales_period",
    metadata,
    id_column(),
    institution_column(),
    ref("product"),
    ref("sales_channel"),
    sa.Column("start", UtcDateTime, nullable=False),
    sa.Column("end", UtcDateTime, nullable=False),
    sa.UniqueConstraint("product_id", "sales_channel_id"),
)

performance = sa.Table(
    "performance",
    metadata,
    id_column(),
    institution_column(),
    ref("product"),
    ref("space", ondelete="RESTRICT"),
    ref("logical_configuration", ondelete="RESTRICT"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("start", UtcDateTime, nullable=False),
    sa.Column("duration", sa.Integer, nullable=False),  # seconds
    sa.Column("name", Text, nullable=True),
    sa.UniqueConstraint("institution_id", "code"),
)

product_item = sa.Table(  # what a simple product sells: a pass entry, a card, a parking place
    "product_item",
    metadata,
    id_column(),
    institution_column(),
    ref("product"),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # OPEN | TIMESLOT
    sa.Column("capacity", sa.Integer, nullable=True),  # None: unlimited
    sa.Column("validity_days", sa.Integer, nullable=True),
    sa.Column("schedule", sa.JSON, nullable=True),  # the rule timeslots were generated from
    sa.UniqueConstraint("product_id", "code"),
)

timeslot = sa.Table(
    "timeslot",
    metadata,
    id_column(),
    institution_column(),
    ref("product_item"),
    sa.Column("start", UtcDateTime, nullable=False),
    sa.Column("end", UtcDateTime, nullable=False),
    sa.Column("quota", sa.Integer, nullable=False),
    sa.UniqueConstraint("product_item_id", "start"),
)

composed_product_performance = sa.Table(  # season tickets and packages
    "composed_product_performance",
    metadata,
    id_column(),
    institution_column(),
    ref("product"),
    ref("performance"),
    sa.UniqueConstraint("product_id", "performance_id"),
)

price = sa.Table(
    "price",
    metadata,
    id_column(),
    institution_column(),
    ref("product"),
    ref("performance", nullable=True),
    ref("product_item", nullable=True),
    ref("seat_category", nullable=True),
    ref("audience_sub_category"),
    ref("price_level", nullable=True),
    sa.Column("amount", sa.Integer, nullable=False),  # thousandths
)

contingent = sa.Table(
    "contingent",
    metadata,
    id_column(),
    institution_column(),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", Text, nullable=False),
    sa.UniqueConstraint("institution_id", "code"),
)

contingent_sales_channel = sa.Table(
    "contingent_sales_channel",
    metadata,
    id_column(),
    institution_column(),
    ref("contingent"),
    ref("sales_channel"),
    sa.UniqueConstraint("contingent_id", "sales_channel_id"),
)

contingent_allocation = sa.Table(  # places of a performance set aside for a contingent
    "contingent_allocation",
    metadata,
    id_column(),
    institution_column(),
    ref("contingent"),
    ref("performance"),
    ref("seat_category"),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.UniqueConstraint("contingent_id", "performance_id", "seat_category_id"),
)

catalog_snapshot = sa.Table(  # the detailed catalog, built when the setup changes
    "catalog_snapshot",
    metadata,
    id_column(),
    institution_column(),
    ref("sales_channel"),
    sa.Column("scope", sa.String(16), nullable=False),  # STANDARD | EXTENDED
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # JSON of catalogData
    sa.Column("summary", sa.LargeBinary, nullable=False),  # JSON: product summaries, families
    sa.UniqueConstraint("sales_channel_id", "scope"),
)
