"""`check` refuses what `run` would refuse or misread: a sender with a space, a bad NEWSLETTER_BASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import add_dumps, cli, env_settings, outbox, seed_names


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "NEWSLETTER_FROM",
            "Papers <d@exa mple.org>",
            "error: setting 'from' (environment variable NEWSLETTER_FROM): the address 'd@exa mple.org' contains a space",
        ),
        (
            "NEWSLETTER_FROM",
            "d@exa mple.org",
            "error: setting 'from' (environment variable NEWSLETTER_FROM): the address 'd@exa mple.org' contains a space",
        ),
        (
            "NEWSLETTER_FROM",
            "Pa pers <d @example.org>",
            "error: setting 'from' (environment variable NEWSLETTER_FROM): the address 'd @example.org' contains a space",
        ),
        (
            "NEWSLETTER_FROM",
            "Pâpers, Inc. <d@example.org>",  # read as two addresses: 'Pâpers' was called the bad one
            "error: setting 'from' (environment variable NEWSLETTER_FROM): the display name 'Pâpers, Inc.' holds a comma: put it in double quotes",
        ),
        (  # named as written: the error said 'sender' for NEWSLETTER_FROM and 'from'
            "NEWSLETTER_SENDER",
            "d@exa mple.org",
            "error: setting 'sender' (environment variable NEWSLETTER_SENDER): the address 'd@exa mple.org' contains a space",
        ),
        ("NEWSLETTER_BASE_URL", "javascript:alert(1)//", "error: invalid setting field 'base_url'"),
        (
            "NEWSLETTER_BASE_URL",
            "https://papers.example.org/\r\nBcc: x@evil.example",
            "error: invalid setting field 'base_url'",
        ),
        ("NEWSLETTER_BASE_URL", "https://papers example.org/", "error: invalid setting field 'base_url'"),
        ("NEWSLETTER_BASE_URL", "papers.example.org", "error: invalid setting field 'base_url'"),
        (
            "NEWSLETTER_BASE_URL",
            "https://papers.example.org/?utm=1",
            "error: invalid setting field 'base_url'",
        ),
        ("NEWSLETTER_BASE_URL", "https://papers.example.org/#top", "error: invalid setting field 'base_url'"),
        (  # every link in every email carried the password
            "NEWSLETTER_BASE_URL",
            "https://u:Pw9Secretz@papers.example.org/nl",
            "error: invalid setting field 'base_url': must not hold a user or password",
        ),
    ],
)
def test_check_and_run_refuse_the_setting(env: dict[str, str], name: str, value: str, expected: str) -> None:
    add_dumps(env, seed_names()[0])  # so that `run` builds messages
    bad = {**env, name: value, "NEWSLETTER_UNSUBSCRIBE_SECRET": "s3cret-check-settings"}
    if name == "NEWSLETTER_SENDER":
        del bad["NEWSLETTER_FROM"]  # it wins over NEWSLETTER_SENDER
    for command in ("check", "run"):
        proc = cli(bad, command, check=False)
        assert proc.returncode == 1, (command, proc.stdout)
        first = proc.stderr.splitlines()[0]
        assert first.startswith(expected), (command, first)
        assert "\r" not in proc.stderr and "Bcc" not in proc.stderr.replace(value, "")
    assert not (Path(env["NEWSLETTER_HOME"]) / "outbox").exists()


def test_check_accepts_a_good_base_url(env: dict[str, str]) -> None:
    good = {
        **env,
        "NEWSLETTER_BASE_URL": "https://papers.example.org/nl/",
        "NEWSLETTER_UNSUBSCRIBE_SECRET": "s3cret-check-settings",
    }
    assert cli(good, "check").stdout.startswith("ok: ")


@pytest.mark.parametrize("secret", ["", "  "])
def test_an_empty_secret_is_refused_not_read_as_no_secret(env: dict[str, str], secret: str) -> None:
    bad = {**env, "NEWSLETTER_UNSUBSCRIBE_SECRET": secret}
    for command in ("check", "run", "serve"):
        proc = cli(bad, command, check=False)
        assert proc.returncode == 1, (command, proc.stdout)
        first = proc.stderr.splitlines()[0]
        assert first.startswith("error: invalid setting field 'unsubscribe_secret'"), (command, first)
        assert "unset it" in first


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("NEWSLETTER_API_KEY", "pm-token-1234\r", "starts or ends with a space or line break"),
        ("NEWSLETTER_API_KEY", " pm-token-1234", "starts or ends with a space or line break"),
        ("NEWSLETTER_API_KEY", "re_tökén-1234", "other than printable ASCII"),
        ("NEWSLETTER_SMTP_PASSWORD", "Passwört-1234", "other than printable ASCII"),
        ("NEWSLETTER_SMTP_PASSWORD", "pass\tword-1234", "other than printable ASCII"),
        ("NEWSLETTER_SMTP_PASSWORD", "1234", "shorter than 5 characters"),  # no base64 run at every offset
    ],
)
def test_a_key_no_header_can_carry_is_refused_without_showing_it(
    env: dict[str, str], name: str, value: str, problem: str
) -> None:
    """A CRLF env file's key failed at the first send, and the HTTP error quoted it; an accent left a
    traceback and the digest stuck in 'sending'."""
    for command in ("check", "run"):
        proc = cli({**env, name: value}, command, check=False)
        assert proc.returncode == 1, (command, proc.stdout)
        first = proc.stderr.splitlines()[0]
        assert first.startswith("error: invalid setting field") and problem in first and name in first
        assert "1234" not in proc.stdout + proc.stderr
    assert not (Path(env["NEWSLETTER_HOME"]) / "state.db").exists()


@pytest.mark.parametrize(
    "name", ["NEWSLETTER_HOME", "NEWSLETTER_DUMPS", "NEWSLETTER_TEMPLATES", "NEWSLETTER_SUBSCRIBERS"]
)
def test_an_empty_path_setting_is_refused_not_read_as_the_current_folder(
    env: dict[str, str], name: str
) -> None:
    """NEWSLETTER_HOME= put the state in the current folder; a run without it then sent every digest again."""
    for command in ("check", "run"):
        proc = cli({**env, name: ""}, command, check=False)
        assert proc.returncode == 1, (command, proc.stdout)
        first = proc.stderr.splitlines()[0]
        assert first.startswith("error: invalid setting field") and "is empty" in first and name in first
    assert not (Path(env["NEWSLETTER_HOME"]) / "state.db").exists()


def test_an_empty_database_url_is_the_default_database(env: dict[str, str]) -> None:
    """As before: a blank placeholder (`${X:-}` in a compose file) means the state folder's SQLite."""
    cli({**env, "NEWSLETTER_DATABASE_URL": ""}, "run")
    assert (Path(env["NEWSLETTER_HOME"]) / "state.db").exists()


