"""`newsletter serve`: the preview pages through Starlette's TestClient (no network)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import httpx
import numpy as np
import pytest
from markupsafe import escape
from pydantic import SecretStr
from starlette.testclient import TestClient

from newsletter import intake
from newsletter.app import open_pipeline, open_store
from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.rank import semantic
from newsletter.rank.embed import HashingEmbedder
from newsletter.serve import answered_hosts, create_app, local_hosts
from newsletter.serve.key import cookie_name
from newsletter.store import Store, run_lock
from newsletter.store.rejected import RejectedFile
from newsletter.subscribers import load_subscribers, load_valid_subscribers
from newsletter.unsubscribe import make_token

from .conftest import DATA
from .helpers import add_dumps, cli, keyed, make_env, seed_names

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SSM = "ssm@example.org"


def settings_for(env: dict[str, str], **extra: object) -> Settings:
    return load_settings(
        home=env["NEWSLETTER_HOME"],
        subscribers=env["NEWSLETTER_SUBSCRIBERS"],
        dumps=env["NEWSLETTER_DUMPS"],
        ranker="lexical",
        sender=env["NEWSLETTER_FROM"],
        **extra,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = make_env(tmp_path)
    add_dumps(env, *seed_names()[:2])
    return env


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[TestClient]:
    with keyed(create_app(settings_for(env), clock=lambda: NOW)) as client:
        yield client


def text_of(html: str) -> str:
    """The page's visible text, tags dropped and whitespace collapsed (enough for assertions)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# --- index -----------------------------------------------------------------------------------------


