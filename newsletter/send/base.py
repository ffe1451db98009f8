"""The delivery seam."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from newsletter.models import OutgoingMessage


class Transport(Protocol):
    """Delivers built messages. ``send`` returns only once the message is accepted.

    It raises SendError otherwise, with ``permanent`` set when retrying cannot help and ``unknown``
    set when the message may have been accepted. A transport is a context manager so a run can
    reuse one connection for every message.
    """

    def send(self, message: OutgoingMessage) -> None: ...

    def __enter__(self) -> Transport: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
