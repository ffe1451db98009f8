"""Hostile input, end to end: what a dump or subscribers.yaml holds can neither add a header nor run as
code in a template, odd text survives, template overrides stay in their folder, and secrets never leak.

Most tests run the real Pipeline (ingest -> plan -> render -> build -> file transport) with a stub ranker
that finds every paper relevant, so the test does not depend on ranking; the rest drive the CLI.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from pydantic import SecretStr

from newsletter.config import PACKAGE_TEMPLATES, Settings
from newsletter.errors import ConfigError, RenderError, SendError
from newsletter.models import OutgoingMessage, Scored, StoredPaper, Subscriber
from newsletter.pipeline import Pipeline
from newsletter.render import Renderer
from newsletter.render.renderer import HTML_BUDGET
from newsletter.report import RunReport
from newsletter.send import PostmarkTransport, make_transport
from newsletter.send.base import Transport
from newsletter.store import Store
from newsletter.subscribers import load_subscribers

from .helpers import add_dumps, cli, seed_names
from .test_run_smtp import free_port

NOW = datetime(2026, 3, 11, 8, tzinfo=UTC)
SENDER = "Papers <digest@papers.example.org>"
HEADERS = {
    "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id", "List-Unsubscribe", "Content-Type",
}  # fmt: skip
LINE_BREAKS = ("\r\n", "\n", "\r", "\x00", "\u2028", "\x85", "\x0b", "\x0c", "\r\n\r\n")


class EveryPaper:
    """Stub ranker: every paper is relevant; those whose title holds the first interest come first."""

    def prepare(self, papers: Sequence[StoredPaper], background: Sequence[StoredPaper] = ()) -> None:
        return None

    def rank(self, papers: Sequence[StoredPaper], subscriber: Subscriber) -> list[Scored]:
        key = subscriber.interests[0].casefold()
        scored = [Scored(p, 1.0 if key in p.title.casefold() else 0.5, "matches: test", True) for p in papers]
        return sorted(scored, key=lambda s: -s.score)

    def rank_many(
        self,
        papers: Sequence[StoredPaper],
        subscribers: Sequence[Subscriber],
        only_relevant: bool = False,
        capped: bool = False,
    ) -> Iterator[list[Scored]]:
        return (self.rank(papers, s) for s in subscribers)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PACKAGE_TEMPLATES)


def paper(
    arxiv_id: str, title: str, summary: str = "An abstract.", authors: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "paper": {
            "id": arxiv_id,
            "title": title,
            "summary": summary,
            "authors": [{"name": a} for a in authors],
        }
    }


def deliver(
    tmp_path: Path,
    renderer: Renderer,
    items: list[dict[str, Any]],
    subscribers: list[dict[str, Any]],
    transport: Transport | None = None,
    **options: Any,
) -> tuple[RunReport, list[bytes]]:
    """One run of the real pipeline over a JSON dump of ``items``; returns its report and the .eml files."""
    (tmp_path / "dumps").mkdir(exist_ok=True)
    (tmp_path / "dumps" / "dump.json").write_text(json.dumps(items), encoding="utf-8")
    subs = tmp_path / "subscribers.yaml"
    subs.write_text(yaml.safe_dump({"subscribers": subscribers}, allow_unicode=True), encoding="utf-8")
    settings = Settings(
        home=tmp_path / "state", subscribers=subs, dumps=tmp_path / "dumps", sender=SENDER, **options
    )
    with Store(settings.db_url) as store:
        factory = (lambda: transport) if transport else (lambda: make_transport(settings))
        report = Pipeline(settings, store, EveryPaper(), renderer, factory).run(load_subscribers(subs), NOW)
    return report, [p.read_bytes() for p in sorted(settings.outbox.glob("*.eml"))]


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def checked_headers(raw: bytes, extra: frozenset[str] = frozenset()) -> EmailMessage:
    """The raw header block holds exactly our headers, each once, in printable ASCII lines."""
    head, blank, _ = raw.partition(b"\r\n\r\n")
    assert blank, "no end of headers"
    assert b"\x00" not in raw
    assert head.isascii()
    lines = head.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line and len(line) <= 998 for line in lines)
    assert all(re.fullmatch(rb"[\x20-\x7e\t]*", line) for line in lines)
    names = [line.split(b":", 1)[0].decode() for line in lines if line[:1] not in (b" ", b"\t")]
    assert sorted(names) == sorted(HEADERS | extra), names
    msg = parse(raw)
    assert set(msg.keys()) == HEADERS | extra
    assert msg.defects == []
    assert all(getattr(msg[name], "defects", ()) == () for name in msg)
    return msg


def recipient(msg: EmailMessage) -> str:
    addresses = msg["To"].addresses
    assert len(addresses) == 1
    return str(addresses[0].addr_spec)


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


# --- header injection ------------------------------------------------------------------------------


def test_line_breaks_and_nul_in_titles_names_and_authors_add_no_header(
    tmp_path: Path, renderer: Renderer
) -> None:
    items, subs = [], []
    for i, brk in enumerate(LINE_BREAKS):
        evil = f"{brk}Bcc: victim{i}@evil.example{brk}X-Injected: yes"
        items.append(
            paper(f"2401.{i:05d}", f"Topic{i} diffusion{evil}", f"Abstract {i}.{evil}", [f"Mallory{evil}"])
        )
        subs.append(
            {
                "email": f"reader{i}@example.org",
                "name": f"Eve{evil}".replace("\x00", " "),
                "interests": [f"topic{i}"],
            }
        )
    report, sent = deliver(tmp_path, renderer, items, subs)
    assert [d.status for d in report.digests] == ["sent"] * len(LINE_BREAKS)
    assert len(sent) == len(LINE_BREAKS)
    for raw in sent:
        msg = checked_headers(raw)
        i = int(recipient(msg).removeprefix("reader").split("@")[0])
        subject, name = str(msg["Subject"]), msg["To"].addresses[0].display_name
        assert subject.startswith(f"{len(LINE_BREAKS)} new papers: Topic{i} diffusion")
        assert f"Bcc: victim{i}@evil.example X-Injected: yes" in name  # kept as text, on one line
        for value in (subject, name):
            assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", value), repr(value)
        assert "victim" not in str(msg.get("Bcc", ""))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "eve@example.org\r\nBcc: victim@evil.example"),
        ("email", "Eve\r\nBcc: victim@evil.example <eve@example.org>"),
        ("email", "eve@example.org\x00"),
        ("email", "eve@example.org,victim@evil.example"),
        ("name", "Eve\x00"),
    ],
)
def test_subscriber_fields_with_line_breaks_or_nul_are_refused_naming_the_field(
    tmp_path: Path, field: str, value: str
) -> None:
    subs = tmp_path / "subscribers.yaml"
    entry = {"email": "eve@example.org", "interests": ["diffusion"], field: value}
    subs.write_text(yaml.safe_dump({"subscribers": [entry]}), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=re.compile(rf"subscribers\.yaml:\d+: subscriber #1 .*field '{field}'", re.S)
    ):
        load_subscribers(subs)


def test_the_error_for_an_address_with_a_line_break_is_one_line(tmp_path: Path) -> None:
    subs = tmp_path / "subscribers.yaml"
    entry = {"email": "eve@example.org\r\nBcc: victim@evil.example", "interests": ["diffusion"]}
    subs.write_text(yaml.safe_dump({"subscribers": [entry]}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_subscribers(subs)
    assert "\n" not in str(caught.value) and "\r" not in str(caught.value)


def test_an_address_the_transport_cannot_carry_is_refused_when_loading(tmp_path: Path) -> None:
    """zoë@example.org would need SMTPUTF8 at send time: it is refused up front, naming the field."""
    subs = tmp_path / "subscribers.yaml"
    subs.write_text("subscribers:\n  - {email: zoë@example.org, interests: [diffusion]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"zoë@example.org\): field 'email': .*must be ASCII"):
        load_subscribers(subs)


# --- markup and template code in the data -------------------------------------------------------------


class Markup(HTMLParser):
    """Collects the tags, attributes and visible text of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        self._skip += tag in ("style", "title")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "title") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


