"""Routes: the preview pages, the RFC 8058 one-click unsubscribe endpoint and the feedback links."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from urllib.parse import quote, unquote, urlencode, urlsplit

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.address import is_loopback
from newsletter.app import utcnow
from newsletter.config import Settings
from newsletter.deliver.held import Click, anything_held, hold, record_click, record_held
from newsletter.errors import ConfigError, NewsletterError, RenderError, SourceError, StoreError
from newsletter.feedback import as_kind, read_feedback_token
from newsletter.models import UNRANKED, StoredPaper
from newsletter.send.message import DEFAULT_LIST_NAME, list_name
from newsletter.serve.key import PreviewKey, cookie_name, preview_key
from newsletter.serve.pages import PAGE_HEADERS, page
from newsletter.serve.preview import GMAIL_CLIP_BYTES, HeldEntry, Page, Previewer, UnknownSubscriber
from newsletter.store.records import SubscriberState
from newsletter.unsubscribe import read_token

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})  # as Host headers carry them

# The digest as sent, framed by the subscriber page: its inline styles may apply, nothing else may load.
DIGEST_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
HELD_RETRY = 60.0  # seconds between serve's tries to record the clicks it held (see held.py)
PREVIEW_THREADS = 2  # previews computed at once (the Previewer does one at a time; one more waits ready)
ERROR_TITLES: tuple[tuple[type[NewsletterError], str], ...] = (
    (RenderError, "Template error"),
    (UnknownSubscriber, "No such subscriber"),
    (HeldEntry, "Held: entry has a problem"),
    (ConfigError, "Configuration error"),
    (StoreError, "State database error"),
    (SourceError, "Dump error"),
)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    allowed_hosts: Sequence[str] | None = None,
    preview_hosts: Sequence[str] | None = None,
    open_hosts: Sequence[str] = (),
    new_database: bool = False,
    key: PreviewKey | None = None,
) -> Starlette:
    """The preview + unsubscribe app. ``allowed_hosts`` (Host header check) guards against DNS rebinding;
    ``preview_hosts``, when given, are the only names the preview pages answer (404 on the others: the
    public name gets only the emails' links), a loopback name to a client on this machine only, unless
    it is one of ``open_hosts`` (named by the operator: `--allow-host`). Past those, the preview pages
    ask for ``key`` (default: ``preview_key(settings)``); the emails' links never do."""
    previewer = Previewer(settings, clock, new_database=new_database)
    key = key or preview_key(settings)
    peer_checked = LOOPBACK_NAMES - frozenset(open_hosts)
    views = _Views(settings, previewer, clock, preview_hosts, peer_checked, key=key)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(views.keep_taking_held)  # with no run on this machine to take them
            yield
            tasks.cancel_scope.cancel()
        previewer.close()

    routes = [  # the emails' links first, at the base URL's path too (which may be /s, say)
        route
        for prefix in {"", _path_of(settings.base_url)}
        for route in (
            # {token:path}: a mail client's trailing "/" is the token's to drop (unsubscribe.unseal)
            Route(prefix + "/unsubscribe/{token:path}", views.unsubscribe, methods=["GET", "POST"]),
            Route(prefix + "/feedback/{kind}/{token:path}", views.feedback, methods=["GET", "POST"]),
        )
    ]
    routes += [
        Route("/", views.index),
        Route("/s/{email:path}/html", views.html),  # an address may hold '/': its parts come first
        Route("/s/{email:path}/text", views.text),
        Route("/s/{email:path}/last", views.last),
        Route("/s/{email:path}", views.subscriber),
    ]
    middleware = (
        [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] if allowed_hosts else []
    )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={NewsletterError: _error_page},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a redirect would lose a reverse proxy's path prefix
    app.state.previewer = previewer
    app.state.preview_key = key
    app.state.public_paths = tuple(
        p + public for p in {"", _path_of(settings.base_url)} for public in PUBLIC_PATHS
    )
    return app


def _path_of(base_url: str | None) -> str:
    """The path of NEWSLETTER_BASE_URL ("/nl" of https://example.org/nl/): a proxy may pass it on."""
    return unquote(urlsplit(base_url).path).rstrip("/") if base_url else ""  # routes match decoded paths


def _never_sent(state: SubscriberState | None) -> bool:
    """No digest recorded for the address: none, or only the unsubscribe an old email's link recorded
    after `forget` (a mail client's one-click unsubscribe; its feedback links then recorded again)."""
    return state is None or (state.watermark_seq is None and state.last_digest_at is None)


class _Views:
    """Preview pages run on PREVIEW_THREADS threads of their own, so however many are queued, the
    unsubscribe endpoint (on Starlette's shared thread pool) is answered at once."""

    def __init__(
        self,
        settings: Settings,
        previewer: Previewer,
        clock: Callable[[], datetime],
        preview_hosts: Sequence[str] | None,
        peer_checked: frozenset[str] = LOOPBACK_NAMES,
        *,
        key: PreviewKey,
    ) -> None:
        self.settings = settings
        self.previewer = previewer
        self.clock = clock
        self.preview_hosts = None if preview_hosts is None else frozenset(preview_hosts)
        self.peer_checked = peer_checked  # names that count from a loopback peer only
        self.key = key  # asked for past the Host and proxy checks
        self._refused_peer = False  # said once in the log why such a name got 404
        self._previews: anyio.CapacityLimiter | None = None  # made in the server's event loop

    async def _preview(self, build: Callable[[Request], Response], request: Request) -> Response:
        if not self._may_preview(request):  # not the emails' links: every subscriber's address is here
            return PlainTextResponse("Not Found", status_code=404)
        refused = self._unkeyed(request)
        if refused is not None:
            return refused
        if self._previews is None:
            self._previews = anyio.CapacityLimiter(PREVIEW_THREADS)
        return await anyio.to_thread.run_sync(build, request, limiter=self._previews)

    def _may_preview(self, request: Request) -> bool:
        """Asked for by a local name, not through a proxy: nginx and Apache pass the Host they connect
        to (127.0.0.1:8000) unless told otherwise, so a forwarding header means the public side. A
        loopback name counts from this machine only: any client can write one in its Host header."""
        if self.preview_hosts is None:
            return True
        if any(name in request.headers for name in FORWARDED_HEADERS):
            return False
        if request.scope.get("http_version") == "1.0":  # nginx's proxy_pass by default; no browser now
            return False
        name = host_name(request.headers.get("host", ""))
        if name not in self.preview_hosts:
            return False
        peer = request.client.host if request.client else ""
        if name not in self.peer_checked or is_loopback(peer):
            return True
        if not self._refused_peer:  # a container's or VM's forwarded port, say: the peer is its gateway
            self._refused_peer = True
            log.warning(
                "preview pages asked for as %s by %s: 404 (a loopback name counts from this machine only; "
                "naming it with --allow-host opens every subscriber's address to whoever reaches it)",
                name,
                peer or "an unknown peer",
            )
        return False

    def _unkeyed(self, request: Request) -> Response | None:
        """None for a request with the key's cookie; for ``?key=K``, a redirect to the same URL without
        it (out of the history and any Referer) that sets the cookie; else 403 and how to get in. Any of
        several ``key`` values will do, and a stale one beside the cookie is no refusal."""
        if any(self.key.matches(given) for given in request.query_params.getlist("key")):
            return _let_in(request, self.key)
        if self.key.matches(request.cookies.get(cookie_name(request.url.port))):
            return None
        return page("locked.html", 403, where=self.key.where)

    async def index(self, request: Request) -> Response:
        return await self._preview(self._index, request)

    async def subscriber(self, request: Request) -> Response:
        return await self._preview(self._subscriber, request)

    async def html(self, request: Request) -> Response:
        return await self._preview(self._html, request)

    async def text(self, request: Request) -> Response:
        return await self._preview(self._text, request)

    async def last(self, request: Request) -> Response:
        return await self._preview(self._last, request)

    # -- preview ------------------------------------------------------------------------------------

    def _index(self, request: Request) -> Response:
        index = self.previewer.index()
        return page("index.html", index=index, settings=self.settings, unsubscribe_on=self._unsubscribe_on)

    def _subscriber(self, request: Request) -> Response:
        preview = self.previewer.page(request.path_params["email"])
        width = _width(request.query_params.get("width"))
        return page(
            "subscriber.html",
            p=preview,
            clip=GMAIL_CLIP_BYTES,
            width=width,
            now=self.previewer.clock(),
            unranked=UNRANKED,
        )

    def _html(self, request: Request) -> Response:
        preview = self.previewer.page(request.path_params["email"])
        if preview.draft is None:
            return _no_digest(preview)
        headers = {**PAGE_HEADERS, "Content-Security-Policy": DIGEST_CSP}
        return HTMLResponse(preview.draft.html, headers=headers)

    def _text(self, request: Request) -> Response:
        preview = self.previewer.page(request.path_params["email"])
        if preview.draft is None:
            return _no_digest(preview)
        return PlainTextResponse(preview.draft.text, headers=PAGE_HEADERS)

    def _last(self, request: Request) -> Response:
        address = request.path_params["email"]
        draft = self.previewer.last(address)
        if draft is None:
            error = NewsletterError(f"no digest has been sent to {address} yet")
            return page("error.html", 404, title="No digest sent yet", error=error)
        headers = {**PAGE_HEADERS, "Content-Security-Policy": DIGEST_CSP}
        return HTMLResponse(draft.html, headers=headers)

    # -- unsubscribe (RFC 8058) ---------------------------------------------------------------------

    @property
    def _unsubscribe_on(self) -> bool:
        return self.settings.unsubscribe_secret is not None

    def unsubscribe(self, request: Request) -> Response:
        """GET: a confirmation form. POST (a mail client's one-click or the form): record it, idempotently.

        No CSRF token: mail clients post directly, and the signed token in the URL is the authority.
        """
        secret = self.settings.unsubscribe_secret
        if secret is None:
            return page("unsubscribe.html", 404, state="off", email="", list_name=self._list_name)
        email = read_token(request.path_params["token"], secret, self.settings.unsubscribe_secret_previous)
        if email is None:
            log.warning("refused an unsubscribe request with an invalid token")
            return page("unsubscribe.html", 400, state="invalid", email="", list_name=self._list_name)
        if request.method == "POST":
            self._take(Click("unsubscribe", email, self.clock()))
            return page("unsubscribe.html", state="done", email=email, list_name=self._list_name)
        state = "already" if self._unsubscribed(email) else "confirm"
        return page("unsubscribe.html", state=state, email=email, list_name=self._list_name)

    def _unsubscribed(self, email: str) -> bool:
        """Whether the address is unsubscribed; with the database unavailable, taken as not: the form's
        POST is held like any click, where "try again" would lose a reader who does not come back."""
        try:
            return self.previewer.store().is_unsubscribed(email)
        except StoreError as exc:
            log.warning("the unsubscribe page is shown without looking at the database: %s", exc)
            return False

    # -- "more / less like this" ---------------------------------------------------------------------

    def feedback(self, request: Request) -> Response:
        """GET: one button, records nothing (mail scanners fetch links). POST: record it (idempotent)."""
        secret, kind = self.settings.unsubscribe_secret, as_kind(request.path_params["kind"])
        if secret is None:
            return self._feedback_page("off", 404)
        signed = read_feedback_token(
            request.path_params["token"], secret, self.settings.unsubscribe_secret_previous
        )
        if signed is None or kind is None:
            log.warning("refused a feedback request with an invalid link")
            return self._feedback_page("invalid", 400)
        email, key = signed
        if self._forgotten(email):  # not logged: the address asked to be forgotten
            return self._feedback_page("gone", 410)
        posted = request.method == "POST"
        if posted:
            recorded, paper = self._take(Click(kind, email, self.clock(), key))
            if not recorded:
                return self._feedback_page("held", 200, kind=kind, email=email)
        else:
            paper = self.previewer.store().paper_by_key(key)
        store = self.previewer.store()
        if paper is None:
            return self._feedback_page("unknown", 404)
        current = next((f.kind for f in store.feedback(email) if f.paper.id == paper.id), None)
        state, unsubscribed = "done" if posted else "confirm", store.is_unsubscribed(email)
        context = {
            "kind": kind,
            "email": email,
            "paper": paper,
            "current": current,
            "unsubscribed": unsubscribed,
        }
        return self._feedback_page(state, 200, **context)

    def _forgotten(self, email: str) -> bool:
        """Whether the list knows nothing of the address, out of the subscribers file and the database
        (`forget` erased it): a link of an old digest then records nothing of it again. Not when either
        cannot be read: the click is taken (or held) as any."""
        try:
            listed = self.previewer.listed(email)
            return not listed and _never_sent(self.previewer.store().subscriber_state(email))
        except NewsletterError:
            return False

    async def keep_taking_held(self) -> None:
        """Every HELD_RETRY seconds, record the clicks held while the database could not take them."""
        while True:
            await anyio.sleep(HELD_RETRY)
            if anything_held(self.settings.home):
                await anyio.to_thread.run_sync(self._take_held)

    def _take_held(self, *, wait: bool = True) -> None:
        try:
            record_held(self.settings.home, self.previewer.store(), wait=wait)
        except StoreError as exc:
            log.warning("held clicks wait for the database: %s", exc)

    def _take(self, click: Click) -> tuple[bool, StoredPaper | None]:
        """Record a click (True, and what ``record_click`` returns), or hold it in the state folder when
        the database cannot take it now (False): the reader is answered either way, nothing is lost.

        The clicks held earlier are taken after it, and only if no one else is at it: taken first, each
        click waited out the database's busy timeout twice, and behind every other click, in turn (six
        at once on a locked database took up to 70 s). A held click older than one recorded since changes
        nothing (see ``record_click``), so the order does not matter."""
        try:
            recorded = record_click(self.previewer.store(), click)
        except StoreError as exc:
            log.error("the database cannot take a click now: %s", exc)
            hold(self.settings.home, click)
            return False, None
        self._take_held(wait=False)
        return True, recorded

    def _feedback_page(self, state: str, status: int, **context: object) -> Response:
        context = {
            "kind": "more",
            "email": "",
            "paper": None,
            "current": None,
            "unsubscribed": False,
            **context,
        }
        return page("feedback.html", status, state=state, list_name=self._list_name, **context)

    @property
    def _list_name(self) -> str:
        try:
            return list_name(self.settings.sender)  # as the emails name it
        except ConfigError:  # `run` says why; a page still names the list
            return DEFAULT_LIST_NAME


def _let_in(request: Request, key: PreviewKey) -> Response:
    """303 to the URL asked for without ``key``, setting the cookie that stands for it from then on."""
    raw_path = request.scope.get("raw_path")  # the address as sent: a '/' in it stays %2F
    path = raw_path.decode("latin-1") if raw_path else quote(request.url.path)
    kept = [(name, value) for name, value in request.query_params.multi_items() if name != "key"]
    location = f"{path}?{urlencode(kept)}" if kept else path
    response = RedirectResponse(location, 303, headers=PAGE_HEADERS)
    secure = request.url.scheme == "https"
    name = cookie_name(request.url.port)
    response.set_cookie(name, key.value, path="/", httponly=True, samesite="strict", secure=secure)
    return response


def _width(value: str | None) -> int:
    return int(value) if value in ("375", "600", "800") else 800


def _no_digest(preview: Page) -> Response:
    return page("no_digest.html", 404, p=preview)


# Any header a proxy adds: a snippet that sets only X-Forwarded-Proto (with nginx's default Host,
# 127.0.0.1:8000) published every preview, and so did a CDN's or tunnel's own header alone.
FORWARDED_HEADERS = (
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-real-ip",
    "x-scheme",
    "front-end-https",
    "via",
    "cf-connecting-ip",
    "true-client-ip",
    "x-client-ip",
)


def host_name(header: str) -> str:
    """The name in a Host header, lower-cased, without its port ("[::1]:8000" -> "[::1]")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.split(":", 1)[0]


def _error_status(exc: NewsletterError) -> int:
    """404: no such entry; 409: the entry is there but held for its problem (the file, not the server, is
    wrong; the index says so too, so it is no error for the log); 500: anything else."""
    if isinstance(exc, UnknownSubscriber):
        return 404
    return 409 if isinstance(exc, HeldEntry) else 500


PUBLIC_PATHS = ("/unsubscribe/", "/feedback/")  # the links in the emails: anyone may open them


async def _error_page(request: Request, exc: Exception) -> Response:
    """A NewsletterError as a page: what went wrong (file:line for templates) and the hint, no traceback.

    On the public links' paths the reader sees only "try again" (503, Retry-After) and the operator's
    log gets the problem: a busy or broken store is not the reader's business, nor its file paths.
    """
    assert isinstance(exc, NewsletterError)
    title = next((t for cls, t in ERROR_TITLES if isinstance(exc, cls)), "Error")
    status = _error_status(exc)
    if status == 500:
        log.error("%s: %s", title, exc.message)
    if request.url.path.startswith(request.app.state.public_paths):
        response = page("busy.html", 503)
        response.headers["Retry-After"] = "60"
        return response
    return page("error.html", status, title=title, error=exc)
