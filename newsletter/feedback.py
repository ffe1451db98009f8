""" "More like this" / "less like this": the signed links in each digest and what they name.

A link is ``<base_url>/feedback/<kind>/<token>``, the token sealing the subscriber's address and the
paper's key with the unsubscribe links' signing code (its own purpose, so the two never cross). Both
links of a paper share one token. `newsletter serve` hosts them (GET asks, POST records); the store
keeps the last word per subscriber and paper; the next digest ranks with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from newsletter.address import address_key
from newsletter.unsubscribe import seal, unseal

Kind = Literal["more", "less"]
KINDS: tuple[Kind, ...] = ("more", "less")
_PURPOSE = "feedback"


@dataclass(frozen=True, slots=True)
class FeedbackLinks:
    more: str
    less: str


def feedback_token(email: str, paper_key: str, secret: SecretStr) -> str:
    return seal((address_key(email), paper_key), secret, _PURPOSE)


def read_feedback_token(
    token: str, secret: SecretStr, previous: SecretStr | None = None
) -> tuple[str, str] | None:
    """(email, paper key) of a feedback token, or None when it is forged or malformed (signed with
    ``secret`` or the ``previous`` one)."""
    fields = unseal(token, secret, _PURPOSE, previous)
    if fields is None or len(fields) != 2 or not all(fields):
        return None
    return fields[0], fields[1]


def feedback_links(base_url: str, email: str, paper_key: str, secret: SecretStr) -> FeedbackLinks:
    token = feedback_token(email, paper_key, secret)
    root = f"{base_url.rstrip('/')}/feedback"
    return FeedbackLinks(f"{root}/more/{token}", f"{root}/less/{token}")


def as_kind(value: str) -> Kind | None:
    return next((k for k in KINDS if k == value), None)
