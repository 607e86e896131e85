"""Settings from SMSQ_* environment variables and an optional `.env` file.

One place reads the environment so that every process (web, worker, beat,
producer) agrees. Secrets are `SecretStr`, so a repr or a log line never shows
them.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from producer.sentinel import passwords as sentinel_passwords

DlrMode = Literal["pull", "push", "both"]


class ProviderSettings(BaseSettings):
    """Settings shared by every gateway; subclasses add credentials and a prefix."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")
    name: ClassVar[str] = ""
    secret_fields: ClassVar[tuple[str, ...]] = ()

    base_url: str = ""
    sender: str | None = None
    rate_limit: float | None = Field(default=None, gt=0)
    low_balance: float | None = None
    expiry_warn_days: int = Field(default=7, ge=0)
    dlr_mode: DlrMode = "pull"
    timeout_seconds: float = Field(default=10.0, gt=0)

    @property
    def configured(self) -> bool:
        """A provider is configured when all of its credentials are set."""
        return all(self.secret(f) for f in self.secret_fields)

    def secret(self, field: str) -> str:
        value = getattr(self, field)
        if value is None:
            return ""
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    def secret_values(self) -> list[str]:
        """Every secret this provider holds, for redaction in logs."""
        return [s for s in (self.secret(f) for f in self.secret_fields) if s]