SCRIPTY = (
    '<script>alert(1)</script> <img src=x onerror=alert(2)> <a href="javascript:alert(3)">x</a> '
    "javascript:alert(4) {{ 7*7 }} {{7*7}} {% for x in range(3) %}loop{% endfor %} "
    "{{ view.subscriber_email }} {{ ''.__class__.__mro__ }} {# c #} ${7*7} <!-- c -->"
)


def test_script_links_and_template_code_in_a_dump_are_escaped_never_run(
    tmp_path: Path, renderer: Renderer
) -> None:
    items = [
        paper("2401.00001", f"Diffusion {SCRIPTY}", f"Diffusion abstract. {SCRIPTY}", [f"Mallory {SCRIPTY}"]),
        paper("javascript:alert(5)", "Second {{ 7*7 }} <script>x</script>", "Plain."),
    ]
    subs = [{"email": "ada@example.org", "name": "Ada {{ 7*7 }} <b>bold</b>", "interests": ["diffusion"]}]
    report, sent = deliver(tmp_path, renderer, items, subs)
    assert [d.status for d in report.digests] == ["sent"]
    msg = checked_headers(sent[0])
    text, html = bodies(msg)
    page = Markup()
    page.feed(html)
    visible = " ".join(page.text)
    assert "script" not in page.tags and "img" not in page.tags
    assert "Ada {{ 7*7 }} &lt;b&gt;bold&lt;/b&gt;" in html
    assert not [k for k, _ in page.attrs if k.startswith("on")]
    links = [v for k, v in page.attrs if k in ("href", "src")]
    assert links and all(re.match(r"(https://|mailto:|#$)", v) for v in links), links
    assert "<script>alert(1)</script>" in visible  # shown as text
    assert "&lt;script&gt;" in html
    for part in (text, visible, str(msg["Subject"])):
        assert "49" not in part  # {{ 7*7 }} was never evaluated
        assert "looploop" not in part and "<class" not in part and "ada@example.org }}" not in part
    assert "{{ 7*7 }}" in text and "{{ 7*7 }}" in visible
    assert "{{ view.subscriber_email }}" in " ".join(text.split())  # as written, wrapped at 72 columns


