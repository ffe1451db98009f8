import json
import re
from pathlib import Path

import pytest

from newsletter.config import load_settings, setting_origin, toml_line
from newsletter.errors import ConfigError
from newsletter.subscribers import load_subscribers, read_subscribers

from .conftest import ROOT
from .helpers import cli, make_env

GOOD = """
defaults: {max_items: 5, cadence: weekly}
subscribers:
  - email: ada@example.org
    interests: ["graph neural networks"]
  - email: bob@example.org
    interests: ["speech"]
    max_items: 3
    cadence: daily
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subs.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_file_is_valid() -> None:
    subs = load_subscribers(ROOT / "subscribers.example.yaml")
    assert len(subs.subscribers) >= 3
    assert subs.find("ADA@example.org") is not None


def test_defaults_apply_and_subscriber_values_win(tmp_path: Path) -> None:
    subs = load_subscribers(write(tmp_path, GOOD)).subscribers
    assert (subs[0].max_items, subs[0].cadence) == (5, "weekly")
    assert (subs[1].max_items, subs[1].cadence) == (3, "daily")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("subscribers:\n  - email: a@example.org\n    interests: [x\n", "subs.yaml:4: invalid YAML"),
        ("subscribers:\n  - email: a@example.org\n  interests: [x]\n   - b\n", "subs.yaml:3: invalid YAML"),
        ("subscribers:\n  - email: not-an-address\n    interests: [x]\n", "field 'email'"),
        ("subscribers:\n  - email: a@example.org\n    interests: []\n", "field 'interests'"),
        (
            "subscribers:\n  - email: a@example.org\n    interests: [x]\n    colour: red\n",
            "subs.yaml:4: subscriber #1 (a@example.org): unknown key 'colour'",
        ),
        (
            "subscribers:\n  - {email: a@example.org, interests: [x]}\n  - {email: A@example.org, interests: [y]}\n",
            "subs.yaml:3: subscriber A@example.org: duplicate email",
        ),
        (  # an alias repeating a subscriber: its own line, not the anchor's (said line 3)
            "defaults: {max_items: 3}\nsubscribers:\n  - &a\n    email: a@example.org\n    interests: &i [x]\n"
            "  - {email: b@example.org, interests: *i}\n  - *a\n",
            "subs.yaml:7: subscriber a@example.org: duplicate email",
        ),
        (
            "subscribers: [&a {email: a@example.org, interests: [x]},\n  {email: b@example.org, interests: [y]},\n"
            "  *a]\n",
            "subs.yaml:3: subscriber a@example.org: duplicate email",
        ),
        (
            "subscribers:\n  - email: a@example.org\n    email: b@example.org\n    interests: [x]\n",
            "duplicate key 'email'",
        ),
        (
            "subscribers:\n  - email: a@example.org\n    interests: [x]\n    timezone: Mars/Base\n",
            "field 'timezone'",
        ),
        (
            "subscribers:\n  - email: a@example.org\n    interests: [x]\n    cadence: hourly\n",
            "field 'cadence'",
        ),
        ("- just a list\n", "expected a mapping"),
        ("subscribers: []\nsubscriber:\n  - email: a@example.org\n", "subs.yaml:2: unknown top-level key"),
        ("subscribers:\n  email: a@example.org\n", "subs.yaml:1: 'subscribers' must be a list"),
        ("subscribers:\n  - email: Eve <eve@example.org>\n    interests: [x]\n", "give just the address"),
        ("subscribers:\n  - email: zoë@example.org\n    interests: [x]\n", "must be ASCII"),
        (
            "subscribers:\n  - email: a@example.org\n    interests: [x]\n    on: weekdays\n",
            "subs.yaml:4: subscriber #1 (a@example.org): key True is not a name",
        ),
        (
            "defaults:\n  1: x\nsubscribers:\n  - {email: a@example.org, interests: [x]}\n",
            "key 1 is not a name",
        ),
        ("subscribers:\n  - {email: a@example.org, interests: [x], max_items: true}\n", "field 'max_items'"),
        ('subscribers:\n  - {email: a@example.org, interests: [x], max_items: "5"}\n', "field 'max_items'"),
        (
            'subscribers:\n  - {email: a@example.org, interests: [x], send_at: "07:30+02:00"}\n',
            "field 'send_at': write the time without an offset",
        ),
    ],
)
def test_bad_subscribers_file_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_subscribers(write(tmp_path, text))
    assert expected in str(info.value)
    assert "subs.yaml" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "zone",
    [
        *("localtime", "posixrules", "Factory", "/UTC", "../zoneinfo/UTC", "Europe/../UTC"),
        *("posix/Factory", "right/Factory", "right/Europe/Paris", "posix/Europe/Paris", "posix/localtime"),
    ],
)
def test_a_zone_file_that_names_no_place_is_an_unknown_zone(tmp_path: Path, zone: str) -> None:
    """zoneinfo opens /usr/share/zoneinfo/localtime: whichever zone the machine making the digest has."""
    text = f"subscribers:\n  - email: a@example.org\n    interests: [x]\n    timezone: {zone}\n"
    with pytest.raises(ConfigError) as info:
        load_subscribers(write(tmp_path, text))
    said = "subs.yaml:4: subscriber #1 (a@example.org): field 'timezone': unknown IANA time zone"
    assert f"{said} {zone!r}" in str(info.value)


def test_a_typo_under_defaults_is_one_problem_at_its_line_not_one_per_subscriber(tmp_path: Path) -> None:
    many = "".join(f"  - {{email: s{i}@example.org, interests: [x]}}\n" for i in range(50))
    bad = "  - {email: bad@example.org, interests: [x], max_items: 0}\n"  # its own problem: it was hidden
    path = write(tmp_path, f"defaults:\n  maxitems: 3\nsubscribers:\n{many}{bad}")
    subscribers, problems = read_subscribers(path)
    assert str(problems[0]) == f"{path}:2: defaults: unknown key 'maxitems' (did you mean 'max_items'?)"
    assert len(problems) == 2 and "subscriber #51 (bad@example.org): field 'max_items'" in str(problems[1])
    assert len(subscribers.subscribers) == 50
    with pytest.raises(ConfigError, match="defaults: unknown key 'maxitems'"):  # a run refuses the file
        load_subscribers(path)


def test_error_names_the_subscriber(tmp_path: Path) -> None:
    text = "subscribers:\n  - {email: a@example.org, interests: [x]}\n  - {email: b@example.org, interests: [x], max_items: 0}\n"
    with pytest.raises(ConfigError, match=r"subscriber #2 \(b@example.org\): field 'max_items'"):
        load_subscribers(write(tmp_path, text))


def test_missing_file_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_subscribers(tmp_path / "nope.yaml")
    assert info.value.hint and "subscribers.example.yaml" in info.value.hint


def test_settings_precedence_flag_env_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "newsletter.toml").write_text('dumps = "from-toml"\nhome = "toml-home"\nsmtp_port = 2525\n')
    monkeypatch.setenv("NEWSLETTER_HOME", "env-home")
    monkeypatch.setenv("NEWSLETTER_DUMPS", "env-dumps")
    settings = load_settings(dumps=Path("flag-dumps"))
    assert settings.dumps == Path("flag-dumps")
    assert settings.home == Path("env-home")
    assert settings.smtp_port == 2525


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"smtp_port = \n", "Invalid value (at line 1, column 13)"),
        (b"smtp_port = 25\nsmtp_port = 26\n", "(at line 2, column"),
        (b"\xff\xfe", "the file is UTF-16: save it as UTF-8"),
        (b"a = 1\nb = '\xff'\n", ":2: byte 0xff is not UTF-8"),
    ],
)
def test_a_broken_newsletter_toml_is_one_error_naming_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "newsletter.toml").write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("newsletter.toml") and problem in message
    assert "\n" not in message


def test_a_rule_between_settings_names_where_the_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They said "invalid settings: ..." with no origin, and batch_size's hint named a variable never set."""
    from newsletter.send.apis import PostmarkTransport, batch_size

    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "newsletter.toml"
    toml.write_text('transport = "postmark"\n\nbatch_size = 600\n')
    with pytest.raises(ConfigError) as info:
        batch_size(PostmarkTransport, load_settings().batch_size)
    assert "not 600 (newsletter.toml, line 3)" in str(info.value)
    assert info.value.hint == "set batch_size to that or less"
    toml.write_text('transport = "smtp"\nsmtp_host = "mail.example.org"\nsmtp_username = "u"\n')
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "hunter2-secret")
    with pytest.raises(
        ConfigError, match=r"smtp_password \(environment variable NEWSLETTER_SMTP_PASSWORD\) would"
    ):
        load_settings(smtp_security="none")
    monkeypatch.delenv("NEWSLETTER_SMTP_PASSWORD")
    toml.write_text(
        '[[sources]]\nkind = "folder"\n[[sources]]\nkind = "hf-daily"\nbase_url = "https://u:pw@hf.example"\n'
    )
    with pytest.raises(ConfigError, match=r"sources\[1\]\.base_url: .* \(newsletter.toml, line 5\)"):
        load_settings()  # the second table's key (it named the first table, then the second's header)
    toml.write_text(
        '\ndatabase_url = "postgresql://u:ab@localhost/db"\n\nbase_url = "https://n.example.org"\n'
    )
    with pytest.raises(ConfigError, match=r"database_url: .* \(newsletter.toml, line 2\)"):
        load_settings()  # not the line of the top-level base_url below it
    toml.write_text('smtp_password = "hunter2-secret"\n')
    with pytest.raises(ConfigError, match=r"smtp_password is set \(newsletter.toml, line 1\) but"):
        load_settings()