def test_index_lists_every_subscriber_with_a_count_or_the_reason(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    rows = {
        m[0]: text_of(m[1])
        for m in re.findall(r'<tr>\s*<td><a href="/s/([^"]+)">(.*?)</tr>', response.text, re.S)
    }
    assert set(rows) == {SSM, "diff@example.org", "nobody@example.org"}
    assert re.search(r"\b10 papers\b", rows[SSM])  # max_items 10, plenty of SSM papers in the seeds
    assert re.search(r"\b\d+ papers?\b", rows["diff@example.org"])
    assert "nothing relevant" in rows["nobody@example.org"]
    # each-dump, with papers: due now, as `newsletter status` says (it said "when a dump brings new papers")
    assert re.search(r"\bpapers? now\b", rows["diff@example.org"])


class _Links(HTMLParser):
    """Each link's href and the words a screen reader gives it (hidden ones included), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._open: list[str] | None = None
        self._href = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._href = [], dict(attrs).get("href") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((" ".join("".join(self._open).split()), self._href))
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.append(data)


def links_of(html: str) -> list[tuple[str, str]]:
    parser = _Links()
    parser.feed(html)
    return parser.links


def test_index_links_say_whose_page_they_open(client: TestClient) -> None:
    """A screen reader's list of links read "preview, HTML, text" once per subscriber, with nothing to
    tell the rows apart: each name now leads to one page only."""
    targets: dict[str, set[str]] = {}
    for words, href in links_of(client.get("/").text):
        targets.setdefault(words, set()).add(href)
    assert {words: hrefs for words, hrefs in targets.items() if len(hrefs) > 1} == {}
    assert targets["HTML of Sam"] == {f"/s/{SSM}/html"}


def test_index_shows_nothing_new_and_not_due_with_the_due_time(env: dict[str, str]) -> None:
    settings = settings_for(env)
    with open_pipeline(settings) as pipeline:
        pipeline.run(load_subscribers(settings.subscribers), NOW)  # SSM gets today's digest
    later = datetime(2026, 3, 11, 20, 0, tzinfo=UTC)
    add_dumps(env, seed_names()[2])
    with keyed(create_app(settings, clock=lambda: later)) as client:
        rows = {
            m[0]: text_of(m[1])
            for m in re.findall(r'<tr>\s*<td><a href="/s/([^"]+)">(.*?)</tr>', client.get("/").text, re.S)
        }
    assert "not due" in rows[SSM]
    assert "Thu 12 Mar 2026 00:00 UTC" in rows[SSM]  # daily, no send_at: the next local midnight
    assert "in 4 h 0 min" in rows[SSM]
    with open_pipeline(settings) as pipeline:
        pipeline.run(load_subscribers(settings.subscribers), later)
    with keyed(create_app(settings, clock=lambda: later)) as client:
        rows = {
            m[0]: text_of(m[1])
            for m in re.findall(r'<tr>\s*<td><a href="/s/([^"]+)">(.*?)</tr>', client.get("/").text, re.S)
        }
    assert "nothing new" in rows["diff@example.org"]


def test_index_and_page_show_the_schedule_that_counts(env: dict[str, str]) -> None:
    """A weekly reader's day on the index too; a daily reader's weekday (no effect) nowhere."""
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    path.write_text(
        path.read_text()
        + '  - email: weekly@example.org\n    interests: ["x"]\n    cadence: weekly\n'
        + '    weekday: mon\n    send_at: "16:00"\n'
        + '  - email: daily@example.org\n    interests: ["x"]\n    weekday: fri\n    send_at: "08:00"\n'
    )
    with keyed(create_app(settings_for(env), clock=lambda: NOW)) as client:
        index = text_of(client.get("/").text)
        weekly = text_of(client.get("/s/weekly@example.org").text)
        daily = text_of(client.get("/s/daily@example.org").text)
    assert "weekly at 16:00 on mon · UTC" in index
    assert "weekly at 16:00 on mon · UTC" in weekly
    assert "daily at 08:00 · UTC" in index
    assert "daily at 08:00 · UTC" in daily
    assert "on fri" not in index + daily


# --- one subscriber --------------------------------------------------------------------------------


def test_subscriber_page_shows_subject_size_headers_scores_and_links(client: TestClient) -> None:
    response = client.get(f"/s/{SSM}")
    assert response.status_code == 200
    page = text_of(response.text)
    assert re.search(r"Subject 10 new papers: .+ and 9 more", page)
    size = re.search(r"HTML size ([\d.]+) KB of Gmail's 102\.0 KB clipping limit \((\d+)%\)", page)
    assert size and 5 < float(size[1]) < 102 and 0 < int(size[2]) < 100
    for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert re.search(rf'<tr><th scope="row">{header}</th><td>[^<]+</td></tr>', response.text), header
    scores = re.findall(r'<span class="score">(\d\.\d{3})</span> · matches: ', response.text)
    assert len(scores) >= 10
    assert [float(s) for s in scores[:10]] == sorted((float(s) for s in scores[:10]), reverse=True)
    assert f'href="/s/{SSM}/html"' in response.text and f'href="/s/{SSM}/text"' in response.text


class _Tables(HTMLParser):
    """Per table: how many header cells (th) and data cells (td) it has."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append({"th": 0, "td": 0})
        elif tag in ("th", "td") and self.tables:
            self.tables[-1][tag] += 1


def test_every_table_on_the_pages_has_header_cells(client: TestClient) -> None:
    """The subscriber page's email headers were a table of bare cells: a screen reader read a value
    ("<3f2a@...>") without the header it belongs to. Each name is now its row's header."""
    for path in ("/", f"/s/{SSM}"):
        parser = _Tables()
        parser.feed(client.get(path).text)
        assert parser.tables, path
        assert all(table["th"] > 0 for table in parser.tables), (path, parser.tables)


def test_subscriber_page_shows_the_papers_that_just_missed(client: TestClient) -> None:
    page = client.get("/s/diff@example.org").text  # a profile with more than five papers scoring above 0
    misses = page.split("Just missed (5)", 1)[1].split("<h2>", 1)[0]
    scores = [float(s) for s in re.findall(r'<span class="score">(\d\.\d{3})</span>', misses)]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and scores[-1] > 0
    relevant = page.split("In this digest", 1)[1].split("Just missed", 1)[0]
    lowest = min(float(s) for s in re.findall(r'<span class="score">(\d\.\d{3})</span>', relevant))
    assert scores[0] <= lowest


def test_subscriber_page_lists_the_relevant_papers_past_max_items(client: TestClient) -> None:
    """The run asks the ranker for max_items papers at most; the preview still sees every relevant one."""
    page = client.get(f"/s/{SSM}").text
    found = re.search(r"Also relevant, past max_items \((\d+)\)", page)
    assert found and int(found[1]) >= 1  # more SSM papers than max_items 10 in the seeds
    digest = page.split("In this digest", 1)[1].split("<h2>", 1)[0]
    assert len(re.findall(r'<span class="score">(\d\.\d{3})</span>', digest)) == 10
    past = page.split("Also relevant, past max_items", 1)[1].split("<h2>", 1)[0]
    assert len(re.findall(r'<span class="score">(\d\.\d{3})</span>', past)) == int(found[1])


def test_nothing_relevant_page_builds_no_email(client: TestClient) -> None:
    page = text_of(client.get("/s/nobody@example.org").text)
    assert "Nothing relevant among 166 new papers" in page  # a first digest: both seeds, ingested together
    assert "No other paper scored above 0" in page  # lexical: nothing shares a word with "sourdough"
    assert "Headers" not in page and "Subject" not in page


def test_html_and_text_are_exactly_what_a_run_sends(env: dict[str, str], client: TestClient) -> None:
    html = client.get(f"/s/{SSM}/html")
    text = client.get(f"/s/{SSM}/text")
    page = client.get(f"/s/{SSM}").text
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    settings = settings_for(env)
    with open_pipeline(settings) as pipeline:
        report = pipeline.run(load_subscribers(settings.subscribers), NOW)
    assert any(d.subscriber == SSM and d.status == "sent" for d in report.digests)
    eml = next(p for p in settings.outbox.glob("*.eml") if SSM in p.read_text(errors="replace"))
    sent = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert html.text == sent.get_body(("html",)).get_content()
    assert text.text == sent.get_body(("plain",)).get_content()
    head = eml.read_bytes().split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "\n")
    assert str(escape(head)) in page


