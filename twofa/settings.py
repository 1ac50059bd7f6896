"""Settings in one place, read from ``TWOFA_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A fixed development key so that `make demo` works with no configuration. `require_secret_key` (called by
# `twofa serve`, `worker` and `beat`) refuses it; never use it for real data.
DEV_SECRET_KEY = "dev-only-insecure-key-change-me-0123456789"  # noqa: S105


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWOFA_", extra="ignore")

    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'twofa.sqlite3'}"
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)

    mail_backend: Literal["smtp", "file", "memory"] = "file"
    mail_dir: Path = PROJECT_ROOT / "var" / "outbox"
    mail_from: str = "Wevion <noreply@wevion.ai>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ca_file: Path | None = None  # a private CA to trust for STARTTLS (default: the system's)
    smtp_timeout: float = 10.0
    # The name this host gives in EHLO. Unset: smtplib's choice (this host's FQDN, or its address), looked up once.
    smtp_ehlo_name: str | None = None
    # One connection per worker process, reused across messages. Off: a connection per message (for comparison).
    smtp_reuse_connection: bool = True

    issuer: str = "Wevion"
    templates_dir: Path = PROJECT_ROOT / "templates"
    reports_dir: Path = PROJECT_ROOT / "var" / "reports"

    email_otp_ttl: int = Field(default=300, ge=30, le=600)
    email_otp_max_tries: int = 5
    email_otp_resend_cooldown: int = 60
    email_otp_hourly_cap: int = 10

    # A queued outbox row this many seconds past due is taken for lost and dispatched again by the sweeper.
    outbox_sweep_grace: int = 30

    # HTTP API request limits (per minute). Counted in Redis when ratelimit_url is set, else per process.
    ratelimit_url: str | None = None
    ratelimit_per_ip: int = 120
    ratelimit_auth_per_ip: int = 30
    ratelimit_auth_per_account: int = 10

    # Requests of one API server process that may run their (synchronous) database work at once; the others wait
    # their turn in the queue of its slot threads (api.routing). Under the GIL, more threads than this contend
    # rather than overlap (bench/README.md); raise it when the database is far away.
    api_concurrency: int = Field(default=4, ge=1, le=256)

    login_challenge_ttl: int = 600
    session_ttl: int = 12 * 3600

    # Second-factor lockout: after `lockout_threshold` consecutive failures the second factor is locked for
    # `lockout_base_seconds`, doubling with each further failure up to `lockout_max_seconds`.
    lockout_threshold: int = 5
    lockout_base_seconds: int = 30
    lockout_max_seconds: int = 3600

    backup_code_count: int = 10
    backup_codes_low_warning: int = 3

    # argon2id cost. The defaults are argon2-cffi's (RFC 9106 "low memory"); tests lower them.
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    argon2_parallelism: int = 4


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def require_secret_key(settings: Settings | None = None) -> None:
    """Refuse to run a service with the development key (or none): it would encrypt real seeds with a key that is
    in the source code."""
    from twofa.errors import InvalidInput

    keys = [k.strip() for k in (settings or get_settings()).secret_key.get_secret_value().split(",")]
    if not keys or DEV_SECRET_KEY in keys or any(len(k) < 32 for k in keys):
        raise InvalidInput("set TWOFA_SECRET_KEY to a random secret of at least 32 characters before serving")
