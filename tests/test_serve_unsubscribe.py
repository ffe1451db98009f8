"""One-click unsubscribe (RFC 8058) on `newsletter serve`: GET confirms, POST records, bad tokens refused."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from newsletter.app import open_pipeline, open_store
from newsletter.config import Settings, load_settings
from newsletter.feedback import feedback_token
from newsletter.serve import create_app
from newsletter.serve.pages import page
from newsletter.store import Store
from newsletter.store.records import RETRY
from newsletter.store.schema import digests
from newsletter.subscribers import load_subscribers
from newsletter.unsubscribe import mailto_url, make_token

from .helpers import add_dumps, cli, keyed, make_env, seed_names

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SECRET = "test-unsubscribe-secret"
SSM = "ssm@example.org"
DIFF = "diff@example.org"
ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


def settings_for(env: dict[str, str], secret: str | None = SECRET) -> Settings:
    return load_settings(
        home=env["NEWSLETTER_HOME"],
        subscribers=env["NEWSLETTER_SUBSCRIBERS"],
        dumps=env["NEWSLETTER_DUMPS"],
        ranker="lexical",
        sender=env["NEWSLETTER_FROM"],
        base_url="https://papers.example.org/",
        unsubscribe_secret=secret,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = make_env(tmp_path)
    add_dumps(env, *seed_names()[:2])
    return env


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return settings_for(env)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with keyed(create_app(settings, clock=lambda: NOW)) as client:  # the previews ask for the key
        yield client


def token(address: str, secret: str = SECRET) -> str:
    return make_token(address, SecretStr(secret))


def unsubscribed(settings: Settings) -> set[str]:
    with open_store(settings) as store:
        return store.unsubscribed_emails()


def test_get_shows_a_confirmation_form_and_records_nothing(client: TestClient, settings: Settings) -> None:
    response = client.get(f"/unsubscribe/{token(SSM)}")
    assert response.status_code == 200
    assert SSM in response.text
    assert re.search(
        r'<form method="post">.*<button class="button bad" type="submit">Unsubscribe</button>',
        response.text,
        re.S,
    )
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in response.text
    assert response.headers["cache-control"] == "no-store"
    assert unsubscribed(settings) == set()


def test_one_click_post_records_and_is_idempotent(env: dict[str, str], settings: Settings) -> None:
    times = iter([NOW, NOW + timedelta(hours=1)])
    with TestClient(create_app(settings, clock=lambda: next(times))) as client:
        first = client.post(
            f"/unsubscribe/{token(SSM)}", content="List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
        again = client.post(
            f"/unsubscribe/{token(SSM)}", content="List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
        assert first.status_code == again.status_code == 200
        assert "You are unsubscribed" in first.text
        assert unsubscribed(settings) == {SSM}
        with open_store(settings) as store:
            state = store.subscriber_state(SSM)
        assert state is not None and state.unsubscribed_at == NOW  # the first time is kept
        assert "Already unsubscribed" in client.get(f"/unsubscribe/{token(SSM)}").text


def test_next_run_skips_the_unsubscribed_address(client: TestClient, settings: Settings) -> None:
    assert (
        client.post(f"/unsubscribe/{token(SSM)}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    )
    with open_pipeline(settings) as pipeline:
        report = pipeline.run(load_subscribers(settings.subscribers), NOW)
    by_sub = {d.subscriber: d for d in report.digests}
    assert (by_sub[SSM].status, by_sub[SSM].reason) == ("skipped", "unsubscribed")
    assert by_sub[DIFF].status == "sent"
    assert "unsubscribed" in re.sub(r"\s+", " ", client.get("/").text.split(SSM, 1)[1])


def test_the_link_in_the_built_email_unsubscribes_its_recipient(
    client: TestClient, settings: Settings
) -> None:
    page = client.get(f"/s/{SSM}").text
    header = re.search(r'<tr><th scope="row">List-Unsubscribe</th><td>&lt;(https://[^&]+)&gt;', page)
    assert header, "no https List-Unsubscribe header"
    assert '<tr><th scope="row">List-Unsubscribe-Post</th><td>List-Unsubscribe=One-Click</td></tr>' in page
    url = urlsplit(header[1])
    assert url.netloc == "papers.example.org" and url.path.startswith("/unsubscribe/")
    assert client.post(url.path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK).status_code == 200
    assert unsubscribed(settings) == {SSM}


def _forgeries() -> dict[str, str]:
    ssm, diff = token(SSM), token(DIFF)
    payload, sig = ssm.split(".")
    return {
        "truncated signature": ssm[:-3],
        "truncated payload": ssm[3:],
        "no signature": payload,
        "signature changed": f"{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}",
        "other subscriber's signature": f"{diff.split('.')[0]}.{sig}",
        "other secret": token(SSM, "another-secret"),
        "garbage": "not-a-token",
        "empty payload": f".{sig}",
    }


@pytest.mark.parametrize("kind", sorted(_forgeries()))
def test_forged_truncated_and_other_tokens_are_refused(
    kind: str, client: TestClient, settings: Settings
) -> None:
    bad = _forgeries()[kind]
    got = client.get(f"/unsubscribe/{bad}")
    posted = client.post(f"/unsubscribe/{bad}", content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert got.status_code == posted.status_code == 400
    assert "not valid" in posted.text
    assert "<form" not in got.text
    assert unsubscribed(settings) == set()


def test_after_a_change_of_key_the_links_of_emails_sent_with_the_previous_one_still_work(
    env: dict[str, str],
) -> None:
    """A new NEWSLETTER_UNSUBSCRIBE_SECRET refused every link already sent: a mail client posts the
    one-click unsubscribe once, and the reader, told nothing, kept getting the digests."""
    new = "a-new-unsubscribe-secret-after-a-leak"
    rotated = settings_for(env, secret=new).model_copy(
        update={"unsubscribe_secret_previous": SecretStr(SECRET)}
    )
    with open_pipeline(rotated) as pipeline:
        pipeline.ingest_folder(NOW)
        key = pipeline.store.papers_first_seen_after(0)[0].key
    with TestClient(create_app(rotated, clock=lambda: NOW)) as client:
        for old in (token(SSM), token(DIFF, new)):  # an email sent before the change, one after
            posted = client.post(
                f"/unsubscribe/{old}", content="List-Unsubscribe=One-Click", headers=ONE_CLICK
            )
            assert posted.status_code == 200
        link = f"/feedback/more/{feedback_token(SSM, key, SecretStr(SECRET))}"
        assert client.post(link).status_code == 200
        forged = client.post(f"/unsubscribe/{token('eve@example.org', 'another-secret-nobody-has')}")
        assert forged.status_code == 400
    assert unsubscribed(rotated) == {SSM, DIFF}
    without = settings_for(env, secret=new)  # the previous key dropped: its links go with it
    with TestClient(create_app(without, clock=lambda: NOW)) as client:
        assert client.get(f"/unsubscribe/{token(SSM)}").status_code == 400


def test_a_previous_key_alone_is_refused(env: dict[str, str]) -> None:
    proc = cli({**env, "NEWSLETTER_UNSUBSCRIBE_SECRET_PREVIOUS": SECRET}, "check", check=False)
    assert proc.returncode != 0
    assert (
        "unsubscribe_secret_previous is set (environment variable NEWSLETTER_UNSUBSCRIBE_SECRET_PREVIOUS)"
        in (proc.stderr)
    )
    assert SECRET not in proc.stderr + proc.stdout
    keys = {"NEWSLETTER_UNSUBSCRIBE_SECRET": "k" * 32, "NEWSLETTER_UNSUBSCRIBE_SECRET_PREVIOUS": "old-key"}
    short = cli({**env, **keys}, "check", check=False).stderr  # not the advice for a new key
    assert "unsubscribe_secret_previous': is empty or shorter than 16 characters, as no key" in short
    assert "old-key" not in short


def test_without_a_secret_the_endpoint_is_404_with_a_note(env: dict[str, str]) -> None:
    settings = settings_for(env, secret=None)
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        got = client.get(f"/unsubscribe/{token(SSM)}")
        posted = client.post(
            f"/unsubscribe/{token(SSM)}", content="List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
    assert got.status_code == posted.status_code == 404
    assert "NEWSLETTER_UNSUBSCRIBE_SECRET" in posted.text
    assert unsubscribed(settings) == set()


def test_post_needs_no_csrf_token_nor_cookies_nor_body(client: TestClient, settings: Settings) -> None:
    client.cookies.clear()
    assert client.post(f"/unsubscribe/{token(DIFF)}").status_code == 200
    assert unsubscribed(settings) == {DIFF}


def test_address_case_does_not_matter(client: TestClient, settings: Settings) -> None:
    assert client.post(f"/unsubscribe/{token('SSM@Example.ORG')}").status_code == 200
    assert unsubscribed(settings) == {SSM}
    with open_pipeline(settings) as pipeline:
        report = pipeline.run(load_subscribers(settings.subscribers), NOW)
    assert {d.subscriber: d.reason for d in report.digests}[SSM] == "unsubscribed"


def test_a_store_error_on_a_public_link_says_try_again_and_shows_no_operator_detail(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.errors import StoreError
    from newsletter.store import Store

    def busy(*args: object, **kwargs: object) -> None:
        raise StoreError(f"database is locked: {settings.home}/state.db", hint="fix it and reload this page")

    monkeypatch.setattr(Store, "is_unsubscribed", busy)  # it shows its button anyway: a POST is held
    answer = client.get(f"/unsubscribe/{token(SSM)}")
    assert answer.status_code == 200 and '<form method="post"' in answer.text
    assert str(settings.home) not in answer.text and "reload" not in answer.text
    monkeypatch.setattr(Store, "paper_by_key", busy)  # a feedback link's page needs the paper's title
    link = f"/feedback/more/{feedback_token(SSM, '2401.00001', SecretStr(SECRET))}"
    answer = client.get(link)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "60"
    assert (
        "try again" in answer.text and str(settings.home) not in answer.text and "reload" not in answer.text
    )
    monkeypatch.undo()
    assert client.get(f"/unsubscribe/{token(SSM)}").status_code == 200


def test_the_pages_name_the_list_as_its_emails_do(env: dict[str, str]) -> None:
    """The emails are signed with the sender's display name; the pages said "Trending Papers"."""
    settings = settings_for({**env, "NEWSLETTER_FROM": "AI Weekly <digest@example.org>"})
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        response = client.post(
            f"/unsubscribe/{token(SSM)}", headers=ONE_CLICK, content="List-Unsubscribe=One-Click"
        )
    assert response.status_code == 200
    assert "AI Weekly" in response.text and "Trending Papers" not in response.text