def test_preview_changes_no_delivery_state(env: dict[str, str], client: TestClient) -> None:
    for path in ("/", f"/s/{SSM}", f"/s/{SSM}/html", f"/s/{SSM}/text", "/s/diff@example.org"):
        assert client.get(path).status_code == 200
    settings = settings_for(env)
    with open_store(settings) as store:
        assert store.subscriber_states() == {}
        assert store.delivery_counts() == {}
        assert len(store.dumps()) == 2  # the folder's dumps were ingested, as `newsletter preview` does
    assert not settings.outbox.exists()


def test_new_dumps_wait_for_the_lock_holder(env: dict[str, str], client: TestClient) -> None:
    settings = settings_for(env)
    assert client.get("/").status_code == 200
    add_dumps(env, seed_names()[2])
    with run_lock(settings.home):  # a run or the daemon is busy: it ingests the file itself
        page = client.get("/").text
    assert "another process holds the run lock" in page
    assert f"1 dump file not in the store yet left out ({seed_names()[2]})" in page
    with open_store(settings) as store:
        assert len(store.dumps()) == 2
    assert "holds the run lock" not in client.get("/").text
    os.utime(Path(env["NEWSLETTER_DUMPS"]) / seed_names()[2], (0, 0))  # serve looks at it again
    with run_lock(settings.home):  # before: the note at every page while a daemon ran
        assert "holds the run lock" not in client.get("/").text  # the store has it
    with open_store(settings) as store:
        assert len(store.dumps()) == 3


