""" "More / less like this" end to end: a link from a sent email, a real HTTP client against uvicorn on
loopback, GET records nothing, POST records, and the next digest changes; bad links are refused."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from newsletter.app import open_store
from newsletter.config import Settings, load_settings
from newsletter.feedback import feedback_token
from newsletter.unsubscribe import make_token

from .helpers import LiveServer, add_dumps, cli, make_env, outbox, seed_names
from .test_serve import settings_for as serve_settings

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SECRET = "feedback-e2e-secret"
SSM = "ssm@example.org"
MARKED = "Training Large Language Models to Reason in a Continuous Latent Space"  # in Sam's first digest; marking it "less" drops a paper from the next one
DROPPED = "Training Chain-of-Thought via Latent-Variable Inference"  # ... this one, from the third seed dump
MARKED_QUOTED = "Training Large Language Models to Reason in a Con…"  # a reason quotes at most 50 characters


def env_for(tmp_path: Path) -> dict[str, str]:
    env = make_env(tmp_path)
    env.update(NEWSLETTER_BASE_URL="https://papers.example.org/", NEWSLETTER_UNSUBSCRIBE_SECRET=SECRET)
    return env


def settings_for(env: dict[str, str]) -> Settings:
    return serve_settings(env, base_url=env["NEWSLETTER_BASE_URL"], unsubscribe_secret=SECRET)


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], EmailMessage]:
    """A state folder after the first run (two seed dumps), and Sam's digest as sent."""
    env = env_for(tmp_path_factory.mktemp("feedback"))
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--no-fetch", "--now", NOW.isoformat())
    (message,) = [m for m in outbox(env) if m["To"].addresses[0].addr_spec == SSM]
    return env, message


def links(message: EmailMessage) -> tuple[str, str, dict[str, tuple[str, str]]]:
    """(html, text, title -> (more URL, less URL) from the plain-text part; an item's lines stand under
    its title: 3 columns in, 4 from item 10)."""
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    found = re.findall(
        r"^\d+\. (.+)\n(?:.*\n)*? +More like this: (\S+)\n +Less like this: (\S+)$", text, flags=re.M
    )
    return html, text, {title: (more, less) for title, more, less in found}


def on(server: LiveServer, url: str) -> str:
    """The link's path on the local server (the email's links point at the public base URL)."""
    assert url.startswith("https://papers.example.org/feedback/")
    return server.url + urlsplit(url).path


@pytest.fixture
def home(sent: tuple[dict[str, str], EmailMessage], tmp_path: Path) -> dict[str, str]:
    """A copy of the state after the first run, so each test starts from the sent digest."""
    return copy_of(sent[0], tmp_path / "home")


def copy_of(env: dict[str, str], folder: Path) -> dict[str, str]:
    folder.mkdir()
    copy = env_for(folder)
    shutil.copytree(env["NEWSLETTER_HOME"], copy["NEWSLETTER_HOME"])
    shutil.copytree(env["NEWSLETTER_DUMPS"], copy["NEWSLETTER_DUMPS"], dirs_exist_ok=True)
    return copy


@pytest.fixture
def server(home: dict[str, str]) -> Iterator[LiveServer]:
    with LiveServer(settings_for(home), NOW) as running:
        yield running


def feedback_of(env: dict[str, str], address: str = SSM) -> list[tuple[str, str]]:
    with open_store(settings_for(env)) as store:
        return [(f.paper.title, f.kind) for f in store.feedback(address)]


def next_digest(env: dict[str, str]) -> tuple[str, list[str]]:
    """Sam's next digest (status, titles): the third seed dump arrives and a run goes a day later."""
    add_dumps(env, seed_names()[2])
    ran = cli(env, "run", "--no-fetch", "--json", "--now", (NOW + timedelta(days=1)).isoformat())
    (digest,) = [d for d in json.loads(ran.stdout)["digests"] if d["subscriber"] == SSM]
    return digest["status"], [item["title"] for item in digest["items"]]


def test_every_paper_in_the_email_has_both_links_in_both_parts(
    sent: tuple[dict[str, str], EmailMessage],
) -> None:
    _, message = sent
    html, text, found = links(message)
    papers = re.findall(r"^\d+\. ", text, flags=re.M)
    assert len(found) == len(papers) == 10
    for more, less in found.values():
        assert more.rsplit("/", 1)[1] == less.rsplit("/", 1)[1]  # one token per paper
        assert f'href="{more}"' in html and f'href="{less}"' in html


def test_get_records_nothing_post_records_and_the_next_digest_changes(
    home: dict[str, str], server: LiveServer, sent: tuple[dict[str, str], EmailMessage], tmp_path: Path
) -> None:
    control = copy_of(home, tmp_path / "control")  # the same state, no feedback
    less = links(sent[1])[2][MARKED][1]

    with httpx.Client(timeout=60) as client:
        shown = client.get(on(server, less))
        assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
        assert MARKED in shown.text and SSM in shown.text
        assert re.search(
            r'<form method="post">\s*<button class="button" type="submit">Less like this</button>', shown.text
        )
        assert feedback_of(home) == []  # a mail scanner's prefetch changes nothing
        assert "<title>Less like this? · " in shown.text and '<p class="title" dir="auto">' in shown.text

        done = client.post(on(server, less))
        assert done.status_code == 200 and "fewer papers like this one" in done.text
        assert "<title>Noted: less like this · " in done.text  # the title a screen reader says first
        assert client.post(on(server, less)).status_code == 200  # again: still one record
        assert feedback_of(home) == [(MARKED, "less")]

        add_dumps(home, seed_names()[2])
        page = httpx.get(f"{server.url}/s/{SSM}", cookies=server.cookies, timeout=60).text
        assert f"less like &#39;{MARKED_QUOTED}&#39; you marked" in page  # the preview explains the change
        assert re.search(rf"{MARKED}</a></div>\s*<div class=\"meta\">less like this", page)

    (status, changed), (_, unchanged) = next_digest(home), next_digest(control)
    assert any(t.startswith(DROPPED) for t in unchanged)
    assert not any(t.startswith(DROPPED) for t in changed)
    assert status == "sent" if changed else status == "skipped"


