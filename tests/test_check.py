"""`newsletter check` lists every problem, with lines and plain words, and what `run` would trip on."""

from __future__ import annotations

from pathlib import Path

from newsletter.config import PACKAGE_TEMPLATES

from .helpers import add_dumps, cli, seed_names

BROKEN = """\
subscribers:
  - email: ok@example.org
    interests: [speech]
  - email: typo@example.org
    interets: [speech]
  - email: zone@example.org
    interests: [speech]
    timezone: Mars/Base
  - email: list@example.org
    interests: speech, quantization
    max_items: 0
"""


def test_check_reports_every_problem_with_its_line_in_plain_words(
    env: dict[str, str], tmp_path: Path
) -> None:
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(BROKEN, encoding="utf-8")
    env |= {"NEWSLETTER_DUMPS": str(tmp_path / "no-such-folder"), "NEWSLETTER_TRANSPORT": "smtp"}
    del env["NEWSLETTER_FROM"]  # the placeholder sender, with a transport that sends real mail
    proc = cli(env, "check", check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    subs = env["NEWSLETTER_SUBSCRIBERS"]
    expected = [
        f"{subs}:5: subscriber #2 (typo@example.org): unknown key 'interets' (did you mean 'interests'?)",
        f"{subs}:8: subscriber #3 (zone@example.org): field 'timezone': ",
        f"{subs}:10: subscriber #4 (list@example.org): field 'interests': expected a list",
        f"{subs}:11: subscriber #4 (list@example.org): field 'max_items': ",
        "the sender 'Trending Papers <digest@newsletter.invalid>' is the placeholder",
        f"{tmp_path / 'no-such-folder'}: dumps folder not found",
    ]
    for wanted in expected:
        assert any(wanted in line for line in errors), (wanted, errors)
    assert len(errors) == len(expected), errors
    assert "Field required" not in proc.stderr  # the misspelt key is one problem, not two
    assert "Value error," not in proc.stderr and "valid tuple" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "6 problems found"


def test_the_placeholder_sender_is_fine_for_the_file_outbox(env: dict[str, str]) -> None:
    del env["NEWSLETTER_FROM"]
    assert cli(env, "check").stdout.startswith("ok: 3 subscribers")


def test_run_names_every_bad_entry_goes_on_without_them_and_points_at_check(env: dict[str, str]) -> None:
    """One bad entry stopped the run for every subscriber."""
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(BROKEN, encoding="utf-8")
    add_dumps(env, seed_names()[0])
    proc = cli(env, "run", "--json", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {env['NEWSLETTER_SUBSCRIBERS']}:5: subscriber #2")
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 4
    assert "`newsletter check` lists every problem" in proc.stderr
    assert '"subscriber": "ok@example.org"' in proc.stdout


def test_run_refuses_the_placeholder_sender_with_a_transport_that_sends_real_mail(
    env: dict[str, str],
) -> None:
    """Only `check` refused it: `run` went on and tried to send from digest@newsletter.invalid."""
    del env["NEWSLETTER_FROM"]
    proc = cli({**env, "NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP_PORT": "1"}, "run", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        "error: the sender 'Trending Papers <digest@newsletter.invalid>' is the placeholder"
    )
    assert "cannot connect" not in proc.stderr


def test_the_placeholder_sender_written_in_newsletter_toml_is_named_with_its_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The refusal named no origin, so an address copied into newsletter.toml was hard to find."""
    del env["NEWSLETTER_FROM"]
    (tmp_path / "newsletter.toml").write_text('transport = "smtp"\nsender = "digest@newsletter.invalid"\n')
    proc = cli(env, "check", check=False, cwd=tmp_path)
    assert proc.returncode == 1
    assert (
        "error: the sender 'digest@newsletter.invalid' (newsletter.toml, line 2) is the placeholder"
        in proc.stderr
    )


def test_commands_that_send_nothing_take_the_placeholder_sender(env: dict[str, str]) -> None:
    """The refusal above is for sending: a dry run, a preview and an explain send nothing."""
    add_dumps(env, seed_names()[0])
    del env["NEWSLETTER_FROM"]
    smtp = {**env, "NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP_PORT": "1"}
    for command in (
        ["run", "--dry-run"],
        ["preview", "ssm@example.org"],
        ["explain", "ssm@example.org", "x"],
    ):
        proc = cli(smtp, *command, check=False)
        assert "placeholder" not in proc.stderr, (command, proc.stderr)


def test_a_misspelt_key_in_newsletter_toml_gets_the_setting_it_may_mean(
    env: dict[str, str], tmp_path: Path
) -> None:
    """It said 'unknown key' only, where the subscribers file and the variables suggest the name."""
    (tmp_path / "newsletter.toml").write_text(
        'smtp_hots = "mail.example.org"\nfrm = "a@example.org"\nzzz = 1\n'
    )
    errors = [
        line for line in cli(env, "check", check=False, cwd=tmp_path).stderr.splitlines() if "error:" in line
    ]
    assert errors == [
        "error: invalid setting field 'smtp_hots': unknown key (did you mean 'smtp_host'?) (newsletter.toml, line 1)",
        "error: invalid setting field 'frm': unknown key (did you mean 'from'?) (newsletter.toml, line 2)",
        "error: invalid setting field 'zzz': unknown key (newsletter.toml, line 3)",
    ]


def test_a_dumps_setting_naming_a_file_says_so(env: dict[str, str], tmp_path: Path) -> None:
    """It said "dumps folder not found" of a file that is there."""
    (tmp_path / "listing.txt").write_text("x")
    proc = cli({**env, "NEWSLETTER_DUMPS": str(tmp_path / "listing.txt")}, "check", check=False)
    assert (
        proc.returncode == 1 and f"error: {tmp_path / 'listing.txt'}: is a file, not a folder" in proc.stderr
    )


def test_a_bad_sender_is_one_problem(env: dict[str, str]) -> None:
    """The envelope, the placeholder check and Mailgun's default domain each found it: listed 3 times."""
    env |= {"NEWSLETTER_FROM": "nobody", "NEWSLETTER_TRANSPORT": "mailgun", "NEWSLETTER_API_KEY": "k" * 20}
    proc = cli(env, "check", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "invalid email address 'nobody'" in errors[0], proc.stderr
    assert proc.stderr.splitlines()[-1] == "1 problem found"


def test_a_template_check_would_ignore_or_one_without_an_unsubscribe_link_is_a_warning(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A copy saved as 'digest.txt' was ignored for the bundled template, a footer rewritten without its
    Unsubscribe link went out, and a template copied before the feedback links existed lacked them:
    check said ok to each."""
    folder = tmp_path / "templates"
    folder.mkdir()
    html = (PACKAGE_TEMPLATES / "digest.mjml.j2").read_text(encoding="utf-8")
    html = html.replace("{{ view.unsubscribe_url | safe_url }}", "https://example.org/about")
    (folder / "digest.mjml.j2").write_text(html.replace("item.more_url", "none"), encoding="utf-8")
    (folder / "digest.txt").write_text("{{ view.list_name }}\n", encoding="utf-8")
    env |= {"NEWSLETTER_TEMPLATES": str(folder), "NEWSLETTER_BASE_URL": "https://news.example.org"}
    env["NEWSLETTER_UNSUBSCRIBE_SECRET"] = "s3cret-" * 6
    warnings = " ".join(cli(env, "check").stderr.split())  # the run's folder: paths relative to it
    assert "warning: templates/digest.txt.j2: not found; the bundled digest.txt.j2 is used" in warnings
    assert (
        "templates/digest.mjml.j2: its email has no unsubscribe link ({{ view.unsubscribe_url }}" in warnings
    )
    assert "templates/digest.mjml.j2: its email has no 'more/less like this' links" in warnings
    assert "digest.txt.j2: its email" not in warnings  # the bundled text template has both