# --- odd but legitimate text ----------------------------------------------------------------------


def test_non_ascii_names_and_titles_arrive_intact(tmp_path: Path, renderer: Renderer) -> None:
    title = "Über Diffusion: 拡散モデル 🚀 für alle — «naïve» Ünïcödé"
    name = "Zoë Ðurić 山田 “Q” O'Brien, Jr."
    items = [paper("2401.00001", title, "Résumé: 拡散モデル の 研究 🚀.", ["Łukasz Kaiser", "山田太郎"])]
    report, sent = deliver(
        tmp_path, renderer, items, [{"email": "zoe@example.org", "name": name, "interests": ["über"]}]
    )
    assert [d.status for d in report.digests] == ["sent"]
    msg = checked_headers(sent[0])
    assert msg["To"].addresses[0].display_name == name
    assert str(msg["Subject"]) == f"1 new paper: {title}"
    text, html = bodies(msg)
    page = Markup()
    page.feed(html)
    for part in (text, " ".join(page.text)):
        assert title in part and name in part and "Łukasz Kaiser" in part and "拡散モデル の 研究 🚀" in part


def test_a_100_kb_abstract_and_a_huge_title_make_a_normal_sized_email(
    tmp_path: Path, renderer: Renderer
) -> None:
    abstract = " ".join(
        f"Sentence {i} about graph neural networks and their long abstracts." for i in range(1700)
    )
    assert len(abstract) > 100_000
    title = "Graph Networks " + "x" * 3000 + " " + "Long title words " * 200
    items = [paper("2401.00001", title, abstract), paper("2401.00002", "Graph Networks two", abstract)]
    report, sent = deliver(
        tmp_path, renderer, items, [{"email": "ada@example.org", "interests": ["graph neural networks"]}]
    )
    assert [d.status for d in report.digests] == ["sent"]
    msg = checked_headers(sent[0])
    text, html = bodies(msg)
    assert len(sent[0]) < 60_000
    assert len(html.encode()) <= HTML_BUDGET
    assert len(text) < 20_000
    assert "Sentence 0 about graph neural networks" in text and "Sentence 1600" not in text
    assert len(str(msg["Subject"])) <= 120


# --- configuration files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "line", "key"),
    [
        (
            "subscribers:\n  - email: a@example.org\n    interests: [x]\n    email: b@example.org\n",
            4,
            "email",
        ),
        (
            "subscribers: []\ndefaults: {}\nsubscribers:\n  - {email: a@example.org, interests: [x]}\n",
            3,
            "subscribers",
        ),
    ],
)
def test_a_duplicate_yaml_key_is_refused_with_file_and_line(
    env: dict[str, str], yaml_text: str, line: int, key: str
) -> None:
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(yaml_text, encoding="utf-8")
    add_dumps(env, seed_names()[0])
    for command in ("check", "run"):
        proc = cli(env, command, check=False)
        assert proc.returncode == 1
        assert f"subscribers.yaml:{line}: invalid YAML: duplicate key '{key}'" in " ".join(
            proc.stderr.split()
        )
    assert not (Path(env["NEWSLETTER_HOME"]) / "outbox").exists()