def test_a_setting_from_newsletter_toml_is_named_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic-settings' TOML source gives no line: the error said only "(newsletter.toml)"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newsletter.toml").write_text(
        '# settings\ntransport = "file"\n\n  "send_rate" = -3\n[[sources]]\nkind = "rss"\n[extra]\nworkers = 0\n'
    )
    assert toml_line("send_rate") == (4, "send_rate")
    assert toml_line("sources") == (5, "sources")
    assert toml_line("workers") == (None, "workers")  # a key of another table is no setting
    assert toml_line("transport") == (2, "transport")
    assert toml_line("extra") == (7, "extra")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert [str(info.value), *map(str, info.value.also)] == [
        "invalid setting field 'send_rate': should be greater than 0 (newsletter.toml, line 4)",
        "invalid setting field 'extra': unknown key (the settings are top-level keys: did you mean "
        "'workers'?) (newsletter.toml, line 7)",
    ]
    (tmp_path / "newsletter.toml").write_text('from = "a@example.org"\n')
    assert toml_line("sender") == (1, "from")
    assert setting_origin("sender") == "newsletter.toml, line 1"
    (tmp_path / "newsletter.toml").write_text(
        'list_id = """\n[not a table]\n"""\nsmtp_port = 2525\n[[sources]]\nkind = "folder"\n\n[[sources]]\n'
    )
    assert toml_line("smtp_port") == (4, "smtp_port")  # a line of a value that starts with "[" is no table
    assert [toml_line("sources", index)[0] for index in (0, 1, 2)] == [5, 8, None]
    (tmp_path / "newsletter.toml").write_text('from = "News <news@example.org>"\nsender = "d@example.org"\n')
    assert toml_line("sender") == (2, "sender")  # `sender` wins over `from`, as the settings read them
    monkeypatch.setenv("newsletter_from", "me@example.org")  # read only as NEWSLETTER_FROM: not this one
    assert setting_origin("sender") == "newsletter.toml, line 2"
    (tmp_path / "newsletter.toml").write_text(
        'FROM = "x"\nSender = "d@example.org"\n[[Sources]]\n[[SOURCES]]\n'
    )
    assert toml_line("sender") == (2, "sender")  # keys in any case, as the settings read them; not FROM
    assert [toml_line("sources", index)[0] for index in (0, 1)] == [3, 4]