@pytest.mark.parametrize("path", ["/nl", "/s"])  # /s: the preview pages' prefix
def test_a_base_url_with_a_path_has_its_links_answered_there(env: dict[str, str], path: str) -> None:
    """The emails link to https://papers.example.org/nl/unsubscribe/...: `serve` answered only
    /unsubscribe/..., so a proxy that passed the path on gave every reader a 404."""
    settings = settings_for(env).model_copy(update={"base_url": f"https://papers.example.org{path}/"})
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        for link in (f"{path}/unsubscribe/{token(SSM)}", f"/unsubscribe/{token(SSM)}"):
            response = client.get(link)
            assert response.status_code == 200 and "Unsubscribe" in response.text, link
        assert client.get(f"{path}/feedback/more/{token(SSM)}").status_code == 400  # routed: a bad token
        assert client.get(f"/other/unsubscribe/{token(SSM)}").status_code == 404


def test_the_mailto_subject_escapes_in_lower_case_and_names_the_address() -> None:
    """SpamAssassin's UNRESOLVED_TEMPLATE (0.7) fired on "%BC" of bob@bücher.example's subject."""
    url = mailto_url("digest@papers.example.org", "bob@bücher.example")
    subject = url.split("?subject=", 1)[1]
    assert not re.search(r"%[A-Z][A-Z_-]", subject)
    assert unquote(subject) == "unsubscribe bob@bücher.example"