ESCAPES = [
    ("digest.txt.j2", "{% include '../../../../../../etc/passwd' %}\n"),
    ("digest.txt.j2", "{% include '/etc/passwd' %}\n"),
    ("digest.txt.j2", "{% extends '../outside.txt' %}\n"),
    ("digest.txt.j2", "{% import '../outside.txt' as x %}\n"),
    ("digest.mjml.j2", "<mjml><mj-body><mj-text>{% include '../outside.txt' %}</mj-text></mj-body></mjml>\n"),
    ("digest.mjml.j2", '<mjml><mj-body><mj-include path="../outside.mjml" /></mj-body></mjml>\n'),
    ("digest.mjml.j2", '<mjml><mj-body><mj-include path="/etc/passwd" type="html" /></mj-body></mjml>\n'),
    ("digest.mjml.j2", '<mjml><mj-body><mj-include path="sub/../../outside.mjml" /></mj-body></mjml>\n'),
]


def escaping_override(tmp_path: Path, name: str, source: str) -> Path:
    outside = "<mj-section><mj-column><mj-text>LEAKED</mj-text></mj-column></mj-section>"
    (tmp_path / "outside.mjml").write_text(outside, encoding="utf-8")
    (tmp_path / "outside.txt").write_text("LEAKED\n", encoding="utf-8")
    folder = tmp_path / "templates"
    (folder / "sub").mkdir(parents=True)
    (folder / name).write_text(source, encoding="utf-8")
    return folder


@pytest.mark.parametrize(("name", "source"), ESCAPES)
def test_a_template_override_cannot_reach_outside_its_folder(tmp_path: Path, name: str, source: str) -> None:
    folder = escaping_override(tmp_path, name, source)
    with pytest.raises(RenderError) as caught:
        Renderer(folder)
    assert re.match(rf"(\S*/)?templates/{re.escape(name)}:", str(caught.value)), str(caught.value)
    assert "LEAKED" not in str(caught.value) and "root:" not in str(caught.value)


