"""Settings in one place, read from ``TWOFA_*`` environment variables."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from twofa.errors import InvalidInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A fixed development key so that `make demo` works with no configuration. `require_secret_key` (called by every
# edge that serves) refuses it; never use it for real data.
DEV_SECRET_KEY = "dev-only-insecure-key-change-me-0123456789"  # noqa: S105


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWOFA_", extra="ignore")

    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'twofa.sqlite3'}"
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)

    # The demo's default; services start only with a backend set explicitly (``require_mail_backend``).
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

    # HTTP API limits, in moving windows; counted in Redis when ratelimit_url is set, else per process. Requests a
    # minute per client address (any endpoint); failed sign-ins and code checks a minute per client address
    # (`_auth_per_ip`) and per account + address (`_auth_per_account`); and failures of an account from any client
    # that has not signed in to it before (no device token), until a sign-in succeeds (NIST SP 800-63B 5.2.2 allows
    # at most 100 consecutive failures per account).
    ratelimit_url: str | None = None
    ratelimit_per_ip: int = Field(default=120, ge=1)
    ratelimit_auth_per_ip: int = Field(default=30, ge=1)
    ratelimit_auth_per_account: int = Field(default=10, ge=1)
    ratelimit_account_failures: int = Field(default=100, ge=1, le=100)
    # How long a device token (issued at a sign-in, OWASP's device cookie) keeps its client's own budget.
    device_token_days: int = Field(default=180, ge=1, le=400)
    # Proxies whose X-Forwarded-For names the client: addresses or networks, comma-separated (default: none, the
    # peer is the client).
    forwarded_allow_ips: str = ""

    # Requests of one API server process that may run their (synchronous) database work at once; the others wait
    # their turn in the queue of its slot threads (api.routing). Under the GIL, more threads contend rather than
    # overlap; raise it when the database is far away.
    api_concurrency: int = Field(default=4, ge=1, le=256)

    # Seconds a new database connection is retried while the server is unreachable (a restart, a failover) before the
    # request fails; 0: fail at once.
    database_connect_wait: float = Field(default=10.0, ge=0, le=120)

    login_challenge_ttl: int = 600
    session_ttl: int = 12 * 3600
    session_idle_timeout: int = Field(default=30 * 60, ge=60)  # NIST SP 800-63B 7.2 (AAL2)

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

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def trusted_proxies(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.forwarded_allow_ips)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.1, 10.1.0.0/16"``: the networks named (an address stands for itself); ValueError on anything else."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


MIN_KEY_LENGTH = 32
MIN_KEY_DISTINCT = 16  # a long key of few distinct characters ("x" * 40) is long, not random
NEW_KEY_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def secret_keys(settings: Settings | None = None) -> list[str]:
    """The keys of ``TWOFA_SECRET_KEY``, comma-separated: the first encrypts and keys new hashes, all decrypt."""
    return [k.strip() for k in (settings or get_settings()).secret_key.get_secret_value().split(",") if k.strip()]


def weak_key_reason(key: str) -> str | None:
    """Why ``key`` must not protect real data, or None. Never says what the key is."""
    if key == DEV_SECRET_KEY:
        return "is the development key, which is in the source code"
    if len(key) < MIN_KEY_LENGTH:
        return f"is shorter than {MIN_KEY_LENGTH} characters"
    if len(set(key)) < MIN_KEY_DISTINCT:
        return f"has fewer than {MIN_KEY_DISTINCT} distinct characters"
    return None


def require_secret_key(settings: Settings | None = None, *, first_only: bool = False) -> None:
    """Refuse to run with the development key, none, or a weak one: it would protect real seeds with a key that is
    in the source code or easily guessed. The one check of every edge that serves (``twofa serve``, ``worker``,
    ``beat``, ``api.app.create_app``, a bare ``celery -A workers worker``). ``first_only``: only the key that
    encrypts must be strong (``twofa keys rotate`` moves the seeds away from a weak old key)."""
    keys = secret_keys(settings)
    advice = f"set TWOFA_SECRET_KEY to a random secret of {MIN_KEY_LENGTH}+ characters ({NEW_KEY_HINT})"
    if not keys:
        raise InvalidInput(f"{advice}: it is empty")
    for number, key in enumerate(keys[:1] if first_only else keys, start=1):
        reason = weak_key_reason(key)
        if reason is not None:
            which = "it" if len(keys) == 1 else f"its key {number} of {len(keys)}"
            raise InvalidInput(f"{advice}: {which} {reason}")


def require_mail_backend(settings: Settings | None = None) -> None:
    """Services send mail only where told to: the ``file`` default (the demo's) would write email codes to disk."""
    if "mail_backend" not in (settings or get_settings()).model_fields_set:
        raise InvalidInput(
            "set TWOFA_MAIL_BACKEND: smtp to send through TWOFA_SMTP_HOST, or file to write every message, "
            "email codes included, to TWOFA_MAIL_DIR"
        )


def require_service_settings(settings: Settings | None = None) -> None:
    """What ``serve``, ``worker`` and ``beat`` check before they start."""
    require_secret_key(settings)
    require_mail_backend(settings)
