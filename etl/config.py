"""Settings: environment variables, a `.env` file, or `config/commcare-etl.toml`.

Precedence, highest first: command-line flags, environment, `.env`, the TOML file, defaults.
Every setting is named after its environment variable (lower-cased in the TOML file).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit
from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from etl.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("config") / "commcare-etl.toml"


def _source_names(**kw: bool) -> list[str]:
    from etl import sources

    return sources.names(**kw)


def config_file() -> Path:
    return Path(os.environ.get("COMMCARE_ETL_CONFIG", DEFAULT_CONFIG_FILE))


class Project(BaseModel):
    """One project of several, each with its own credentials (README, "Many projects"). The
    API key comes from an environment variable or a secrets file it names, never from the
    settings file itself."""

    model_config = ConfigDict(extra="forbid")

    domain: str
    username: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    base_url: str | None = None
    streams: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_key_in_the_file(cls, data: object) -> object:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError("an API key never goes in the settings file: name an environment "
                             "variable that holds it (api_key_env) or a secrets file "
                             "(api_key_file)")
        return data

    def api_key(self) -> SecretStr | None:
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(f"project {self.domain!r}: the environment variable "
                                  f"{self.api_key_env} (its api_key_env) is not set")
            return SecretStr(value)
        if self.api_key_file:
            return SecretStr(_read_secret(self.api_key_file, f"project {self.domain!r}"))
        return None


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read the secrets file {path}: {exc.strerror}") from None


SECRETS = ("commcare_api_key", "commcare_password")


class _NoSecretsToml(TomlConfigSettingsSource):
    """The settings file is meant to be committed: a secret in it is refused, not read."""

    def __call__(self) -> dict:
        data = super().__call__()
        found = [k for k in data if k.lower() in SECRETS]
        if found:
            raise ValueError(f"{', '.join(found)} never goes in the settings file: set "
                             f"{found[0].upper()} in the environment, or name a secrets file "
                             f"with {found[0].upper()}_FILE")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- CommCare HQ ---
    commcare_base_url: str = "https://www.commcarehq.org"
    commcare_domain: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Project space(s); several separated by commas."
    )
    commcare_username: str | None = None
    commcare_api_key: SecretStr | None = None
    commcare_api_key_file: Path | None = Field(
        None, description="A file holding the API key (Docker/Kubernetes secrets).")
    commcare_auth: Literal["apikey", "basic", "digest"] = Field(
        "apikey", description="How to log in: an API key, or the web login by Basic or Digest.")
    commcare_password: SecretStr | None = Field(
        None, description="The web login's password (COMMCARE_AUTH=basic or digest).")
    commcare_password_file: Path | None = Field(
        None, description="A file holding that password (Docker/Kubernetes secrets).")
    exports: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Export API exports to replay: form xmlns, or name=xmlns, comma-separated.")
    restore_users_file: Path | None = Field(
        None, description="Mobile workers to restore: username@domain.commcarehq.org:password "
                          "per line.")
    projects: list[Project] = Field(
        default_factory=list, description="Several projects with credentials of their own.")
    case_api: Literal["v0.5", "v2"] = "v0.5"
    case_page_size: int = Field(5000, ge=1, le=5000)
    form_page_size: int = Field(1000, ge=1, le=1000)
    streams: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: _source_names(default_only=True))

    # --- HTTP behaviour ---
    http_timeout: float = Field(120.0, gt=0, description="Seconds to wait for HQ to answer.")
    retry_max_seconds: float = Field(
        900.0, ge=0, description="Give up on one request after retrying this long."
    )
    unreachable_retry_seconds: float = Field(
        45.0, ge=0, description="Give up this soon when HQ cannot be reached at all at the start.")
    retry_initial_wait: float = Field(2.0, ge=0)
    retry_max_wait: float = Field(120.0, ge=0)
    max_concurrent_requests: int = Field(
        4, ge=1, le=32, description="Requests to one project in flight at once: a long read is "
                                    "split into indexed_on windows read side by side.")
    max_requests_per_second: float = Field(
        0.0, ge=0, description="Never start more requests to one project per second than this "
                               "(0: no ceiling of our own; HQ's 429s still slow us down).")

    # --- Warehouse ---
    bi_tables: bool = Field(
        True, description="Also write one table per case type, form and repeat group.")
    database_url: str | None = None
    warehouse_schema: str = Field("commcare", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    embedded_pg_dir: Path = Path(".commcare-etl") / "pgdata"
    ddl_lock_timeout: float = Field(
        3.0, gt=0, description="Seconds a new column or view may wait for a BI user's lock.")
    parallel_streams: int = Field(
        1, ge=1, le=32, description="Streams (and domains) synced at once, each in a process.")
    lock_wait_seconds: float = Field(
        0.0, ge=0, description="How long a run waits for another run of the same stream."
    )
    lookback_seconds: float = Field(
        900.0, ge=0, description="Re-read this window before the checkpoint on every run."
    )

    reconcile_every: str | None = Field(
        None, description="Also reconcile deletions when the last one is older (24h, 7d).")

    # --- Scheduling ---
    schedule: str = Field(
        "15m", description="How often `run` syncs: an interval (15m, 1h) or a cron expression.")

    # --- Logging ---
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("commcare_domain", "streams", "exports", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("streams")
    @classmethod
    def _known_streams(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"no stream given; choose from {_source_names()} "
                             f"(unset STREAMS for the default ones)")
        unknown = [s for s in value if s not in _source_names()]
        if unknown:
            raise ValueError(f"unknown stream(s) {unknown}; choose from {_source_names()}")
        return value

    @field_validator("commcare_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an HQ address; it looks like "
                             f"https://www.commcarehq.org (or https://india.commcarehq.org)")
        return value.strip().rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _NoSecretsToml(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, dotenv_settings, toml, file_secret_settings)

    def domains(self) -> list[str]:
        """Every project space to sync: COMMCARE_DOMAIN's, then the `projects`' ones."""
        listed = list(self.commcare_domain)
        return listed + [p.domain for p in self.projects if p.domain not in listed]

    def for_domain(self, domain: str) -> "Settings":
        """The settings one project runs with: its own credentials, server and streams, if it
        is one of `projects`, else these."""
        project = next((p for p in self.projects if p.domain == domain), None)
        key = self.commcare_api_key
        if key is None and self.commcare_api_key_file:
            key = SecretStr(_read_secret(self.commcare_api_key_file, "COMMCARE_API_KEY_FILE"))
        password = self.commcare_password
        if password is None and self.commcare_password_file:
            password = SecretStr(_read_secret(self.commcare_password_file,
                                              "COMMCARE_PASSWORD_FILE"))
        if project is None:
            if key is self.commcare_api_key and password is self.commcare_password:
                return self
            return self.model_copy(update={"commcare_api_key": key,
                                           "commcare_password": password})
        update: dict = {"commcare_domain": [domain], "commcare_api_key": project.api_key() or key,
                        "commcare_password": password}
        if project.username:
            update["commcare_username"] = project.username
        if project.base_url:
            update["commcare_base_url"] = self._strip_slash(project.base_url)
        if project.streams:
            update["streams"] = self._known_streams(project.streams)
        return self.model_copy(update=update)

    def require_hq_credentials(self) -> None:
        """Every project to sync has a domain, a username and an API key."""
        for one in [self.for_domain(d) for d in self.domains()] or [self]:
            one._require_credentials()

    def _require_credentials(self) -> None:
        secret = "commcare_api_key" if self.commcare_auth == "apikey" else "commcare_password"
        missing = [
            name.upper()
            for name in ("commcare_domain", "commcare_username", secret)
            if not getattr(self, name)
        ]
        if missing:
            raise ConfigError(
                f"missing setting(s) {', '.join(missing)}: set them in the environment, "
                f"in .env, or in {config_file()} (see README, 'Configuration')"
            )

    @property
    def api_key(self) -> str:
        return self.commcare_api_key.get_secret_value() if self.commcare_api_key else ""

    @property
    def password(self) -> str:
        return self.commcare_password.get_secret_value() if self.commcare_password else ""


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one clear ConfigError."""
    named = os.environ.get("COMMCARE_ETL_CONFIG")
    if named and not Path(named).is_file():
        raise ConfigError(f"COMMCARE_ETL_CONFIG names {named}, which is not a file: fix the "
                          f"path, or unset COMMCARE_ETL_CONFIG to use {DEFAULT_CONFIG_FILE} "
                          f"(if present)")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML file
        raise ConfigError(f"cannot read settings file {config_file()}: {exc}") from None