def test_resubscribe_undoes_an_unsubscribe_and_sends_no_backlog(tmp_path: Path) -> None:
    """An unsubscribe could not be undone: a person who asked to come back got nothing, for good."""
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:  # as the link does
        store.record_unsubscribe(SSM, datetime(2026, 3, 11, 9, tzinfo=UTC))
    add_dumps(env, seed_names()[1])  # listed while they were away
    away = json.loads(cli(env, "run", "--json", "--now", "2026-03-12T08:00:00Z").stdout)
    assert [d["reason"] for d in away["digests"] if d["subscriber"] == SSM] == ["unsubscribed"]
    assert "newsletter resubscribe" in cli(env, "check").stderr

    assert (
        cli(env, "resubscribe", SSM.upper()).stdout
        == f"{SSM}: subscribed again: digests from papers listed from now on\n"
    )
    assert cli(env, "resubscribe", SSM).stdout == f"{SSM}: had not unsubscribed\n"
    back = json.loads(cli(env, "run", "--json", "--now", "2026-03-13T08:00:00Z").stdout)
    assert [d["reason"] for d in back["digests"] if d["subscriber"] == SSM] == ["nothing new"]
    add_dumps(env, seed_names()[2])
    later = json.loads(cli(env, "run", "--json", "--now", "2026-03-14T08:00:00Z").stdout)
    assert [d["status"] for d in later["digests"] if d["subscriber"] == SSM] == ["sent"]


@pytest.mark.parametrize("tail", ["/", ".", ">", ")", ";jsessionid=AB12", "/%3E"])
def test_what_a_mail_client_adds_after_a_link_is_dropped_not_redirected(
    client: TestClient, settings: Settings, tail: str
) -> None:
    """Starlette's slash redirect pointed at http://host/unsubscribe/..., without a proxy's /nl; then a
    trailing "/" was a 404, and a "." or ">" a link "not valid"."""
    response = client.post(
        f"/unsubscribe/{token(SSM)}{tail}",
        content="List-Unsubscribe=One-Click",
        headers=ONE_CLICK,
        follow_redirects=False,
    )
    assert response.status_code == 200 and "location" not in response.headers
    assert unsubscribed(settings) == {SSM}