def test_run_refuses_an_escaping_template_before_sending_anything(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = escaping_override(tmp_path, *ESCAPES[5])
    add_dumps(env, seed_names()[0])
    proc = cli(env, "--templates", str(folder), "run", check=False)
    assert proc.returncode == 1
    assert "digest.mjml.j2" in proc.stderr and "LEAKED" not in proc.stdout + proc.stderr
    assert not (Path(env["NEWSLETTER_HOME"]) / "outbox").exists()


# --- secrets ---------------------------------------------------------------------------------------------

SECRETS = {
    "NEWSLETTER_SMTP_PASSWORD": "smtp-Pa55-5ecret-7f3a",
    "NEWSLETTER_API_KEY": "api-key-5ecret-9c1e",
    "NEWSLETTER_UNSUBSCRIBE_SECRET": "unsub-5ecret-4b2d",
    "NEWSLETTER_UNSUBSCRIBE_SECRET_PREVIOUS": "unsub-0ld-5ecret-8e1f",
}


def leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def state_files(env: dict[str, str]) -> Iterator[tuple[Path, bytes]]:
    for path in Path(env["NEWSLETTER_HOME"]).rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def test_secrets_never_appear_in_output_logs_reports_or_files(env: dict[str, str]) -> None:
    env |= SECRETS | {
        "NEWSLETTER_BASE_URL": "https://papers.example.org",
        "NEWSLETTER_SMTP_USERNAME": "digest",
    }
    add_dumps(env, *seed_names()[:2])
    runs = [
        cli(env, "--debug", "run", "--json", "--now", "2026-03-11T08:00:00Z"),
        cli(env, "--verbose", "status", "--json"),
        cli(env, "--debug", "check"),
        cli(env, "--verbose", "run", "--now", "2026-03-12T08:00:00Z"),
        cli(env, "--debug", "preview", "ssm@example.org"),
        cli(env, "--debug", "--transport", "carrier-pigeon", "run", check=False),  # an error
        cli(env | {"NEWSLETTER_SEND_RATE": "-1"}, "--debug", "run", check=False),  # a settings error
    ]
    assert runs[0].stderr.count("DEBUG") > 0 and "sent" in runs[0].stdout
    assert runs[-2].returncode == 2 and runs[-1].returncode == 1  # a bad flag value, a bad variable
    for proc in runs:
        assert leaks(proc.stdout + proc.stderr) == [], proc.args
    for path, data in state_files(env):
        assert leaks(data.decode("utf-8", "replace")) == [], path


class EchoingAuth:
    """A careless server that quotes the rejected password back in its 535 reply."""

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        password = auth_data.password.decode("utf-8", "replace")
        return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad password {password!r}")


@pytest.fixture
def auth_server() -> Iterator[int]:
    port = free_port()
    controller = Controller(
        object(),
        hostname="127.0.0.1",
        port=port,
        server_hostname="localhost",
        authenticator=EchoingAuth(),
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def test_an_smtp_auth_failure_reports_the_reply_without_the_password(
    env: dict[str, str], auth_server: int
) -> None:
    env |= SECRETS | {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(auth_server),
        "NEWSLETTER_SMTP_USERNAME": "digest",
        "NEWSLETTER_RETRIES": "0",
    }
    add_dumps(env, *seed_names()[:2])
    proc = cli(env, "--debug", "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    report = json.loads(proc.stdout)
    failed = [d for d in report["digests"] if d["status"] == "failed"]
    assert failed and all("535" in d["reason"] and "login" in d["reason"] for d in failed)
    assert "bad password '***'" in failed[0]["reason"]  # the echoed password, masked
    status = cli(env, "--debug", "status", "--json")
    retried = cli(env, "--verbose", "retry", check=False)
    for out in (proc, status, retried):
        assert leaks(out.stdout + out.stderr) == []
    for path, data in state_files(env):
        assert leaks(data.decode("utf-8", "replace")) == [], path


def test_an_http_api_rejecting_the_key_never_shows_it(
    tmp_path: Path, renderer: Renderer, caplog: pytest.LogCaptureFixture
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:  # a 401 that quotes every request header back
        return httpx.Response(401, json={"ErrorCode": 10, "Message": f"bad token: {dict(request.headers)}"})

    key = SecretStr(SECRETS["NEWSLETTER_API_KEY"])
    transport = PostmarkTransport(key, http=httpx.MockTransport(echo), sleep=lambda _s: None)
    caplog.set_level(logging.DEBUG)
    items = [paper("2401.00001", "Diffusion one"), paper("2401.00002", "Diffusion two")]
    subs = [{"email": f"r{i}@example.org", "interests": ["diffusion"]} for i in range(2)]
    report, _ = deliver(tmp_path, renderer, items, subs, transport)
    # the refused key stops the run: the first digest failed, the second waits for the next run
    assert [d.status for d in report.digests] == ["failed", "skipped"]
    assert leaks(json.dumps(report.to_json())) == []
    assert leaks(caplog.text) == []
    with Store(f"sqlite:///{tmp_path / 'state' / 'state.db'}") as store:
        errors = [d.last_error for d in store.deliveries(with_items=False) if d.last_error]
    assert len(errors) == 1 and "refused the API key" in errors[0] and leaks(errors[0]) == []


class QuotingTransport:
    """A transport whose errors quote secrets encoded (SMTP AUTH PLAIN, URL-safe base64): a careless relay."""

    uses_parts = False
    retries_itself = False

    @staticmethod
    def encoded() -> tuple[str, str]:
        plain = base64.b64encode(f"\0digest\0{SECRETS['NEWSLETTER_SMTP_PASSWORD']}".encode()).decode()
        token = base64.urlsafe_b64encode(f"k={SECRETS['NEWSLETTER_UNSUBSCRIBE_SECRET']}".encode()).decode()
        return plain, token

    def send(self, message: OutgoingMessage) -> None:
        plain, token = self.encoded()
        raise SendError(f"550 relay said: AUTH PLAIN {plain} token={token}", permanent=True)

    def __enter__(self) -> QuotingTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_any_transport_error_is_masked_before_it_is_logged_recorded_or_reported(
    tmp_path: Path, renderer: Renderer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = {
        "smtp_username": "digest",
        "smtp_password": SecretStr(SECRETS["NEWSLETTER_SMTP_PASSWORD"]),
        "unsubscribe_secret": SecretStr(SECRETS["NEWSLETTER_UNSUBSCRIBE_SECRET"]),
    }
    items = [paper("2401.00001", "Diffusion one")]
    subs = [{"email": "r0@example.org", "interests": ["diffusion"]}]
    report, _ = deliver(tmp_path, renderer, items, subs, QuotingTransport(), **secrets)
    (digest,) = report.digests
    assert digest.status == "failed" and "relay said: AUTH PLAIN" in digest.reason and "***" in digest.reason
    with Store(f"sqlite:///{tmp_path / 'state' / 'state.db'}") as store:
        (error,) = [d.last_error for d in store.deliveries(with_items=False) if d.last_error]
    plain, token = QuotingTransport.encoded()
    for text in (digest.reason, error, caplog.text):
        # the groups of "<NUL>digest<NUL>" alone stay; the one that mixes in the password's first byte goes
        assert plain[:8] in text and plain[8:-4] not in text and token[8:-4] not in text