class Settings(BaseSettings):
    """Process-wide settings (the contract's table, plus a few of our own)."""

    # A refused value is never echoed: it may be a secret (SMSQ_API_KEYS).
    model_config = SettingsConfigDict(
        env_prefix="SMSQ_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    broker_url: str | None = None
    # Celery's Sentinel form of the broker URL (producer.sentinel): the group's name,
    # and the sentinels' own password when they have one.
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: SecretStr | None = None
    database_url: str | None = None
    data_dir: Path = Path("./var")
    public_url: str | None = None
    default_provider: str | None = None
    routes: str | None = None
    alert_webhook_url: str | None = None
    flower_basic_auth: SecretStr | None = None
    # The operator's dashboard at /ui on the web process (`user:password`); unset: 404.
    ui_basic_auth: SecretStr | None = None
    # How often beat rolls new events up into the dashboard's summary table.
    ui_rollup_seconds: float = Field(default=5.0, gt=0)
    api_keys: SecretStr | None = None
    balance_check_seconds: float = Field(default=3600, gt=0)
    poll_schedule: str = "30,60,120,300,600,1800,3600"
    # Our own extensions.
    retry_deadline_seconds: float = Field(default=1800, gt=0)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_cap_seconds: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=30, ge=1)
    enqueue_failure: Literal["keep", "raise"] = "keep"
    uncertain_send: Literal["reconcile", "resend", "fail"] = "reconcile"
    tick_seconds: float = Field(default=2.0, gt=0)
    sweep_after_seconds: float = Field(default=120.0, gt=0)
    # A row `sending` this long is settled (SMSQ_UNCERTAIN_SEND) even if its worker
    # still beats: a hung task. Rows of a dead worker settle within about a minute.
    stuck_sending_seconds: float = Field(default=330.0, ge=30)
    # Delivery-report URL tokens only. While rotating, the previous value's tokens are
    # accepted too (until SMSQ_CALLBACK_SECRET_PREVIOUS is unset again).
    callback_secret: SecretStr | None = None
    callback_secret_previous: SecretStr | None = None
    # Signs status callbacks to the application (X-Smsq-Timestamp, X-Smsq-Signature);
    # unset: callbacks go unsigned and each process warns once.
    app_callback_secret: SecretStr | None = None
    # `callback_url` may aim at loopback/private/link-local... addresses (tests, one host).
    callback_allow_private: bool = False
    # The web edge: request bodies above this are refused (413); recipients per HTTP request.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    http_max_bulk: int = Field(default=1000, ge=1)
    # Limits that stop pumping (producer.quotas): recipients per API key over HTTP, and
    # messages per number over every caller (`off` disables either).
    api_key_limit: str = "600/minute;100000/day"
    recipient_limit: str = "10/hour"
    # Calling codes numbers may have (comma list; unset: all), and whether premium-rate,
    # shared-cost, freephone and non-geographic numbers may be sent to.
    allowed_countries: str | None = None
    allow_special_numbers: bool = False
    # `both` DLR mode: wait this long for a push before falling back to polling.
    push_grace_seconds: float = Field(default=600.0, gt=0)
    # Status callbacks to the application (`callback_url`): attempts and per-POST timeout.
    app_callback_max_attempts: int = Field(default=12, ge=1)
    app_callback_timeout_seconds: float = Field(default=5.0, gt=0)
    # Circuit breaker per provider: open after this many retryable failures in a row,
    # stay open (no calls, fallback used) for the cool-down.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    # Balance alerts: e-mail (besides SMSQ_ALERT_WEBHOOK_URL and the log), re-arming
    # and the burn-rate window.
    alert_email_to: str | None = None  # comma list of addresses
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, gt=0, lt=65536)  # unset: 465 with SSL, else 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "smsq@localhost"
    smtp_starttls: bool = False
    smtp_ssl: bool = False  # implicit TLS from the first byte (port 465)
    # Log in (send the password) over a connection without TLS: refused unless true.
    smtp_allow_plaintext: bool = False
    # A low-balance alert re-arms only once the balance is above threshold x this ratio.
    alert_rearm_ratio: float = Field(default=1.1, ge=1.0)
    burn_window_days: float = Field(default=7.0, gt=0)
    # Retention (`worker.store.retention`): this many days after a message became final,
    # its number is masked and its text and its events' raw payloads removed (counts,
    # statuses and times kept). 0 keeps everything.
    retention_days: int = Field(default=90, ge=0)
    log_json: bool = False
    log_level: str = "INFO"
    # Traffic classes (`producer.traffic`): `HH:MM-HH:MM` in the recipient's local time
    # (unset: none), for these priorities.
    quiet_hours: str | None = None
    quiet_priorities: str = "bulk"

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        from producer import sentinel

        if sentinel.is_sentinel(value):
            sentinel.parse(value or "", "mymaster")  # the form; the master is checked below
        return value

    @field_validator("redis_sentinel_master")
    @classmethod
    def _check_sentinel_master(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the Sentinel group (default mymaster)")
        return value.strip()

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: SecretStr | None) -> SecretStr | None:
        parse_api_keys(value.get_secret_value() if value else "")
        return value

    @field_validator("ui_basic_auth")
    @classmethod
    def _check_ui_auth(cls, value: SecretStr | None) -> SecretStr | None:
        user, sep, password = (value.get_secret_value() if value else "").partition(":")
        if value is not None and value.get_secret_value() and not (sep and user and password):
            raise ValueError("SMSQ_UI_BASIC_AUTH must be user:password, both non-empty")
        return value

    @field_validator("api_key_limit", "recipient_limit")
    @classmethod
    def _check_limit(cls, value: str, info: ValidationInfo) -> str:
        from producer.quotas import parse_limit

        parse_limit(value, f"SMSQ_{str(info.field_name).upper()}")
        return value

    @field_validator("allowed_countries")
    @classmethod
    def _check_countries(cls, value: str | None) -> str | None:
        parse_calling_codes(value)
        return value

    @property
    def allowed_calling_codes(self) -> frozenset[int]:
        return parse_calling_codes(self.allowed_countries)

    @field_validator("poll_schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _check_quiet_hours(cls, value: str | None) -> str | None:
        from producer.traffic import parse_window

        if value is None or not value.strip():
            return None
        parse_window(value)
        return value

    @field_validator("quiet_priorities")
    @classmethod
    def _check_quiet_priorities(cls, value: str) -> str:
        from producer.traffic import parse_priorities

        parse_priorities(value)
        return value

    @property
    def poll_delays(self) -> list[float]:
        return parse_schedule(self.poll_schedule)

    def configured_providers(self) -> list[str]:
        return [n for n in provider_names() if provider_settings(n).configured]


def parse_schedule(value: str) -> list[float]:
    """Parse `30,60,120` into delays; every delay must be a positive number."""
    delays: list[float] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            delay = float(part)
        except ValueError:
            raise ValueError(f"SMSQ_POLL_SCHEDULE: {part!r} is not a number of seconds") from None
        if delay <= 0:
            raise ValueError(f"SMSQ_POLL_SCHEDULE: {part!r} must be above zero")
        delays.append(delay)
    if not delays:
        raise ValueError("SMSQ_POLL_SCHEDULE: give at least one delay in seconds")
    return delays


def parse_calling_codes(value: str | None) -> frozenset[int]:
    """`243,228,380` (a leading + allowed) into calling codes; empty: every country."""
    codes: set[int] = set()
    for part in (value or "").split(","):
        part = part.strip().lstrip("+")
        if not part:
            continue
        if not part.isdigit() or not 1 <= len(part) <= 3:
            raise ValueError(f"SMSQ_ALLOWED_COUNTRIES: {part!r} is not a calling code like 243")
        codes.add(int(part))
    return frozenset(codes)


_KEY_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
DEFAULT_KEY_NAME = "default"


def parse_api_keys(raw: str) -> list[tuple[str, str]]:
    """`name:key,...` (a bare key is named `default`) into (name, key) pairs.

    Several keys may share a name (rotation: both read the same messages). The
    error names the entry's position, never the key."""
    pairs: list[tuple[str, str]] = []
    for position, item in enumerate((i.strip() for i in raw.split(",")), start=1):
        if not item:
            continue
        name, sep, key = item.partition(":")
        if not sep:
            name, key = DEFAULT_KEY_NAME, item
        name, key = name.strip(), key.strip()
        if not _KEY_NAME.match(name):
            raise ValueError(
                f"SMSQ_API_KEYS entry {position}: the name must be 1-100 letters, digits, "
                "'_', '.' or '-'"
            )
        if not key:
            raise ValueError(f"SMSQ_API_KEYS entry {position}: the key after ':' is empty")
        pairs.append((name, key))
    return pairs


STACK_ENV = "stack.env"


def stack_env_file() -> Path | None:
    """`SMSQ_DATA_DIR/stack.env`, written by a running `smsq dev` stack (its broker,
    sandbox URLs and credentials), so `smsq send`, `smsq status` and the producer in a
    second shell reach it with no exports; None when absent or its stack has stopped.
    Real environment variables and `.env` still win over it."""
    path = Path(os.environ.get("SMSQ_DATA_DIR") or "./var") / STACK_ENV
    try:
        first = path.read_text().split("\n", 1)[0]
        pid = int(first.rsplit(" ", 1)[1])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return path


def env_files() -> tuple[str, ...]:
    """The dotenv files settings read, first to last (a later one wins)."""
    stack = stack_env_file()
    return (str(stack), ".env") if stack else (".env",)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(_env_file=env_files())  # type: ignore[call-arg]


def provider_names() -> tuple[str, ...]:
    """Every gateway smsq knows (`worker.gateways.registry`: the one list)."""
    from worker.gateways.registry import names

    return names()


@lru_cache(maxsize=32)
def provider_settings(name: str) -> ProviderSettings:
    """The gateway's own settings class (declared in its spec), read from SMSQ_<P>_*."""
    from worker.gateways.registry import spec

    return spec(name).settings(_env_file=env_files())  # type: ignore[call-arg]


def reload_settings() -> None:
    """Forget cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
    provider_settings.cache_clear()


def all_secrets() -> list[str]:
    """Every configured secret, for log redaction."""
    secrets = [s for n in provider_names() for s in provider_settings(n).secret_values()]
    settings = get_settings()
    secrets.extend(sentinel_passwords(settings.broker_url))
    from producer.embedded_redis import password_of

    embedded = password_of(settings.data_dir)  # the embedded Redis: a URL nobody set
    if embedded:
        secrets.append(embedded)
    for extra in (
        settings.redis_sentinel_password,
        settings.flower_basic_auth,
        settings.ui_basic_auth,
        settings.api_keys,
        settings.callback_secret,
        settings.callback_secret_previous,
        settings.app_callback_secret,
        settings.smtp_password,
    ):
        if extra is not None and extra.get_secret_value():
            secrets.append(extra.get_secret_value())
            if extra is settings.ui_basic_auth:  # the password alone, as a log might show it
                secrets.append(extra.get_secret_value().partition(":")[2])
            if extra is settings.api_keys:
                secrets.extend(k.strip() for k in extra.get_secret_value().split(",") if k.strip())
                secrets.extend(key for _name, key in parse_api_keys(extra.get_secret_value()))
    return secrets