def test_sender_comes_from_newsletter_from_or_toml_never_a_bare_from_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FROM", "Stray <stray@elsewhere.example>")
    monkeypatch.setenv("SENDER", "Stray <stray@elsewhere.example>")
    assert load_settings().sender == "Trending Papers <digest@newsletter.invalid>"
    (tmp_path / "newsletter.toml").write_text('from = "Toml <digest@toml.example>"\n')
    assert load_settings().sender == "Toml <digest@toml.example>"
    monkeypatch.setenv("NEWSLETTER_FROM", "Env <digest@env.example>")
    assert load_settings().sender == "Env <digest@env.example>"


def test_secret_settings_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP_USERNAME", "ada")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("NEWSLETTER_API_KEY", "key-secret-123")
    settings = load_settings()
    assert "hunter2" not in repr(settings) and "key-secret" not in str(settings)
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "hunter2-secret"


def test_a_password_without_a_user_name_is_refused_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "hunter2-secret")  # mail went out without logging in
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "smtp_username is not" in str(info.value) and "hunter2" not in str(info.value)


def test_a_complex_setting_that_is_not_json_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SOURCES", "nope")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid setting field 'sources': not valid JSON (environment variable NEWSLETTER_SOURCES)"
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("foo", "expected a whole number or 'auto'"),  # said "expected a whole number" only
        ("2.5", "expected a whole number or 'auto'"),
        ("0", "should be greater than or equal to 1"),
    ],
)
def test_connections_says_auto_is_a_value_too(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("NEWSLETTER_CONNECTIONS", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        f"invalid setting field 'connections': {problem} (environment variable NEWSLETTER_CONNECTIONS)"
    )


@pytest.mark.parametrize(("value", "read"), [("auto", "auto"), (" 4 ", 4), ("4.0", 4), ("4_0", 40)])
def test_connections_takes_a_number_or_auto(
    monkeypatch: pytest.MonkeyPatch, value: str, read: object
) -> None:
    monkeypatch.setenv("NEWSLETTER_CONNECTIONS", value)
    assert load_settings().connections == read


def test_bad_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "pigeon")
    with pytest.raises(ConfigError, match="field 'transport'"):
        load_settings()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://nl:hunter2@Tail0fTheSecret@127.0.0.1:1/nl",
        "postgresql+psycopg://nl:hunter2@x/Tail0fTheSecret@127.0.0.1:1/nl",  # a '/' before its second '@'
    ],
)
def test_a_database_password_holding_an_at_sign_is_refused_without_quoting_any_of_it(
    tmp_path: Path, url: str
) -> None:
    """SQLAlchemy ends the password at its first '@' and the masks at the last, so the rest was printed
    (and looked up) as the host: "...nl:***@<the rest of the password>@127.0.0.1"."""
    env = make_env(tmp_path)
    for command in (("status",), ("migrate-db", url)):
        variables = {**env, "NEWSLETTER_DATABASE_URL": url} if command == ("status",) else env
        proc = cli(variables, *command, check=False)
        assert "SQLAlchemy reads as part of the host or database name: percent-encode '@'" in proc.stderr
        assert proc.returncode in (1, 2) and "Tail0f" not in proc.stdout + proc.stderr
    encoded = load_settings(database_url=url.replace("hunter2@", "hunter2%40"))
    assert encoded.database_url is not None
    assert load_settings(database_url="sqlite:////srv/mail@lab/state.db").database_url  # a path may hold '@'


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("database_url", "postgresql+psycopg://nl:abc@db.example.org/nl", "database_url"),
        ("api_base_url", "http://proxy:pr0x@127.0.0.1:8080", "api_base_url"),
        (
            "sources",
            [{"kind": "hf-daily", "base_url": "https://m:pw12@hf.example.org"}],
            "sources[0].base_url",
        ),
    ],
)
def test_a_password_in_a_url_too_short_to_mask_is_refused(field: str, value: object, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"{re.escape(named)}: its password is shorter than 5 characters"):
        load_settings(**{field: value})
    longer = json.loads(
        json.dumps(value).replace("abc@", "abcdef@").replace("pr0x@", "pr0xy@").replace(":pw12@", ":pw123@")
    )
    assert load_settings(**{field: longer}) is not None


