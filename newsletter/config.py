"""Settings (flags > NEWSLETTER_* environment > newsletter.toml > defaults) and subscribers.yaml."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from newsletter.errors import ConfigError
from newsletter.models import Subscriber

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"  # a link to the repo's templates/

Transport = Literal["file", "smtp", "postmark", "sendgrid", "mailgun", "resend"]


class Settings(BaseSettings):
    """Deployment settings. Secrets are SecretStr and never printed."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_",
        toml_file="newsletter.toml",
        extra="forbid",
        populate_by_name=True,
    )

    home: Path = Path(".newsletter")
    subscribers: Path = Path("subscribers.yaml")
    dumps: Path = Path("seeds")
    templates: Path | None = None
    database_url: str | None = None  # default: sqlite:///$NEWSLETTER_HOME/state.db

    transport: Transport = "file"
    # NEWSLETTER_FROM (or NEWSLETTER_SENDER); `from` (or `sender`) in newsletter.toml
    sender: str = "Trending Papers <digest@newsletter.invalid>"
    list_id: str | None = None  # default: derived from the sender's domain
    base_url: str | None = None  # public URL of `newsletter serve`, for one-click unsubscribe

    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "ssl"] = "none"
    smtp_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)

    api_key: SecretStr | None = None  # Postmark / SendGrid / Mailgun / Resend
    api_base_url: str | None = None  # override the provider's API host (a proxy, tests)
    api_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    api_region: Literal["us", "eu"] = "us"  # Mailgun and SendGrid EU hosts
    mailgun_domain: str | None = None  # default: the sender's domain
    postmark_message_stream: str = "outbound"  # use your Broadcast stream for newsletters
    unsubscribe_secret: SecretStr | None = None

    ranker: Literal["auto", "lexical", "semantic"] = "auto"

    # messages per second; None: as fast as accepted
    send_rate: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_per_run: int | None = Field(default=None, ge=1)  # cap on new digests sent by one run
    workers: int = Field(default=1, ge=1, le=32)  # processes sending new digests (each its own connections)
    # who runs the shards of new digests: forked processes here, or `newsletter worker`s via procrastinate
    executor: Literal["local", "procrastinate"] = "local"
    build_process: Literal["auto", "on", "off"] = "auto"  # build messages in a second process, ahead
    connections: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] = "auto"  # to the mail server at once
    retries: int = Field(default=2, ge=0, le=10)  # in-run retries of a temporary (4xx) failure
    # seconds before the first in-run retry, then doubled
    retry_backoff: float = Field(default=2.0, ge=0, allow_inf_nan=False)

    tick_seconds: int = Field(default=300, ge=1)  # daemon: how often to ingest and deliver due digests
    fetch_cron: str = "0 * * * *"  # daemon: when the sources fetch new dumps (crontab syntax, UTC)
    sources: list[dict[str, Any]] = Field(default_factory=lambda: [{"kind": "folder"}])

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls)
        return (init_settings, _FromVariable(settings_cls), env_settings, toml)

    @model_validator(mode="before")
    @classmethod
    def _from_is_sender(cls, data: Any) -> Any:
        """newsletter.toml says ``from = ...``; the field is ``sender`` (``from`` is a Python keyword)."""
        if isinstance(data, dict) and "from" in data:
            data = dict(data)
            sender = data.pop("from")
            data.setdefault("sender", sender)  # `sender` from a higher-priority source wins
        return data

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'state.db'}"

    @property
    def last_run_file(self) -> Path:
        return self.home / "last-run.json"

    @property
    def outbox(self) -> Path:
        return self.home / "outbox"

    @property
    def templates_dir(self) -> Path:
        return self.templates or PACKAGE_TEMPLATES

    @property
    def sender_domain(self) -> str:
        address = self.sender.rsplit("<", 1)[-1].rstrip(">").strip()
        return address.rsplit("@", 1)[-1] if "@" in address else "localhost"


class _FromVariable(PydanticBaseSettingsSource):
    """NEWSLETTER_FROM, the documented name of the sender setting, read from the environment only.

    An alias on the field would also make pydantic-settings read un-prefixed FROM and SENDER variables.
    """

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get("NEWSLETTER_FROM")
        return {} if value is None else {"sender": value}


def load_settings(**overrides: Any) -> Settings:
    """Build Settings; CLI flags come in as ``overrides`` (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(f"invalid setting {_first_problem(exc)}") from None
    except SettingsError as exc:  # e.g. NEWSLETTER_SOURCES that is not JSON
        raise ConfigError(f"invalid setting: {exc}", hint="complex settings are JSON, e.g. [{...}]") from None


@dataclass(frozen=True)
class SubscriberList:
    path: Path
    subscribers: tuple[Subscriber, ...]

    def find(self, email: str) -> Subscriber | None:
        wanted = email.strip().casefold()
        return next((s for s in self.subscribers if s.email.casefold() == wanted), None)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


# libyaml's parser when PyYAML was built with it (about 10x faster on a 100,000-subscriber file).
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)


def load_subscribers(path: Path) -> SubscriberList:
    """Read and validate subscribers.yaml. Errors name the file, the subscriber and the field."""
    data = _read_yaml(path)
    if not isinstance(data, dict) or "subscribers" not in data:
        raise ConfigError(f"{path}: expected a mapping with a 'subscribers:' list")
    unknown = set(data) - {"defaults", "subscribers"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}")
    defaults = data.get("defaults") or {}
    entries = data["subscribers"] or []
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: 'defaults' must be a mapping")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'subscribers' must be a list")
    subscribers = tuple(_subscriber(path, i, defaults, entry) for i, entry in enumerate(entries))
    _refuse_duplicates(path, subscribers)
    return SubscriberList(path, subscribers)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: subscribers file not found",
            hint="copy subscribers.example.yaml or set NEWSLETTER_SUBSCRIBERS",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read subscribers file: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def _subscriber(path: Path, index: int, defaults: dict[str, Any], entry: Any) -> Subscriber:
    label = f"subscriber #{index + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: {label}: expected a mapping")
    email = _CONTROL.sub(" ", str(entry.get("email", "no email")))  # the error stays one line
    label = f"subscriber #{index + 1} ({email})"
    try:
        return Subscriber(**{**defaults, **entry})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {label}: {_first_problem(exc)}") from None


def _refuse_duplicates(path: Path, subscribers: tuple[Subscriber, ...]) -> None:
    seen: set[str] = set()
    for s in subscribers:
        key = s.email.casefold()
        if key in seen:
            raise ConfigError(f"{path}: subscriber {s.email}: duplicate email")
        seen.add(key)


_UNION_MEMBER = re.compile(r"[-\[]")


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    # without the union member pydantic tried (e.g. 'connections.constrained-int' -> 'connections')
    field = ".".join(str(p) for p in err["loc"] if not _UNION_MEMBER.search(str(p))) or "value"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    return f"field '{field}': {message}"
