"""A subscriber's digest as an email: the view (with the signed unsubscribe and feedback links), its HTML
and text from the templates, and the MIME message with its headers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from newsletter.config import Settings
from newsletter.feedback import FeedbackLinks, feedback_links
from newsletter.models import OutgoingMessage, Scored, StoredPaper, Subscriber
from newsletter.render import DigestView, Renderer
from newsletter.render.cards import item_view
from newsletter.report import Timings
from newsletter.send.message import build_message, envelope_for, list_name, parse_sender
from newsletter.unsubscribe import mailto_url, one_click_url


class Composer:
    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        self.settings = settings
        self.renderer = renderer
        self._sender_address = parse_sender(settings.sender)[1]  # refused before anything runs
        self._list_name = list_name(settings.sender)

    def view(
        self,
        subscriber: Subscriber,
        items: Sequence[Scored],
        date: datetime,
        unsubscribe_urls: tuple[str, str | None] | None = None,
    ) -> DigestView:
        shown_url = (unsubscribe_urls or self._unsubscribe_urls(subscriber.email))[0]
        return DigestView(
            subscriber_name=subscriber.name,
            subscriber_email=subscriber.email,
            items=tuple(item_view(s, self._feedback_links(subscriber.email, s.paper)) for s in items),
            date=date.astimezone(subscriber.tz),  # the subscriber's calendar day
            unsubscribe_url=shown_url,
            preferences_note=f"You get this because {subscriber.email} subscribed to this list.",
            list_name=self._list_name,
        )

    def message(
        self,
        subscriber: Subscriber,
        items: Sequence[Scored],
        digest_id: str,
        date: datetime,
        timings: Timings,
        *,
        body: bool = True,
        sent_at: datetime | None = None,
        message_id: str | None = None,
    ) -> OutgoingMessage:
        """The digest of ``date`` (its heading); its Date header says ``sent_at`` (default: ``date``), its
        Message-ID ``message_id`` (an earlier try's; default: made from the digest id)."""
        urls = self._unsubscribe_urls(subscriber.email)
        with timings("render"):
            rendered = self.renderer.render(self.view(subscriber, items, date, urls))
        envelope = envelope_for(self.settings, subscriber.email, urls[1])
        with timings("mime"):
            return build_message(
                digest_id=digest_id,
                envelope=envelope,
                to_name=subscriber.name,
                to_addr=subscriber.email,
                rendered=rendered,
                date=sent_at or date,
                body=body,
                made_at=date,
                message_id=message_id,
            )

    def _unsubscribe_urls(self, email: str) -> tuple[str, str | None]:
        """(link shown in the email, https one-click URL or None)."""
        mailto = mailto_url(self._sender_address, email)
        secret, base = self.settings.unsubscribe_secret, self.settings.base_url
        https = one_click_url(base, email, secret) if base and secret else None
        return (https or mailto), https

    def _feedback_links(self, email: str, paper: StoredPaper) -> FeedbackLinks | None:
        """The paper's signed "more/less like this" links, when links can be signed and served."""
        secret, base = self.settings.unsubscribe_secret, self.settings.base_url
        return feedback_links(base, email, paper.key, secret) if base and secret else None
