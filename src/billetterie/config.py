"""One typed settings object, read once from the environment (``BILLETTERIE_*``) and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the box office reads from its environment.

    Nothing else in the code base reads ``os.environ``: the CLI builds one ``Settings`` and
    hands it to :func:`billetterie.app.build_app` and to the services that need it.
    """

    model_config = SettingsConfigDict(env_prefix="BILLETTERIE_", extra="ignore")

    var_dir: Path = Field(
        default=Path("var"), description="Where local state lives (SQLite, keys)."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL; empty means SQLite at <var_dir>/billetterie.db.",
    )
    jwt_secret: str = Field(
        default="",
        description="HMAC key for operator tokens; empty means a key generated once in var_dir.",
    )
    barcode_key_secret: str = Field(
        default="",
        description="Secret the barcode signing keys are encrypted under (AES-GCM, key derived "
        "with HKDF); empty means a secret generated once in var_dir.",
    )
    payment_test_webhook_secret: str = Field(
        default="",
        description="HMAC key of the built-in test card provider's webhooks; empty means a key "
        "generated once in var_dir.",
    )
    payment_test_provider: bool = Field(
        default=True,
        description="Serve the built-in test card provider and its hosted page (demo, tests). "
        "Turn it off in production: it takes no money.",
    )
    token_lifetime_seconds: int = Field(default=3600, ge=60, le=86400)
    demo_secret: str = Field(default="", description="Secret of the demo operators.")
    catalog_max_age_seconds: int = Field(
        default=60, ge=0, description="Cache-Control max-age of the catalog GET mirrors."
    )
    gzip_minimum_size: int = Field(default=1024, ge=0)
    availability_max_age_seconds: int = Field(
        default=5, ge=0, description="Cache-Control max-age of the availability GET mirrors."
    )
    background_tasks: bool = Field(
        default=True,
        description="Run the background loops in each server process: the availability board "
        "follower, the outbox dispatcher and the periodic sweepers (the hold sweeper...).",
    )
    rate_limits: bool = Field(
        default=True,
        description="Limit calls on the partner surface (on/off; off for benchmarks).",
    )
    rate_limit_per_minute: int = Field(
        default=60,
        ge=1,
        description="Calls per window per institution per endpoint, unless the operator has "
        "its own callsPerMinute.",
    )
    rate_limit_window_seconds: int = Field(
        default=60, ge=1, le=3600, description="The window the call limits count over."
    )
    rate_limit_auth_per_minute: int = Field(
        default=60, ge=0, description="Token requests per window per client address; 0 = none."
    )
    rate_limit_key_prefix: str = Field(
        default="billetterie", description="Prefix of the rate-limit counters' Redis keys."
    )
    redis_url: str = Field(
        default="",
        description="redis://host:port/db keeps the rate-limit counters in Redis, shared by "
        "every process; empty keeps them in each process's memory.",
    )
    idempotent_methods: list[str] = Field(
        default=[
            "createOrUpdateOrder",
            "closeOrder",
            "cancelOperations",
            "createPaymentsAndCloseOrder",
            "reopenOrder",
            "abandonMovements",
            "/api/v1/payments/",
        ],
        description="RPC method names, and path prefixes starting with '/', on which "
        "Idempotency-Key applies (JSON list in the environment).",
    )
    idempotency_ttl_seconds: int = Field(
        default=86400, ge=60, description="How long a stored Idempotency-Key answer is kept."
    )
    idempotency_lease_seconds: int = Field(
        default=60,
        ge=1,
        description="After this long an in-flight Idempotency-Key (a crashed call) is taken over.",
    )
    outbox_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the outbox dispatcher polls (besides NOTIFY)."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="Timeout of one webhook delivery attempt."
    )
    public_url: str = Field(
        default="", description="Base URL printed by the demo and used in links sent by mail."
    )
    shop_point_of_sale: str = Field(
        default="",
        description="The shop /api/1/redirect/... links land on when they name none (pos=).",
    )
    smtp_host: str = Field(default="", description="SMTP server for shop mail; empty: none.")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_sender: str = Field(default="billetterie@localhost", description="From: of shop mail.")
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    dev_mail: bool = Field(
        default=False,
        description="Deliver shop mail to an in-memory sink shown at /dev/mail (development).",
    )
    db_echo: bool = False

    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.var_dir / 'billetterie.db').resolve()}"

    def resolved_jwt_secret(self) -> str:
        """The token key: configured, or generated once and kept in ``var_dir`` (0600)."""
        if self.jwt_secret:
            return self.jwt_secret
        import secrets

        path = self.var_dir / "jwt.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    def resolved_barcode_key_secret(self) -> str:
        """The secret barcode private keys are encrypted under: configured, or generated once
        in ``var_dir`` (0600). Losing it makes the stored signing keys unusable."""
        return self.barcode_key_secret or self._generated_secret("barcode.key")

    def resolved_payment_test_webhook_secret(self) -> str:
        """The test card provider's webhook key: configured, or generated once in ``var_dir``."""
        return self.payment_test_webhook_secret or self._generated_secret("payment-test.key")

    def _generated_secret(self, name: str) -> str:
        import secrets

        path = self.var_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


def normalize_database_url(url: str) -> str:
    """Accept the usual spellings (``postgresql://``, ``sqlite:///``) and pick the async driver."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") or url == "sqlite://":
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url