def test_a_short_signing_key_is_refused(env: dict[str, str]) -> None:
    """A one-letter key was accepted: one email's link gives it away to a brute force, and forged links
    unsubscribe anyone (redaction also masked that letter in every log line)."""
    bad = {**env, "NEWSLETTER_UNSUBSCRIBE_SECRET": "e" * 15}
    for command in ("check", "run", "serve"):
        proc = cli(bad, command, check=False)
        assert proc.returncode == 1, (command, proc.stdout)
        first = proc.stderr.splitlines()[0]
        assert first.startswith("error: invalid setting field 'unsubscribe_secret'"), (command, first)
        assert "shorter than 16 characters" in first and "e" * 15 not in proc.stderr


def test_a_base_url_in_capitals_builds_links_that_send(env: dict[str, str]) -> None:
    """HTTPS://... passed `check`, then every message failed: the header check read the scheme in
    lower case only."""
    add_dumps(env, seed_names()[0])
    good = {
        **env,
        "NEWSLETTER_BASE_URL": "HTTPS://Papers.example.org/nl",
        "NEWSLETTER_UNSUBSCRIBE_SECRET": "k" * 16,
    }
    cli(good, "run", "--now", "2026-03-11T08:00:00Z")
    messages = outbox(env)
    assert messages and all(
        m["List-Unsubscribe"].startswith("<https://Papers.example.org/nl/unsubscribe/") for m in messages
    )