@pytest.mark.parametrize("kind", ["link to nothing", "folder"])
def test_a_newsletter_toml_that_is_no_file_is_refused_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Its settings were dropped in silence: a run sent with the defaults, the file outbox."""
    monkeypatch.chdir(tmp_path)
    if kind == "folder":
        (tmp_path / "newsletter.toml").mkdir()
    else:
        (tmp_path / "newsletter.toml").symlink_to(tmp_path / "etc" / "newsletter.toml")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "newsletter.toml: is not a regular file (a folder, a device, or a link to nothing): its settings cannot be read"
    )


def test_an_unreadable_newsletter_toml_is_named_not_unexpected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newsletter.toml").write_text("smtp_port = 2525\n")
    read_bytes = Path.read_bytes

    def denied(path: Path) -> bytes:
        if path.name == "newsletter.toml":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match=r"^newsletter.toml: cannot read it: Permission denied$"):
        load_settings()


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (  # the settings are flat: the table said only "unknown key"
            '[smtp]\nhost = "mail.example.org"\nport = 587\n',
            "invalid setting field 'smtp': unknown key (the settings are top-level keys: did you mean "
            "'smtp_host' or 'smtp_port'?) (newsletter.toml, line 1)",
        ),
        (
            '\n[newsletter]\nsmtp_hots = "mail.example.org"\n',
            "invalid setting field 'newsletter': unknown key (the settings are top-level keys: did you mean "
            "'smtp_host'?) (newsletter.toml, line 2)",
        ),
        (  # in capitals it had no line and no guess
            '# settings\nSmtp_Hots = "mail.example.org"\n',
            "invalid setting field 'Smtp_Hots': unknown key (did you mean 'smtp_host'?) (newsletter.toml, line 2)",
        ),
    ],
)
def test_a_misplaced_newsletter_toml_key_gets_its_line_and_the_setting_it_may_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "newsletter.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == expected