def test_more_replaces_less_on_the_same_paper(home: dict[str, str], server: LiveServer, sent: tuple) -> None:  # type: ignore[type-arg]
    more, less = links(sent[1])[2][MARKED]
    with httpx.Client(timeout=60) as client:
        client.post(on(server, less))
        shown = client.get(on(server, more))
        assert 'This replaces your earlier "less like this"' in shown.text
        client.post(on(server, more))
    assert feedback_of(home) == [(MARKED, "more")]


def test_an_old_link_records_nothing_of_a_forgotten_address(
    home: dict[str, str],
    server: LiveServer,
    sent: tuple,  # type: ignore[type-arg]
) -> None:
    """After `forget`, a click on a link of an earlier digest stored the address's feedback again."""
    subscribers = Path(home["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_text(subscribers.read_text().replace(SSM, "sam@example.org"))
    cli(home, "forget", SSM)
    less = links(sent[1])[2][MARKED][1]
    with httpx.Client(timeout=60) as client:
        for method in ("GET", "POST"):
            response = client.request(method, on(server, less))
            assert response.status_code == 410 and "<title>Not on the list · " in response.text
            assert "Less like this</button>" not in response.text and SSM not in response.text
    assert feedback_of(home) == []
    with open_store(settings_for(home)) as store:
        assert store.subscriber_state(SSM) is None


def test_an_old_link_of_a_renamed_address_does_not_say_it_asked_to_be_removed(
    home: dict[str, str],
    server: LiveServer,
    sent: tuple,  # type: ignore[type-arg]
) -> None:
    """After `rename`, a click on a link of a digest sent to the old address said the address "was
    removed at its request": the reader only changed address, and asked for nothing of the kind."""
    subscribers = Path(home["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_text(subscribers.read_text().replace(SSM, "sam@example.org"))
    cli(home, "rename", SSM, "sam@example.org")
    response = httpx.get(on(server, links(sent[1])[2][MARKED][1]), timeout=60)
    assert response.status_code == 410
    assert "removed at its request" not in response.text
    assert "changed address" in response.text


def _forged(token: str) -> str:
    sig = token.partition(".")[2]
    other = feedback_token("eve@example.org", "2312.00752", SecretStr(SECRET)).partition(".")[0]
    return f"{other}.{sig}"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (lambda t: f"/feedback/less/{_forged(t)}", 400),  # another address under this link's signature
        (lambda t: f"/feedback/less/{t[:-3]}", 400),  # cut short
        (lambda t: f"/feedback/less/{feedback_token(SSM, 'x', SecretStr('guessed'))}", 400),
        (lambda t: f"/feedback/less/{make_token(SSM, SecretStr(SECRET))}", 400),  # an unsubscribe token
        (lambda t: f"/feedback/meh/{t}", 400),
        (lambda t: f"/feedback/less/{feedback_token(SSM, '2499.99999', SecretStr(SECRET))}", 404),
    ],
    ids=["forged", "truncated", "wrong-secret", "unsubscribe-token", "unknown-kind", "unknown-paper"],
)
def test_bad_links_are_refused_and_record_nothing(
    home: dict[str, str],
    server: LiveServer,
    sent: tuple,
    path: object,
    status: int,  # type: ignore[type-arg]
) -> None:
    token = links(sent[1])[2][MARKED][1].rsplit("/", 1)[1]
    with httpx.Client(timeout=60) as client:
        for method in ("GET", "POST"):
            response = client.request(method, server.url + path(token))  # type: ignore[operator]
            assert response.status_code == status
            assert "Less like this</button>" not in response.text
            assert (
                "<title>Link not valid · " if status == 400 else "<title>Paper not known · "
            ) in response.text
    assert feedback_of(home) == [] and feedback_of(home, "eve@example.org") == []


def test_without_a_secret_there_are_no_links_and_no_endpoint(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--no-fetch", "--now", NOW.isoformat())
    message = next(m for m in outbox(env) if m["To"].addresses[0].addr_spec == SSM)
    assert "like this" not in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], ranker="lexical"
    )
    token = feedback_token(SSM, "2312.00752", SecretStr(SECRET))
    with LiveServer(settings, NOW) as server, httpx.Client(timeout=60) as client:
        response = client.post(f"{server.url}/feedback/less/{token}")
    assert response.status_code == 404 and "not set up" in response.text


def test_a_forgotten_address_whose_old_unsubscribe_link_is_used_stays_forgotten(
    home: dict[str, str],
    server: LiveServer,
    sent: tuple,  # type: ignore[type-arg]
) -> None:
    """A mail client's one-click unsubscribe, posted after `forget`, recorded the address again: its
    'less like this' links then recorded feedback again."""
    subscribers = Path(home["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_text(subscribers.read_text().replace(SSM, "sam@example.org"))
    cli(home, "forget", SSM)
    one_click = re.search(r"<(https://[^>]+)>", sent[1]["List-Unsubscribe"]).group(1)  # type: ignore[union-attr]
    with httpx.Client(timeout=60) as client:
        unsubscribed = client.post(
            server.url + urlsplit(one_click).path, data={"List-Unsubscribe": "One-Click"}
        )
        assert unsubscribed.status_code == 200
        assert client.post(on(server, links(sent[1])[2][MARKED][1])).status_code == 410
    assert feedback_of(home) == []
