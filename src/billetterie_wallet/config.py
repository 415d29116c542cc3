"""The wallet's settings, read once from the environment (``BILLETTERIE_WALLET_*``)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WalletSettings(BaseSettings):
    """Everything the wallet reads from its environment; nothing else reads ``os.environ``."""

    model_config = SettingsConfigDict(env_prefix="BILLETTERIE_WALLET_", extra="ignore")

    var_dir: Path = Field(default=Path("var"), description="Where local state lives.")
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means SQLite at <var_dir>/wallet.db."
    )
    secret_key: str = Field(
        default="",
        description="Signs sessions, feedback keys and CSRF tokens; empty means a key generated "
        "once in var_dir.",
    )
    public_url: str = Field(
        default="", description="Base URL used in mails (login links, transfer offers)."
    )
    session_lifetime_seconds: int = Field(default=30 * 86400, ge=300)
    login_link_lifetime_seconds: int = Field(default=15 * 60, ge=60)
    deletion_timeout_seconds: int = Field(
        default=24 * 3600,
        ge=0,
        description="A DELETION_PENDING ticket becomes DELETED after this even if some device "
        "never acknowledged.",
    )
    transfer_timeout_seconds: int = Field(
        default=72 * 3600, ge=60, description="Default lifetime of a transfer offer."
    )
    default_max_transfers: int = Field(default=3, ge=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    background_tasks: bool = Field(default=True, description="Run the timeout sweeper.")
    dev_mail: bool = Field(
        default=False,
        description="Show the development mail outbox at /dev/mail (never in production).",
    )
    secure_cookies: bool = Field(default=False, description="Mark cookies Secure (HTTPS).")
    db_echo: bool = False

    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.var_dir / 'wallet.db').resolve()}"

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        path = self.var_dir / "wallet-secret.key"
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