def test_a_restarted_serve_takes_no_run_lock_for_dumps_the_store_has(
    env: dict[str, str], client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first page read every dump file again under the run lock (6.6 s for 305 files), and a cron
    run started meanwhile was refused."""
    assert client.get("/").status_code == 200  # the first serve ingests the folder
    taken: list[object] = []
    real_lock = Store.lock
    monkeypatch.setattr(Store, "lock", lambda *a, **k: taken.append(a) or real_lock(*a, **k))
    with keyed(create_app(settings_for(env), clock=lambda: NOW)) as restarted:
        assert restarted.get("/").status_code == 200
        assert restarted.get(f"/s/{SSM}").status_code == 200
        assert taken == []
        add_dumps(env, seed_names()[2])  # a file the store does not have is still ingested
        assert restarted.get("/").status_code == 200
        assert len(taken) == 1


def test_a_dump_refused_half_written_and_stored_since_is_no_longer_noted(
    env: dict[str, str], client: TestClient
) -> None:
    """Skipped by its content once the store had it, it stayed "rejected" on every page."""
    name = seed_names()[2]
    path = Path(env["NEWSLETTER_DUMPS"]) / name
    path.write_bytes(b"\xff\xfe garbage")  # still being copied
    assert "dump rejected:" in client.get("/").text
    add_dumps(env, name)
    cli(env, "ingest", str(path))  # a cron run stores it
    assert "dump rejected:" not in client.get("/").text


def test_a_rejected_dump_is_noted_on_the_page(env: dict[str, str], client: TestClient) -> None:
    (Path(env["NEWSLETTER_DUMPS"]) / "zz_broken.json").write_text('[{"paper": ')
    page = client.get("/").text
    assert "dump rejected:" in page and "zz_broken.json" in page
    assert client.get(f"/s/{SSM}").status_code == 200  # the other dumps still count


def test_a_dump_a_run_rejected_is_noted_but_not_logged_again(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Each serve started logged an ERROR "rejected ..." for every dump file runs had rejected weeks
    before (and `status` listed): after a month with three damaged dumps, three errors at each start."""
    (Path(env["NEWSLETTER_DUMPS"]) / "zz_broken.json").write_text('[{"paper": ')
    assert cli(env, "run", "--no-fetch", "--now", NOW.isoformat(), check=False).returncode == 1  # recorded
    caplog.clear()
    with keyed(create_app(settings_for(env), clock=lambda: NOW)) as client:
        page = client.get("/").text
    assert "dump rejected:" in page and "zz_broken.json" in page
    assert not [r for r in caplog.records if "rejected" in r.getMessage()]


def test_a_serve_start_hashes_only_the_dumps_a_run_refused_under_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every new dump file was hashed a second time to look for it among the refused ones, even with
    none refused: a dumps folder of 2000 files read twice at each start."""
    files = [tmp_path / f"{i:02}.json" for i in range(20)]
    for path in files:
        path.write_text(f'[{{"title": "{path.stem}"}}]', encoding="utf-8")
    bad = files[3]
    record = RejectedFile(hashlib.sha256(bad.read_bytes()).hexdigest(), str(bad), "bad dump", NOW)
    hashed: list[Path] = []
    digest = intake._file_digest
    monkeypatch.setattr(intake, "_file_digest", lambda path: hashed.append(path) or digest(path))
    store = SimpleNamespace(rejected_files=lambda: [record])
    assert intake.refused_files(store, files) == {bad: "bad dump"}  # type: ignore[arg-type]
    assert hashed == [bad]


def test_no_digest_gives_404_for_its_parts(client: TestClient) -> None:
    response = client.get("/s/nobody@example.org/html")
    assert response.status_code == 404
    assert "nothing relevant" in response.text


def test_unknown_subscriber_is_404(client: TestClient) -> None:
    response = client.get("/s/stranger@example.org")
    assert response.status_code == 404
    assert "no subscriber with email" in response.text


class _BackLinks(HTMLParser):
    """The words of the links inside a <nav>, and the text a screen reader reads outside aria-hidden."""

    def __init__(self) -> None:
        super().__init__()
        self.in_nav: list[str] = []
        self.read = ""
        self._nav = False
        self._hidden = 0  # depth inside an aria-hidden element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._nav = self._nav or tag == "nav"
        if self._hidden or dict(attrs).get("aria-hidden") == "true":
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        self._nav = self._nav and tag != "nav"
        self._hidden = max(self._hidden - 1, 0)

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.read += data
            self.in_nav += [data] if self._nav and data.strip() else []


@pytest.mark.parametrize(
    ("path", "back"),
    [
        (f"/s/{SSM}", "All subscribers"),
        ("/s/stranger@example.org", "All subscribers"),
        ("/s/nobody@example.org/html", "nobody@example.org"),
    ],
)
def test_the_back_link_is_a_navigation_landmark_without_an_arrow_to_read(
    client: TestClient, path: str, back: str
) -> None:
    """The way back was a paragraph (no landmark key reached it) that a screen reader read as
    "leftwards arrow, All subscribers"."""
    parser = _BackLinks()
    parser.feed(client.get(path).text)
    assert parser.in_nav == [back]
    assert "←" not in parser.read


# --- live reload and errors ------------------------------------------------------------------------


def test_subscribers_file_is_read_again_once_it_changed(
    env: dict[str, str], client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not for every page: 20,000 subscribers took 3 s to read, each time."""
    from newsletter.serve import preview

    reads: list[Path] = []
    monkeypatch.setattr(
        preview, "load_valid_subscribers", lambda path: reads.append(path) or load_valid_subscribers(path)
    )
    assert "newcomer@example.org" not in client.get("/").text
    assert client.get(f"/s/{SSM}").status_code == 200
    assert len(reads) == 1
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    written = path.read_text()
    path.write_text(
        written
        + '  - email: newcomer@example.org\n    name: "Newcomer"\n    interests: ["graph neural networks"]\n'
    )
    page = client.get("/").text
    assert 'href="/s/newcomer@example.org"' in page
    assert client.get("/s/newcomer@example.org").status_code == 200
    assert len(reads) == 2
    path.write_text(written + "  - email: [\n")  # a broken edit: said on every page, read once
    assert all("invalid YAML" in client.get("/").text for _ in range(2))
    assert len(reads) == 3
    path.write_text(written + "  - email: newcomer@example.org\n    interets: [x]\n")  # one bad entry
    assert client.get(f"/s/{SSM}").status_code == 200  # the others' pages go on
    assert "unknown key &#39;interets&#39;" in client.get("/s/newcomer@example.org").text
    path.write_text(written)
    assert "invalid YAML" not in client.get("/").text
    before = path.stat()
    path.write_text(written.replace(SSM, SSM.replace("s", "z", 1)))  # the same size, in place
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` or `rsync -t` leave it
    assert "zsm@example.org" in client.get("/").text


def test_template_error_is_shown_in_the_page_with_file_and_line(env: dict[str, str], tmp_path: Path) -> None:
    templates = tmp_path / "my-templates"
    templates.mkdir()
    text = templates / "digest.txt.j2"
    text.write_text(
        "{{ view.list_name }}\n{% for item in view.items %}\n{{ item.no_such_field }}\n{% endfor %}\n"
    )
    settings = settings_for(env, templates=str(templates))
    with keyed(create_app(settings, clock=lambda: NOW)) as client:
        broken = client.get(f"/s/{SSM}")
        assert broken.status_code == 500
        assert "Template error" in broken.text
        assert re.search(r"digest\.txt\.j2:3: .*no_such_field", broken.text)
        assert "Traceback" not in broken.text
        assert client.get("/").status_code == 500
        text.write_text("{{ view.list_name }}: {{ view.items | length }} papers\n")  # fixed: no restart
        fixed = client.get(f"/s/{SSM}/text")
        assert fixed.status_code == 200
        assert fixed.text.startswith("Papers: 10 papers")


def test_a_template_change_is_seen_without_reading_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 300 MB file left in the templates folder was read for every page (0.7 s each)."""
    from newsletter.serve.preview import templates_key

    (tmp_path / "digest.txt.j2").write_text("{{ view.list_name }}\n")
    (tmp_path / "big.bin").write_bytes(b"x" * 1000)
    before = templates_key(tmp_path)

    def unread(path: Path, *args: object, **kwargs: object) -> bytes:
        raise AssertionError(f"{path} read")

    monkeypatch.setattr(Path, "read_bytes", unread)
    assert templates_key(tmp_path) == before
    (tmp_path / "digest.txt.j2").write_text("{{ view.list_name }}!\n")  # another size
    assert templates_key(tmp_path) != before
    before = templates_key(tmp_path)
    os.utime(tmp_path / "big.bin", ns=(0, 10**18))  # the same size, written later
    assert templates_key(tmp_path) != before


def test_template_syntax_error_names_the_line(env: dict[str, str], tmp_path: Path) -> None:
    templates = tmp_path / "t"
    templates.mkdir()
    (templates / "digest.txt.j2").write_text("line one\n{% if %}\n")
    with keyed(create_app(settings_for(env, templates=str(templates)), clock=lambda: NOW)) as client:
        response = client.get("/")
    assert response.status_code == 500
    assert re.search(r"digest\.txt\.j2:2: ", response.text)


def test_missing_templates_folder_via_environment_is_an_error_page(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_TEMPLATES", str(tmp_path / "nowhere"))
    with keyed(create_app(settings_for(env), clock=lambda: NOW)) as client:
        response = client.get("/")
    assert response.status_code == 500
    assert "nowhere: templates folder not found" in response.text


def test_invalid_subscribers_file_is_an_error_page_naming_the_line(
    env: dict[str, str], client: TestClient
) -> None:
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n  - email: a@example.org\n    interests: [x\n"
    )
    response = client.get("/")
    assert response.status_code == 500
    assert "Configuration error" in response.text
    assert re.search(r"subscribers\.yaml:\d+: invalid YAML", response.text)


# --- safety ----------------------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script>"


def test_data_from_dumps_and_subscribers_is_escaped(env: dict[str, str], client: TestClient) -> None:
    dump = (DATA / "dumps" / "three_papers.txt").read_text()
    first = dump.split("Mar 12\n\n", 1)[1].split("\n", 1)[0]
    hostile_dump = dump.replace(
        first, f'Chain-of-thought in latent space {HOSTILE} <img src=x onerror="alert(2)">'
    )
    (Path(env["NEWSLETTER_DUMPS"]) / "zzz_hostile.txt").write_text(hostile_dump)
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    path.write_text(path.read_text().replace("name: Sam", f"name: '{HOSTILE}'"))
    for url in ("/", f"/s/{SSM}"):
        page = client.get(url).text
        assert "<script>" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=" in client.get(f"/s/{SSM}").text


def test_pages_carry_a_no_script_policy(client: TestClient) -> None:
    page = client.get("/")
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "<script" not in page.text
    digest = client.get(f"/s/{SSM}/html")
    assert "frame-ancestors 'self'" in digest.headers["content-security-policy"]
    assert digest.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("listening_on", ["127.0.0.1", "0.0.0.0", "192.0.2.2"])
def test_host_check_refuses_foreign_host_names_wherever_it_listens(
    env: dict[str, str], listening_on: str
) -> None:
    """Listening beyond loopback used to drop the check: a DNS rebinding page could read every preview."""
    settings = settings_for(env, base_url="https://papers.example.org")
    previews = local_hosts(listening_on, also=["Lab-Box.local"])
    assert set(previews) >= {"127.0.0.1", "localhost", "[::1]", "lab-box.local"}
    assert "papers.example.org" not in previews
    hosts = answered_hosts(settings, listening_on, also=["lab-box.local"])
    app = create_app(settings, clock=lambda: NOW, allowed_hosts=hosts, preview_hosts=previews)
    with keyed(app, base_url="http://rebound.attacker.example") as client:
        assert client.get("/").status_code == 400
    for name in ("127.0.0.1:8000", "lab-box.local", "[::1]:8000"):
        with keyed(app, base_url=f"http://{name}", client=HERE) as client:
            assert client.get("/").status_code == 200, name
    if listening_on == "192.0.2.2":
        with keyed(app, base_url="http://192.0.2.2:8000") as client:
            assert client.get("/").status_code == 200


def test_the_public_host_name_gets_only_the_emails_links(env: dict[str, str]) -> None:
    """A proxy that strips the base URL's path published every preview (each with working signed links)
    at https://papers.example.org/nl/: the public name now answers only the links."""
    settings = settings_for(env, base_url="https://papers.example.org/nl", unsubscribe_secret="s" * 16)
    app = create_app(
        settings, clock=lambda: NOW, allowed_hosts=answered_hosts(settings), preview_hosts=local_hosts()
    )
    token = make_token(SSM, SecretStr("s" * 16))
    with keyed(app, base_url="https://papers.example.org") as client:
        for path in ("/", f"/s/{SSM}", f"/s/{SSM}/html", f"/s/{SSM}/last"):
            assert client.get(path).status_code == 404, path
        for path in (f"/unsubscribe/{token}", f"/nl/unsubscribe/{token}"):
            assert client.get(path).status_code == 200, path
    # nginx's and Apache's default: the Host they connect to (a local name), and a forwarding header
    with keyed(app, base_url="http://127.0.0.1:8000", client=HERE) as client:
        assert client.get("/").status_code == 200
        for header in ("X-Forwarded-For", "Forwarded", "X-Forwarded-Host", "X-Real-IP"):
            assert client.get("/", headers={header: "203.0.113.9"}).status_code == 404, header
            assert client.get(f"/unsubscribe/{token}", headers={header: "203.0.113.9"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-Proto": "https"},  # a common nginx snippet, Host left at nginx's 127.0.0.1:8000
        {"X-Forwarded-Port": "443"},
        {"X-Forwarded-Prefix": "/nl"},
        {"Via": "1.1 caddy"},
        {"CF-Connecting-IP": "203.0.113.9"},  # a tunnel's own header
    ],
)
def test_any_proxy_header_keeps_the_previews_private(env: dict[str, str], headers: dict[str, str]) -> None:
    """Found by a review of proxies: only four headers counted, so nginx sending X-Forwarded-Proto alone
    (Host: 127.0.0.1:8000, from loopback) published every subscriber's address and profile."""
    settings = settings_for(env, base_url="https://papers.example.org/nl", unsubscribe_secret="s" * 16)
    app = create_app(
        settings, clock=lambda: NOW, allowed_hosts=answered_hosts(settings), preview_hosts=local_hosts()
    )
    token = make_token(SSM, SecretStr("s" * 16))
    with keyed(app, base_url="http://127.0.0.1:8000", client=HERE) as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers=headers).status_code == 404
        assert client.get(f"/s/{SSM}", headers=headers).status_code == 404
        assert client.get(f"/unsubscribe/{token}", headers=headers).status_code == 200


def test_nginx_default_proxy_pass_keeps_the_previews_private(env: dict[str, str]) -> None:
    """nginx's bare `proxy_pass http://127.0.0.1:8000;` adds no header and sends Host: 127.0.0.1:8000,
    but speaks HTTP/1.0 (proxy_http_version's default), which no browser does: previews 404."""
    settings = settings_for(env, base_url="https://papers.example.org", unsubscribe_secret="s" * 16)
    app = create_app(
        settings, clock=lambda: NOW, allowed_hosts=answered_hosts(settings), preview_hosts=local_hosts()
    )
    token = make_token(SSM, SecretStr("s" * 16))
    cookie = (
        f"{cookie_name(8000)}={app.state.preview_key.value}".encode()
    )  # the key does not open them either

    async def get(path: str, http_version: str) -> int:
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": http_version,
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8000"), (b"connection", b"close"), (b"cookie", cookie)],
            "client": HERE,
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, send)
        return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))  # type: ignore[call-overload]

    with keyed(app, base_url="http://127.0.0.1:8000", client=HERE) as client:  # in its event loop
        assert client.portal is not None
        assert client.portal.call(get, "/", "1.1") == 200
        assert client.portal.call(get, "/", "1.0") == 404
        assert client.portal.call(get, f"/s/{SSM}", "1.0") == 404
        assert client.portal.call(get, f"/unsubscribe/{token}", "1.0") == 200


