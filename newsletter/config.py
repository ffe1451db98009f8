"""Settings: flags > NEWSLETTER_* environment > newsletter.toml > defaults (subscribers.yaml is read
in subscribers.py)."""

from __future__ import annotations

import difflib
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from newsletter.address import is_host_name, is_http_url, is_loopback
from newsletter.errors import ConfigError, UsageError
from newsletter.files import NotUtf8, read_utf8, utf8_text
from newsletter.redact import MIN_SECRET, url_passwords
from newsletter.wording import field_path, plain_words

log = logging.getLogger(__name__)

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"  # a link to the repo's templates/

Transport = Literal["file", "smtp", "postmark", "sendgrid", "mailgun", "resend"]
MIN_SIGNING_KEY = 16  # characters of NEWSLETTER_UNSUBSCRIBE_SECRET
_BASE_URL = re.compile(r"https?://[\x21-\x3b\x3d\x3f-\x7e]+", re.IGNORECASE)


class _Toml(TomlConfigSettingsSource):
    """newsletter.toml, read as the subscribers file is (a byte order mark allowed, see read_utf8).

    pydantic-settings skips a path that is no regular file: a link to nothing (a config kept elsewhere
    and not deployed) or a folder was ignored in silence, and a run sent with the defaults (the file
    outbox, every digest recorded as sent); an unreadable file was an 'unexpected' error."""

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        for path in map(Path, [files] if isinstance(files, str | Path) else files or []):
            if os.path.lexists(path) and not path.is_file():
                raise ConfigError(
                    f"{path}: is not a regular file (a folder, a device, or a link to nothing): "
                    "its settings cannot be read",
                    hint=f"make {path} a file, or remove it to use the environment and the defaults",
                )
        return super()._read_files(files, deep_merge)

    def _read_file(self, file_path: Any) -> dict[str, Any]:  # a Path (or a Traversable: Any for both)
        try:
            content = file_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{file_path}: cannot read it: {exc.strerror}") from None
        return tomllib.loads(utf8_text(content))


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
    smtp_timeout: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)

    api_key: SecretStr | None = None  # Postmark / SendGrid / Mailgun / Resend
    api_base_url: str | None = None  # override the provider's API host (a proxy, tests)
    api_timeout: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    api_region: Literal["us", "eu"] = "us"  # Mailgun and SendGrid EU hosts
    mailgun_domain: str | None = None  # default: the sender's domain
    postmark_message_stream: str = "outbound"  # use your Broadcast stream for newsletters
    unsubscribe_secret: SecretStr | None = None
    unsubscribe_secret_previous: SecretStr | None = None  # the key before a change: its links still work
    serve_key: SecretStr | None = None  # the preview pages' key; default: $NEWSLETTER_HOME/serve-key

    ranker: Literal["auto", "lexical", "semantic"] = "auto"

    # messages per second; None: as fast as accepted
    send_rate: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_per_run: int | None = Field(default=None, ge=1)  # cap on new digests sent by one run
    workers: int = Field(default=1, ge=1, le=32)  # processes sending new digests (each its own connections)
    # who runs the shards of new digests: forked processes here, or `newsletter worker`s via procrastinate
    executor: Literal["local", "procrastinate"] = "local"
    build_process: Literal["auto", "on", "off"] = "auto"  # build messages in a second process, ahead
    # connections to the mail server (requests in flight to an API) at once; auto: from the round trip
    connections: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    # messages per HTTP API batch request; None: 100, or the provider's maximum if smaller
    batch_size: int | None = Field(default=None, ge=1, le=1000)
    retries: int = Field(default=2, ge=0, le=10)  # in-run retries of a temporary (4xx) failure
    # seconds before the first in-run retry, then doubled
    retry_backoff: float = Field(default=2.0, ge=0, allow_inf_nan=False)

    tick_seconds: int = Field(
        default=300, ge=1, le=7 * 86400
    )  # daemon: how often to ingest and deliver due digests
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
        return (init_settings, _FromVariable(settings_cls), env_settings, _Toml(settings_cls))

    @model_validator(mode="before")
    @classmethod
    def _from_is_sender(cls, data: Any) -> Any:
        """newsletter.toml says ``from = ...``; the field is ``sender`` (``from`` is a Python keyword)."""
        if isinstance(data, dict) and "from" in data:
            data = dict(data)
            sender = data.pop("from")
            data.setdefault("sender", sender)  # `sender` from a higher-priority source wins
        return data

    @field_validator("home", "subscribers", "dumps", "templates", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        """``NEWSLETTER_HOME=`` read as the current folder: the state went there, and a run without the
        variable (cron against a systemd env file) found no history and sent every digest again."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: give a path, or unset it for the default")
        return value

    @field_validator("base_url")
    @classmethod
    def _public_http_url(cls, value: str | None) -> str | None:
        """The unsubscribe links are built on it: an http(s) URL of printable ASCII, nothing else."""
        if value is not None and not (_BASE_URL.fullmatch(value) and urlsplit(value).hostname):
            raise ValueError(
                "must be an http(s) URL without spaces, line breaks or < >, e.g. https://papers.example.org"
            )
        if value is not None and ("?" in value or "#" in value):
            raise ValueError(
                "must not have a query (?...) or a fragment (#...): the links' paths go after it"
            )
        if value is not None and "@" in urlsplit(value).netloc:
            raise ValueError("must not hold a user or password (user:password@): every email's links show it")
        if value is None:
            return None
        scheme, rest = value.split("://", 1)
        return f"{scheme.lower()}://{rest}"  # HTTPS://... is https://...: the headers' check reads it so

    @field_validator("database_url")
    @classmethod
    def _one_at_before_the_host(cls, value: str | None) -> str | None:
        """SQLAlchemy ends a password at its first '@', the masks at the last: the rest of a password
        holding '@' was read as the host name, and printed (and looked up) as one. The error quotes none."""
        if value is not None and an_at_sqlalchemy_misreads(value):
            raise ValueError(MISREAD_AT)
        return value

    @field_validator("api_base_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        """An http(s) URL; the error quotes none of it (a password in it may be half read as the port)."""
        if value is not None and not is_http_url(value):
            raise ValueError(
                "must be an http(s) URL such as https://api.example.org "
                "(a user:password@ in it needs '/', '@', ':', '#' and '?' percent-encoded)"
            )
        return value

    @field_validator(
        "smtp_port",
        "max_per_run",
        "workers",
        "connections",
        "batch_size",
        "retries",
        "tick_seconds",
        "send_rate",
        "retry_backoff",
        "smtp_timeout",
        "api_timeout",
        mode="before",
    )
    @classmethod
    def _not_a_switch(cls, value: Any) -> Any:
        """A TOML ``true`` is no number (pydantic read it as 1: ``max_per_run = true`` sent one digest)."""
        if isinstance(value, bool):
            raise ValueError("must be a number, not true or false")
        return value

    @field_validator("connections", mode="before")
    @classmethod
    def _count_or_auto(cls, value: Any) -> Any:
        """A number or ``auto``: said in one message (pydantic's first union error named the number only)."""
        if isinstance(value, str) and value != "auto":
            try:
                TypeAdapter(int).validate_python(value)  # as pydantic reads it: "4.0" and "4_0" too
            except ValidationError:
                raise ValueError("expected a whole number or 'auto'") from None
        return value

    @field_validator("smtp_host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not is_host_name(value):
            raise ValueError(
                "is not a host name: give the name alone, as in 'mail.example.org' (the port, user and "
                "password have settings of their own; an empty label as in 'mail..example.org', or one "
                "too long, is refused too)"
            )
        return value

    @field_validator("mailgun_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        """Mailgun's sending domain, which goes into the API's path (/v3/<domain>/messages); empty (a
        compose file's ``${MAILGUN_DOMAIN:-}``) is the default, the sender's domain, as it was."""
        if not value:
            return None
        if not is_host_name(value):
            raise ValueError("is not a domain: give the name alone, as in 'mg.example.org'")
        return value

    @field_validator("smtp_username")
    @classmethod
    def _login(cls, value: str | None) -> str | None:
        """Sent in the SMTP AUTH line, which takes printable ASCII (as the password)."""
        if value is not None and any(not " " <= ch <= "~" for ch in value):
            raise ValueError("holds a character other than printable ASCII (an accent, a control character)")
        return value

    @field_validator("api_key", "smtp_password")
    @classmethod
    def _sendable(cls, value: SecretStr | None) -> SecretStr | None:
        """Sent in a header or an SMTP AUTH line, which take printable ASCII: a key with a line ending
        copied into it (a CRLF env file) or an accented letter would fail at the first send, quoting it."""
        text = value.get_secret_value() if value is not None else ""
        if text != text.strip():
            raise ValueError("starts or ends with a space or line break (copied with the value?)")
        if any(not " " <= ch <= "~" for ch in text):
            raise ValueError("holds a character other than printable ASCII (an accent, a control character)")
        if 0 < len(text) < MIN_SECRET:
            raise ValueError(
                f"is shorter than {MIN_SECRET} characters: too short to keep out of logs in every encoding"
            )
        return value

    @model_validator(mode="after")
    def _password_has_a_user(self) -> Settings:
        """A password without a user name would be ignored, and the mail sent without logging in."""
        if self.smtp_password is not None and not self.smtp_username:
            raise ValueError(
                f"smtp_password is set ({setting_origin('smtp_password')}) but smtp_username is not: "
                "set NEWSLETTER_SMTP_USERNAME"
            )
        return self

    @model_validator(mode="after")
    def _previous_key_beside_a_key(self) -> Settings:
        """The previous signing key only verifies links: alone, the emails would carry none."""
        if self.unsubscribe_secret_previous is not None and self.unsubscribe_secret is None:
            raise ValueError(
                f"unsubscribe_secret_previous is set ({setting_origin('unsubscribe_secret_previous')}) but "
                "unsubscribe_secret is not: set NEWSLETTER_UNSUBSCRIBE_SECRET to the new key"
            )
        return self

    @model_validator(mode="after")
    def _url_passwords_long_enough(self) -> Settings:
        """A URL's password is masked like the other secrets: from MIN_SECRET characters on."""
        urls: dict[tuple[str, int | None], Any] = {("database_url", None): self.database_url}
        urls[("api_base_url", None)] = self.api_base_url
        urls |= {("sources", i): s.get("base_url") for i, s in enumerate(self.sources)}
        for (field, index), url in urls.items():
            password = _url_password(url) if isinstance(url, str) else None
            if password and len(password) < MIN_SECRET:
                key = (
                    None if index is None else "base_url"
                )  # a [[sources]] table's key; else the field's line
                name = field if key is None else f"{field}[{index}].{key}"
                raise ValueError(
                    f"{name}: its password is shorter than {MIN_SECRET} characters: too short to keep "
                    f"out of logs in every encoding ({setting_origin(field, index=index, key=key)})"
                )
        return self

    @model_validator(mode="after")
    def _password_over_tls(self) -> Settings:
        """AUTH without TLS sends the password as base64, which anyone on the path can read."""
        plain = self.transport == "smtp" and self.smtp_security == "none" and not is_loopback(self.smtp_host)
        if self.smtp_password is not None and plain:
            raise ValueError(
                f"smtp_password ({setting_origin('smtp_password')}) would cross the network unencrypted to "
                f"{self.smtp_host}: set NEWSLETTER_SMTP_SECURITY=starttls (port 587) or ssl (port 465)"
            )
        return self

    @model_validator(mode="after")
    def _api_key_over_tls(self) -> Settings:
        """The API key goes in a request header, which plain http lets anyone on the path read."""
        parts = urlsplit(self.api_base_url or "")
        plain = parts.scheme.lower() == "http" and not is_loopback(parts.hostname or "")
        if self.api_key is not None and self.transport not in ("file", "smtp") and plain:
            raise ValueError(
                f"api_key ({setting_origin('api_key')}) would cross the network unencrypted to "
                f"{parts.hostname}: make NEWSLETTER_API_BASE_URL an https:// URL"
            )
        return self

    @field_validator("unsubscribe_secret")
    @classmethod
    def _a_real_key(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty key would sign links anyone can forge: refused, not read as no key; so is a short
        one, which one email's link gives away to a brute force (and which redaction would mask
        wherever its few characters occur)."""
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty: set a long random value, or unset it to leave the links out")
        if value is not None and len(value.get_secret_value()) < MIN_SIGNING_KEY:
            raise ValueError(
                f"is shorter than {MIN_SIGNING_KEY} characters: too easy to guess from one signed link "
                "(make one with `openssl rand -hex 32`; keep the old one as "
                "NEWSLETTER_UNSUBSCRIBE_SECRET_PREVIOUS and the links of emails already sent still work)"
            )
        return value

    @field_validator("serve_key")
    @classmethod
    def _a_preview_key(cls, value: SecretStr | None) -> SecretStr | None:
        """The key to every subscriber's address: a short one is guessed, and one a URL or a cookie
        would quote (a space, ';', '%') would not match as typed."""
        text = value.get_secret_value() if value is not None else None
        if text is not None and not re.fullmatch(rf"[A-Za-z0-9._~-]{{{MIN_SIGNING_KEY},}}", text):
            raise ValueError(
                f"must be at least {MIN_SIGNING_KEY} letters, digits or '-._~' (make one with "
                "`openssl rand -hex 24`), or unset it: `serve` then keeps its own in the state folder"
            )
        return value

    @field_validator("unsubscribe_secret_previous")
    @classmethod
    def _a_key_once_used(cls, value: SecretStr | None) -> SecretStr | None:
        """The key before a change: this tool signed with none empty or short, and one would let anyone
        forge the links it accepts."""
        if value is not None and len(value.get_secret_value().strip()) < MIN_SIGNING_KEY:
            raise ValueError(
                f"is empty or shorter than {MIN_SIGNING_KEY} characters, as no key this tool signed with "
                "was: set the key the emails already sent were signed with, or unset it"
            )
        return value

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

    def secret_values(self) -> list[str]:
        """The secrets' values, for masking them in text that leaves the process (newsletter.redact):
        the secret settings, and the passwords written into the database's, the API's and the
        sources' URLs."""
        secrets = (
            self.api_key,
            self.smtp_password,
            self.unsubscribe_secret,
            self.unsubscribe_secret_previous,
            self.serve_key,
        )
        urls = [self.database_url, self.api_base_url, *(s.get("base_url") for s in self.sources)]
        in_urls = [p for url in urls if isinstance(url, str) for p in url_passwords(url)]
        return [*(s.get_secret_value() for s in secrets if s is not None), *in_urls]


MISREAD_AT = (
    "holds an '@' that SQLAlchemy reads as part of the host or database name: "
    "percent-encode '@' in the password as %40 (and ':' as %3A, '/' as %2F)"
)


def an_at_sqlalchemy_misreads(url: str) -> bool:
    """A database URL SQLAlchemy reads another way than the masks do: it ends a password at its first
    '@', so the rest of one holding '@' (after a '/' too) became the host or the database name, printed
    (and looked up) as one. A file path (SQLite, no host) may hold '@'."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL: opening the database says so
        return False
    return parsed.host is not None and "@" in f"{parsed.host}{parsed.database or ''}"


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:  # not a URL (its own check says so)
        return None
    return unquote(password) if password else None


class _FromVariable(PydanticBaseSettingsSource):
    """NEWSLETTER_FROM, the documented name of the sender setting, read from the environment only.

    An alias on the field would also make pydantic-settings read un-prefixed FROM and SENDER variables.
    """

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get("NEWSLETTER_FROM")
        return {} if value is None else {"sender": value}


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """NEWSLETTER_* environment variables no setting reads (a typo such as NEWSLETTER_SMPT_HOST is
    otherwise ignored in silence), each with the setting it may have meant."""
    fields = {f"NEWSLETTER_{name.upper()}" for name in Settings.model_fields}  # read case-blind
    names = os.environ if environ is None else environ
    found = sorted(n for n in names if n.upper().startswith("NEWSLETTER_"))
    known = [n for n in found if n.upper() in fields or n == "NEWSLETTER_FROM"]  # FROM: as written only
    return [_unknown(name, fields | {"NEWSLETTER_FROM"}) for name in found if name not in known]


SECRET_SETTINGS = (
    "smtp_password",
    "api_key",
    "unsubscribe_secret",
    "unsubscribe_secret_previous",
    "serve_key",
)


def secrets_in_toml() -> list[str]:
    """The secret settings newsletter.toml holds, each with its line: they are read from there too,
    but a file is copied, backed up and committed where a variable is not."""
    return [_kept_in_file(field) for field in SECRET_SETTINGS if toml_line(field)[0] is not None]


def _kept_in_file(field: str) -> str:
    line, name = toml_line(field)
    return (
        f"newsletter.toml, line {line} holds {name}, a secret: anyone who reads the file (or a copy or "
        f"backup of it) has it; set NEWSLETTER_{field.upper()} in the environment instead"
    )


def _unknown(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    return f"{name} is not a setting" + (f" (did you mean {close[0]}?)" if close else "")


def load_settings(**overrides: Any) -> Settings:
    """Build Settings; CLI flags come in as ``overrides`` (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first, *more = _setting_errors(exc, given)
        first.also = more
        raise first from None
    except SettingsError as exc:  # e.g. NEWSLETTER_SOURCES that is not JSON
        named = re.search(r'field "(\w+)"', str(exc))
        if named is None:
            raise ConfigError(
                f"invalid setting: {exc}", hint="complex settings are JSON, e.g. [{...}]"
            ) from None
        field = named.group(1)
        raise ConfigError(
            f"invalid setting field '{field}': not valid JSON ({setting_origin(field, given)})",
            hint="complex settings are JSON, e.g. [{...}]",
        ) from None
    except NotUtf8 as exc:  # read while the settings are built
        raise ConfigError(exc.at(Settings.model_config.get("toml_file"))) from None
    except tomllib.TOMLDecodeError as exc:
        toml = Settings.model_config.get("toml_file")
        raise ConfigError(f"{toml}: not valid TOML: {exc}", hint="see the Configuration reference") from None


def _setting_errors(exc: ValidationError, given: dict[str, Any]) -> list[ConfigError]:
    """One error per setting pydantic refused (the first of each), in its order."""
    errors: dict[str, ConfigError] = {}
    for err in exc.errors():
        if not err["loc"]:  # a rule between settings
            errors.setdefault("", ConfigError(f"invalid settings: {plain_words(err)}"))
            continue
        field = str(err["loc"][0])
        kind = UsageError if field in given else ConfigError
        where = setting_origin(field, given)
        problem = f"invalid setting field '{field_path(err)}': {plain_words(err)}{_meant(err)} ({where})"
        errors.setdefault(field, kind(problem))
    return list(errors.values())


def _meant(err: ErrorDetails) -> str:
    """For a key newsletter.toml has and no setting reads (``smtp_hots``, ``Smtp_Hots``), the setting it
    may mean; for a table (``[smtp]`` with ``host = ...``, ``[newsletter]`` with ``smtp_host = ...``), the
    top-level keys its keys may mean."""
    if err["type"] != "extra_forbidden":
        return ""
    key = str(err["loc"][0]).lower()
    if isinstance(err["input"], dict):
        subs = [str(sub).lower() for sub in err["input"]]
        flat = [name for sub in subs if (name := _close_setting(f"{key}_{sub}") or _close_setting(sub))]
        meant = " or ".join(f"'{name}'" for name in dict.fromkeys(flat))
        return f" (the settings are top-level keys: did you mean {meant}?)" if meant else ""
    close = _close_setting(key)
    return f" (did you mean '{close}'?)" if close else ""


def _close_setting(name: str) -> str | None:
    close = difflib.get_close_matches(name, [*Settings.model_fields, "from"], n=1, cutoff=0.75)
    return close[0] if close else None


def setting_origin(
    field: str, given: Mapping[str, Any] | None = None, index: int | None = None, key: str | None = None
) -> str:
    """Where a setting's value came from: a flag (one of ``given``), an environment variable or
    newsletter.toml (with its line; ``index``: of the field's ``[[field]]`` table of that number,
    ``key``: of that key in the table, if the table has it)."""
    if field in (given or {}):
        return f"flag --{field.replace('_', '-')}"
    names = ["NEWSLETTER_FROM"] if field == "sender" else []
    names.append(f"NEWSLETTER_{field.upper()}")
    variables = {name.upper() for name in os.environ if name.upper() != "NEWSLETTER_FROM" or name.isupper()}
    found = next((name for name in names if name in variables), None)  # NEWSLETTER_FROM: as written only
    if found:
        return f"environment variable {found}"
    line, _ = toml_line(field, index, key)
    return f"newsletter.toml, line {line}" if line else "newsletter.toml"


_TOML_KEY = re.compile(r"""\s*["']?([A-Za-z0-9_-]+)["']?\s*=""")
_TOML_HEADER = re.compile(r"""\s*(\[\[?)\s*["']?([A-Za-z0-9_.-]+)["']?\s*\]\]?\s*(?:#.*)?$""")


def toml_line(field: str, index: int | None = None, key: str | None = None) -> tuple[int | None, str]:
    """The line of newsletter.toml that sets ``field`` (its ``[field]`` table, the ``index``-th of
    its ``[[field]]`` tables, or that table's ``key`` if it has one; for the sender its ``sender``
    key, which wins over ``from``), and the key as written there; (None, field) when there is no such line."""
    try:
        lines = read_utf8(Path(str(Settings.model_config.get("toml_file")))).splitlines()
    except (OSError, NotUtf8):
        return None, field
    for name in ("sender", "from") if field == "sender" else (field,):
        if (number := _key_line(lines, name, index or 0)) is not None:
            return _table_key_line(lines, number, key) if key else number, name
    return None, field


def _table_key_line(lines: list[str], header: int, key: str) -> int:
    """The line of ``key = ...`` in the table whose header is line ``header``; else the header's."""
    for number, line in enumerate(lines[header:], start=header + 1):
        if _TOML_HEADER.match(line):
            break
        if (found := _TOML_KEY.match(line)) and found.group(1).lower() == key.lower():
            return number
    return header


def _key_line(lines: list[str], key: str, index: int) -> int | None:
    """The line (from 1) of a top-level ``key = ...``, or of the ``index``-th ``[[key]]`` table; in any
    case, as the settings read them, except ``from`` (read as written)."""

    def named(name: str) -> bool:
        return name == key if key == "from" else name.lower() == key.lower()

    in_table, tables = False, 0  # past a [table] header, a key = value line is that table's
    for number, line in enumerate(lines, start=1):
        if header := _TOML_HEADER.match(line):
            in_table = True
            if named(header.group(2)) and (header.group(1) == "[" or tables == index):
                return number
            tables += named(header.group(2))
        elif (found := _TOML_KEY.match(line)) and named(found.group(1)) and not in_table:
            return number
    return None
