"""The delivery seam."""

from __future__ import annotations

from types import TracebackType
from typing import ClassVar, Protocol

from newsletter.models import OutgoingMessage


class Transport(Protocol):
    """Delivers built messages. ``send`` returns only once the message is accepted.

    It raises SendError otherwise, with ``permanent`` set when retrying cannot help and ``unknown``
    set when the message may have been accepted. A transport is a context manager so a run can
    reuse one connection for every message.
    """

    # False when only ``message.raw`` is read: a run's builder process then leaves the HTML and text
    # copies out of what it hands over (about half the bytes, and the time to pickle them).
    uses_parts: ClassVar[bool]
    # True when ``send`` already retries temporary failures (the HTTP APIs, with NEWSLETTER_RETRIES and
    # NEWSLETTER_RETRY_BACKOFF): the courier then does not retry them again, which would multiply attempts.
    retries_itself: ClassVar[bool]

    def send(self, message: OutgoingMessage) -> None: ...

    def __enter__(self) -> Transport: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