@pytest.mark.parametrize("flag", ["--home", "--dumps", "--subscribers", "--templates"])
def test_an_empty_path_flag_is_refused_not_read_as_the_current_folder(
    env: dict[str, str], tmp_path: Path, flag: str
) -> None:
    """The flags were typed as paths, and "" became "." before the settings could refuse it:
    `--home "" status` made a state.db in the working folder."""
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", flag, "", "status"],
        env={**os.environ, **env, "PYTHONPATH": str(Path(__file__).parents[1])},
        capture_output=True,
        text=True,
        cwd=work,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"is empty: give a path, or unset it for the default (flag {flag})" in proc.stderr
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("NEWSLETTER_SMTP_HOST", "mail..example.org", "smtp_host"),
        ("NEWSLETTER_SMTP_USERNAME", "jöse", "smtp_username"),
        ("NEWSLETTER_SMTP_TIMEOUT", "1e10", "smtp_timeout"),
        ("NEWSLETTER_API_BASE_URL", "http://api..example.org", "api_base_url"),
        ("NEWSLETTER_TICK_SECONDS", "99999999999999", "tick_seconds"),
        ("NEWSLETTER_SOURCES", '[{"kind": "hf-daily", "base_url": "http://hf..example.org"}]', "sources"),
    ],
)
def test_a_setting_that_would_fail_at_the_first_send_is_refused_by_check_and_run(
    env: dict[str, str], name: str, value: str, field: str
) -> None:
    """Each passed `check`; `run` then met a traceback (UnicodeError, OverflowError) after the first digest
    was recorded 'sending', so it turned 'unknown' and was never sent (with a source: nothing was)."""
    add_dumps(env, seed_names()[0])
    bad = {**env, name: value, "NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP_PASSWORD": "secret-pass"}
    bad.setdefault("NEWSLETTER_SMTP_USERNAME", "digest")
    for command in ("check", "run"):
        proc = cli(bad, command, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (command, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if not line.startswith("warning:")]
        assert field in errors[0], (command, proc.stderr)  # check prints its warnings first
    assert not (Path(env["NEWSLETTER_HOME"]) / "state.db").exists()


@pytest.mark.parametrize("domain", ["mg example.org", "https://mg.example.org", "mg.example.org/v3"])
def test_a_mailgun_domain_that_is_no_domain_is_one_error_naming_the_variable(
    env: dict[str, str], domain: str
) -> None:
    """A space passed `check` (the domain goes into the API's path, /v3/<domain>/messages); a scheme or a
    path was refused when the transport was made, without naming the variable."""
    bad = {**env, "NEWSLETTER_MAILGUN_DOMAIN": domain, "NEWSLETTER_TRANSPORT": "mailgun"}
    proc = cli(bad | {"NEWSLETTER_API_KEY": "key-0123456789abcdef"}, "check", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "field 'mailgun_domain': is not a domain" in errors[0]
    assert errors[0].endswith("(environment variable NEWSLETTER_MAILGUN_DOMAIN)")


def test_an_empty_mailgun_domain_is_the_sender_s_as_before(env: dict[str, str]) -> None:
    """Refused as 'no domain' by every command once the domain was checked (a file transport's too)."""
    empty = {**env, "NEWSLETTER_MAILGUN_DOMAIN": ""}
    assert cli(empty, "check").stdout.startswith("ok:")
    assert env_settings(env, mailgun_domain="").mailgun_domain is None


@pytest.mark.parametrize("host", ["digest:Pw9Secretz@127.0.0.1", "smtp://digest:Pw9Secretz@127.0.0.1:1"])
def test_a_password_written_into_the_smtp_host_is_refused_and_shown_nowhere(
    env: dict[str, str], host: str
) -> None:
    """It passed `check`; `run` then printed it in 'cannot connect to SMTP server ...', into the report,
    the delivery log and `status`."""
    add_dumps(env, seed_names()[0])
    bad = {**env, "NEWSLETTER_SMTP_HOST": host, "NEWSLETTER_TRANSPORT": "smtp"}
    for command in ("check", "run", "status"):
        proc = cli(bad, command, check=False)
        assert proc.returncode == 1 and "invalid setting field 'smtp_host': is not a host name" in proc.stderr
        assert "Pw9Secretz" not in proc.stdout + proc.stderr
    assert not (Path(env["NEWSLETTER_HOME"]) / "state.db").exists()


def test_a_misspelt_variable_is_warned_about_with_the_setting_it_may_mean(env: dict[str, str]) -> None:
    """NEWSLETTER_SMPT_HOST was ignored in silence, even by `check` (a misspelt TOML key is refused)."""
    proc = cli({**env, "NEWSLETTER_SMPT_HOST": "mail.example.org"}, "check", check=False)
    assert (
        "warning: NEWSLETTER_SMPT_HOST is not a setting (did you mean NEWSLETTER_SMTP_HOST?)" in proc.stderr
    )
    assert proc.stdout.startswith("ok: 3 subscribers")
    beside = cli({**env, "NEWSLETTER_SMPT_HOST": "x", "NEWSLETTER_WORKERS": "0"}, "check", check=False)
    assert beside.returncode == 1 and "did you mean NEWSLETTER_SMTP_HOST" in beside.stderr  # it was lost


@pytest.mark.parametrize("name", ["max_per_run", "workers", "smtp_port", "send_rate"])
def test_true_in_newsletter_toml_is_no_number(env: dict[str, str], tmp_path: Path, name: str) -> None:
    """`max_per_run = true` was read as 1: one digest a run, the rest 'run cap reached'."""
    (tmp_path / "newsletter.toml").write_text(f"{name} = true\n", encoding="utf-8")
    proc = cli(env, "check", check=False, cwd=tmp_path)
    assert proc.returncode == 1 and name in proc.stderr and "not true or false" in proc.stderr


def test_true_for_a_number_of_a_source_is_refused(env: dict[str, str]) -> None:
    sources = '[{"kind": "hf-daily", "days_back": true}]'
    proc = cli({**env, "NEWSLETTER_SOURCES": sources}, "check", check=False)
    assert proc.returncode == 1 and "not true or false" in proc.stderr


def test_a_variable_in_lower_case_is_read_so_not_warned_about_but_the_sender_s_is_not(
    env: dict[str, str],
) -> None:
    proc = cli({**env, "NEWSLETTER_smtp_port": "2525"}, "check", check=False)
    assert "is not a setting" not in proc.stderr
    proc = cli({**env, "NEWSLETTER_From": "Papers <digest@papers.example.org>"}, "check", check=False)
    assert "warning: NEWSLETTER_From is not a setting (did you mean NEWSLETTER_FROM?)" in proc.stderr


@pytest.mark.parametrize("sender", ["Papers (Inc, Ltd) <d@example.org>", '"Papers, Inc." <d@example.org>'])
def test_a_comma_inside_quotes_or_a_comment_is_fine(sender: str) -> None:
    from newsletter.send.message import parse_sender

    assert parse_sender(sender)[1] == "d@example.org"


def test_a_secret_in_newsletter_toml_is_warned_about_without_showing_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    """README: secrets are read from the environment; one in newsletter.toml was taken in silence."""
    (tmp_path / "newsletter.toml").write_text(
        'smtp_username = "u"\n\nsmtp_password = "Pw9Secretz"\nAPI_KEY = "Key9Secretz"\n', encoding="utf-8"
    )
    proc = cli(env, "check", check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "warning: newsletter.toml, line 3 holds smtp_password, a secret: anyone who reads the file (or a "
        "copy or backup of it) has it; set NEWSLETTER_SMTP_PASSWORD in the environment instead"
    ) in proc.stderr
    assert "warning: newsletter.toml, line 4 holds api_key, a secret" in proc.stderr
    assert "Secretz" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("security", "port", "expected"),
    [
        (  # the default port: every send failed with 'wrong version number', check said ok
            "ssl",
            None,
            "warning: smtp_port 25 (the default) starts in the clear, but smtp_security is 'ssl': "
            "set port 465 (or starttls)",
        ),
        (
            "starttls",
            "465",
            "warning: smtp_port 465 (environment variable NEWSLETTER_SMTP_PORT) speaks TLS from the first "
            "byte, but smtp_security is 'starttls': set ssl (or port 587)",
        ),
        (  # port 587 was suggested: mail in the clear still
            "none",
            "465",
            "warning: smtp_port 465 (environment variable NEWSLETTER_SMTP_PORT) speaks TLS from the first "
            "byte, but smtp_security is 'none': set ssl",
        ),
        ("ssl", "465", None),
        ("starttls", "587", None),
    ],
)
def test_check_warns_about_an_smtp_port_that_speaks_another_way_than_the_security(
    env: dict[str, str], security: str, port: str | None, expected: str | None
) -> None:
    smtp = {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_FROM": "Papers <digest@papers.example.org>",
        "NEWSLETTER_SMTP_SECURITY": security,
    }
    proc = cli({**env, **smtp, **({"NEWSLETTER_SMTP_PORT": port} if port else {})}, "check", check=False)
    assert proc.returncode == 0, proc.stderr
    ports = [line for line in proc.stderr.splitlines() if "smtp_port" in line]
    assert ports == ([expected] if expected else [])


def test_check_warns_about_the_smtp_port_beside_a_problem(env: dict[str, str]) -> None:
    smtp = {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_FROM": "Papers <digest@papers.example.org>",
        "NEWSLETTER_SMTP_SECURITY": "ssl",
        "NEWSLETTER_DUMPS": env["NEWSLETTER_DUMPS"] + "-missing",
    }
    proc = cli({**env, **smtp}, "check", check=False)
    assert proc.returncode == 1
    assert "dumps folder not found" in proc.stderr
    assert "smtp_port 25 (the default) starts in the clear" in proc.stderr