@pytest.mark.parametrize(
    ("peer", "status"), [("203.0.113.9", 404), ("127.0.0.1", 200), ("::ffff:127.0.0.1", 200)]
)
def test_a_loopback_host_name_opens_the_previews_only_from_this_machine(
    env: dict[str, str], peer: str, status: int
) -> None:
    """Listening on every interface, a client elsewhere that wrote `Host: localhost` read every preview
    (found by a review): the Host header is the client's to choose, its address is not."""
    settings = settings_for(env, base_url="https://papers.example.org")
    previews = local_hosts("0.0.0.0")
    app = create_app(
        settings, clock=lambda: NOW, allowed_hosts=answered_hosts(settings, "0.0.0.0"), preview_hosts=previews
    )
    for name in ("localhost", "127.0.0.1:8000", "[::1]:8000"):
        with keyed(app, base_url=f"http://{name}", client=(peer, 40000)) as client:
            assert client.get("/").status_code == status, name
            assert client.get(f"/s/{SSM}").status_code == status, name


def test_a_loopback_name_given_to_allow_host_opens_the_previews_to_a_forwarded_port(
    env: dict[str, str],
) -> None:
    """In a container or VM behind a forwarded port, the host's browser comes from the gateway: a
    loopback name it names with --allow-host counts from there (found by a review)."""
    settings = settings_for(env)
    previews = local_hosts("0.0.0.0", also=["localhost"])
    hosts = answered_hosts(settings, "0.0.0.0", also=["localhost"])
    app = create_app(
        settings, clock=lambda: NOW, allowed_hosts=hosts, preview_hosts=previews, open_hosts=["localhost"]
    )
    gateway = ("172.17.0.1", 40000)
    with keyed(app, base_url="http://localhost:8000", client=gateway) as client:
        assert client.get("/").status_code == 200
    with keyed(app, base_url="http://127.0.0.1:8000", client=gateway) as client:
        assert client.get("/").status_code == 404  # not named: from this machine only