def test_a_base_url_path_with_an_escape_is_answered_as_the_links_spell_it(env: dict[str, str]) -> None:
    settings = load_settings(
        home=env["NEWSLETTER_HOME"],
        subscribers=env["NEWSLETTER_SUBSCRIBERS"],
        dumps=env["NEWSLETTER_DUMPS"],
        ranker="lexical",
        base_url="https://papers.example.org/news%20letter",
        unsubscribe_secret=SECRET,
    )
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        response = client.post(
            f"/news%20letter/unsubscribe/{token(SSM)}",
            content="List-Unsubscribe=One-Click",
            headers=ONE_CLICK,
        )
    assert response.status_code == 200 and unsubscribed(settings) == {SSM}


def test_feedback_from_an_unsubscribed_address_says_no_digest_goes_there(
    client: TestClient, settings: Settings
) -> None:
    """The page promised "from the next digest on" to an address that gets none."""
    from newsletter.feedback import feedback_token

    with open_pipeline(settings) as pipeline:
        pipeline.ingest_folder(NOW)
        key = pipeline.store.papers_first_seen_after(0)[0].key
    client.post(f"/unsubscribe/{token(SSM)}", content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
    link = f"/feedback/more/{feedback_token(SSM, key, SecretStr(SECRET))}"
    shown, done = client.get(link).text, client.post(link).text
    assert "is unsubscribed from" in shown and "It would be kept" in shown
    assert "is unsubscribed from" in done and "From the next digest on" not in done


def test_unsubscribe_records_a_request_that_came_by_mail(tmp_path: Path) -> None:
    """The mailto in every digest went to a mailbox nothing read, and no command could record it."""
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:  # refused for now: queued
        (ssm,) = store.deliveries(email=SSM, with_items=False)
        with store._engine.begin() as conn:
            conn.execute(digests.update().where(digests.c.id == ssm.digest_id).values(status=RETRY))
    assert cli(env, "unsubscribe", SSM.upper()).stdout == f"{SSM}: unsubscribed\n"
    assert cli(env, "unsubscribe", SSM).stdout == f"{SSM}: had already unsubscribed\n"
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:
        assert [d.status for d in store.deliveries(email=SSM, with_items=False)] == ["cancelled"]
    add_dumps(env, seed_names()[1])
    later = json.loads(cli(env, "run", "--json", "--now", "2026-03-12T08:00:00Z").stdout)
    assert [d["reason"] for d in later["digests"] if d["subscriber"] == SSM] == ["unsubscribed"]

    stranger = cli(env, "unsubscribe", " gone@example.net ").stdout
    assert stranger.startswith("gone@example.net: unsubscribed (not in ")  # honoured if it is added later
    undone = cli(env, "resubscribe", "gone@example.net").stdout  # a typo can be undone: it could not
    assert undone.startswith(
        "gone@example.net: subscribed again: digests from papers listed from now on (not in "
    )
    unknown = cli(env, "resubscribe", "gone@example.net", check=False)
    assert (
        unknown.returncode == 1
        and "no subscriber with email 'gone@example.net', and it had not" in unknown.stderr
    )
    bad = cli(env, "unsubscribe", "not an address", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: 'not an address' is not an email address")


def test_check_warns_when_mail_leaves_with_only_the_mailto(tmp_path: Path) -> None:
    env = {**make_env(tmp_path), "NEWSLETTER_TRANSPORT": "smtp"}
    warning = "warning: the digests carry only a mailto unsubscribe"
    assert warning in cli(env, "check").stderr
    linked = {
        **env,
        "NEWSLETTER_BASE_URL": "https://papers.example.org/",
        "NEWSLETTER_UNSUBSCRIBE_SECRET": SECRET,
    }
    assert warning not in cli(linked, "check").stderr
    assert warning not in cli({**env, "NEWSLETTER_TRANSPORT": "file"}, "check").stderr


class _Titles(HTMLParser):
    """The text of a page's <title>."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.text = False, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.inside = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self.inside = False

    def handle_data(self, data: str) -> None:
        self.text += data if self.inside else ""


def title_of(html: str) -> str:
    parser = _Titles()
    parser.feed(html)
    return parser.text.strip()


def test_each_unsubscribe_page_has_its_own_title() -> None:
    """A screen reader announces the title first, and a tab shows it: the confirmation, the done page,
    a bad link and a server without the secret were all "Unsubscribe · LIST"."""
    states = ("confirm", "done", "already", "invalid", "off")
    titles = [
        title_of(page("unsubscribe.html", state=s, email=SSM, list_name="Papers").body.decode())
        for s in states
    ]
    assert len(set(titles)) == len(states), titles
    assert all(title.endswith(" · Papers") for title in titles)
    assert titles[2] == "Already unsubscribed · Papers" and titles[3] == "Unsubscribe link not valid · Papers"