def test_an_old_public_host_gets_only_the_links(env: dict[str, str]) -> None:
    """The README's advice for a new domain was `--allow-host OLD-HOST`, which opened every subscriber's
    preview to the old public name, from any client (found by a review of proxies): `--public-host`
    answers the old links and nothing else."""
    settings = settings_for(env, base_url="https://new.example.org/nl", unsubscribe_secret="s" * 16)
    hosts = answered_hosts(settings, public=["Old.Example.org"])
    assert "old.example.org" in hosts and "old.example.org" not in local_hosts()
    app = create_app(settings, clock=lambda: NOW, allowed_hosts=hosts, preview_hosts=local_hosts())
    token = make_token(SSM, SecretStr("s" * 16))
    with keyed(app, base_url="https://old.example.org", client=HERE) as client:
        for path in ("/", f"/s/{SSM}", f"/s/{SSM}/html"):
            assert client.get(path).status_code == 404, path
        assert client.get(f"/nl/unsubscribe/{token}").status_code == 200
        assert (
            client.post(f"/nl/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
        )
    with keyed(app, base_url="https://elsewhere.example.org") as client:
        assert client.get(f"/nl/unsubscribe/{token}").status_code == 400


def test_an_ipv6_name_given_to_allow_host_is_answered(env: dict[str, str]) -> None:
    settings = settings_for(env)
    previews = local_hosts("0.0.0.0", also=["fd00::5"])
    assert "[fd00::5]" in previews
    app = create_app(settings, clock=lambda: NOW, allowed_hosts=previews, preview_hosts=previews)
    with keyed(app, base_url="http://[fd00::5]:8000") as client:
        assert client.get("/").status_code == 200


HERE = ("127.0.0.1", 40000)  # a client on this machine


# --- the CLI command -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_cli_serve_listens_on_loopback_by_default(env: dict[str, str]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_for(url, proc).status_code == 403  # the preview key is asked for
        key = (Path(env["NEWSLETTER_HOME"]) / "serve-key").read_text().strip()
        response = httpx.get(url, cookies={cookie_name(port): key}, timeout=30)
        assert response.status_code == 200
        assert 'href="/s/ssm@example.org"' in response.text
        assert _listening_addresses(port) == ["127.0.0.1"]
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode in (0, -15)
    first = stderr.decode().splitlines()[0]  # was a WARNING log line; no key off a terminal
    assert first.startswith(f"preview at http://127.0.0.1:{port}/ (add ?key= ") and key not in first


def _listening_addresses(port: int) -> list[str]:
    """IPv4 addresses with a socket listening on ``port``, from /proc/net/tcp (Linux)."""
    tcp = Path("/proc/net/tcp")
    if not tcp.exists():
        pytest.skip("needs /proc/net/tcp")
    found = []
    for line in tcp.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, port_hex = local.partition(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            return httpx.get(url, timeout=30)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"no answer from {url} in {timeout}s")


def test_serve_takes_new_database_as_its_error_page_says(env: dict[str, str]) -> None:
    """`serve`'s error page told the user to pass --new-database, which it ignored."""
    settings = settings_for(env)
    with open_pipeline(settings) as pipeline:
        pipeline.run(load_subscribers(settings.subscribers), datetime(2026, 3, 11, 8, tzinfo=UTC))
    (settings.home / "state.db").unlink()
    with keyed(create_app(settings)) as refusing:
        page = refusing.get("/")
        assert page.status_code == 500 and "--new-database" in page.text
    with keyed(create_app(settings, new_database=True)) as taking:
        assert taking.get("/").status_code == 200


class CountingEmbedder(HashingEmbedder):
    """The test embedder, noting every text it embeds."""

    texts: ClassVar[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        CountingEmbedder.texts += texts
        return super().embed(texts)


def test_previews_read_the_vectors_runs_stored(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A preview embeds only what no run embedded (it embedded every stored paper again: 37 s for one page
    beside the seeds and a new dump, against 2 s)."""
    monkeypatch.setattr(semantic, "MiniLMEmbedder", CountingEmbedder)
    monkeypatch.setattr(CountingEmbedder, "texts", [])
    settings = load_settings(
        home=env["NEWSLETTER_HOME"],
        subscribers=env["NEWSLETTER_SUBSCRIBERS"],
        dumps=env["NEWSLETTER_DUMPS"],
        ranker="semantic",
        sender=env["NEWSLETTER_FROM"],
    )
    with open_pipeline(settings) as pipeline:
        pipeline.run(load_subscribers(settings.subscribers), NOW)
    by_the_run, CountingEmbedder.texts = set(CountingEmbedder.texts), []
    add_dumps(env, seed_names()[2])
    with keyed(create_app(settings, clock=lambda: NOW)) as client:
        assert client.get(f"/s/{SSM}").status_code == 200
    assert by_the_run and CountingEmbedder.texts  # the new dump's papers are embedded, in memory
    assert not by_the_run & set(CountingEmbedder.texts)


def _index_rows(client: TestClient) -> dict[str, str]:
    found = re.findall(r'<tr>\s*<td><a href="/s/([^"]+)">(.*?)</tr>', client.get("/").text, re.S)
    return {m[0]: text_of(m[1]) for m in found}


def test_a_queued_digest_is_due_now_and_a_held_address_says_so_as_status_does(env: dict[str, str]) -> None:
    """The preview's due time was its own rule: a daily subscriber with a digest queued to retry showed
    tomorrow (status: now), and a held address that was not due said 'not due'."""
    from newsletter.ops.status import status_report
    from newsletter.store.records import RETRY
    from newsletter.store.schema import digests, subscribers

    settings = settings_for(env)
    with open_pipeline(settings) as pipeline:
        pipeline.run(load_subscribers(settings.subscribers), NOW)  # SSM gets today's digest
    later = datetime(2026, 3, 11, 20, 0, tzinfo=UTC)  # daily: next due at midnight
    with Store(settings.db_url) as store:
        (ssm,) = store.deliveries(email=SSM, with_items=False)
        with store._engine.begin() as conn:  # refused for now, due again already
            conn.execute(digests.update().where(digests.c.id == ssm.digest_id).values(status=RETRY))
        rows = status_report(store, load_subscribers(settings.subscribers), later, None)["subscribers"]
    assert {r["subscriber"]: r["next_due_at"] for r in rows}[SSM] == later.isoformat()
    with keyed(create_app(settings, clock=lambda: later)) as client:
        assert "now" in _index_rows(client)[SSM] and "Thu 12 Mar" not in _index_rows(client)[SSM]
    with Store(settings.db_url) as store, store._engine.begin() as conn:
        conn.execute(digests.update().where(digests.c.id == ssm.digest_id).values(status="sent"))
        conn.execute(subscribers.update().where(subscribers.c.email == SSM).values(bounced_at=NOW))
    with keyed(create_app(settings, clock=lambda: later)) as client:
        page = text_of(client.get(f"/s/{SSM}").text)
        row = _index_rows(client)[SSM]
    assert (
        f"Held. A mail server refused this address for good: a run sends it nothing until newsletter retry {SSM}"
        in page
    )
    assert "not due" not in page and "Due now" not in page
    assert "held: address refused" in row and f"after newsletter retry {SSM}" in row


def _with_a_held_entry(env: dict[str, str]) -> tuple[Path, int]:
    """The subscribers file with newcomer@example.org's entry, held for its max_items; its line."""
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    path.write_text(
        path.read_text() + "  - email: newcomer@example.org\n    interests: [x]\n    max_items: 500\n"
    )
    return path, len(path.read_text().splitlines())


def test_a_held_entry_is_on_the_index_with_its_problem(env: dict[str, str]) -> None:
    """An entry with a mistake was left out of the index without a word (`run` holds its digests)."""
    path, line = _with_a_held_entry(env)
    with keyed(create_app(settings_for(env), clock=lambda: NOW)) as client:
        rows = _index_rows(client)
    assert SSM in rows
    held = rows["newcomer@example.org"]
    assert "held: entry has a problem" in held
    assert f"after the entry is fixed: {path}:{line}:" in held and "field &#39;max_items&#39;" in held


def test_a_held_entrys_pages_name_its_problem_not_a_server_error(env: dict[str, str]) -> None:
    """The index links a held entry to its page, which was a 500 'Configuration error' (logged as one)."""
    path, line = _with_a_held_entry(env)
    with keyed(create_app(settings_for(env), clock=lambda: NOW)) as client:
        responses = [client.get(f"/s/newcomer@example.org{part}") for part in ("", "/html", "/text")]
    for response in responses:
        assert response.status_code == 409
        shown = text_of(response.text)
        assert "Held: entry has a problem" in shown and f"{path}:{line}:" in shown
        assert "a run sends it nothing until the entry is fixed" in shown


def test_a_digest_refused_for_now_shows_when_it_is_tried_again(env: dict[str, str]) -> None:
    """The index showed the run report's sentence, backquotes and all, in a badge that pushed the table
    past the page; the subscriber page said 'Not due' and nothing of the refusal."""
    from newsletter.store.records import RETRY
    from newsletter.store.schema import digests

    settings = settings_for(env)
    with open_pipeline(settings) as pipeline:
        pipeline.run(load_subscribers(settings.subscribers), NOW)
    later, retry_at = datetime(2026, 3, 11, 20, 0, tzinfo=UTC), datetime(2026, 3, 11, 20, 25, tzinfo=UTC)
    with Store(settings.db_url) as store:
        (ssm,) = store.deliveries(email=SSM, with_items=False)
        with store._engine.begin() as conn:
            conn.execute(
                digests.update()
                .where(digests.c.id == ssm.digest_id)
                .values(status=RETRY, not_before=retry_at)
            )
    with keyed(create_app(settings, clock=lambda: later)) as client:
        page = text_of(client.get(f"/s/{SSM}").text)
        row = _index_rows(client)[SSM]
    assert "refused for now: waits to retry" in row and "in 25 min" in row and "`" not in row
    assert "Refused for now. A mail server refused this subscriber's last digest for now" in page
    assert (
        "in 25 min" in page and f"newsletter retry {SSM} tries it at once" in page and "Not due" not in page
    )


@pytest.mark.parametrize(
    "given",
    ["https://old.example.org/nl", "old.example.org:443", "OLD.example.org", "https://Old.Example.org:8443/"],
)
def test_an_old_base_url_given_to_public_host_answers_its_links(env: dict[str, str], given: str) -> None:
    """The help calls the name an old NEWSLETTER_BASE_URL's: given as that URL (or with a port) it was
    kept as "[https://old.example.org/nl]", which no Host header is, and the old links got 400."""
    settings = settings_for(env, base_url="https://new.example.org/nl", unsubscribe_secret="s" * 16)
    assert "old.example.org" in answered_hosts(settings, public=[given])


def test_a_public_host_that_names_no_host_is_refused(env: dict[str, str]) -> None:
    settings = settings_for(env, base_url="https://new.example.org/nl", unsubscribe_secret="s" * 16)
    with pytest.raises(ConfigError, match="--public-host"):
        answered_hosts(settings, public=["old.example.org/nl"])
