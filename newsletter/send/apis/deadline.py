"""A whole reply within the API timeout: httpx's timeouts bound each read, so a server that sends one
byte every few seconds held a run (and its stop) for as long as it liked.

A response hook, not a transport: a client given a transport of its own no longer reads HTTP(S)_PROXY
from the environment."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx


def within(seconds: float) -> Callable[[httpx.Response], None]:
    """A response hook: the reply's body must arrive within ``seconds`` of its headers (give or take its
    last read), else ReadTimeout (a reply that came too slowly: what a lost connection after the request
    means to the API transports)."""

    def hook(response: httpx.Response) -> None:
        if isinstance(response.stream, httpx.SyncByteStream):  # always, on a sync client
            deadline = time.monotonic() + seconds
            response.stream = _DeadlineStream(response.stream, deadline, response.request)

    return hook


class _DeadlineStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, deadline: float, request: httpx.Request) -> None:
        self.inner, self.deadline, self.request = inner, deadline, request

    def __iter__(self) -> Iterator[bytes]:
        """The chunks; one that came past the deadline is taken if it ends the body (a reply read whole
        is the API's answer: thrown away, a message it accepted would be 'unknown'), not if more follow."""
        read, late = 0, False
        for chunk in self.inner:
            if late:
                why = f"the reply took longer than the timeout ({read} bytes read)"
                raise httpx.ReadTimeout(why, request=self.request)
            read += len(chunk)
            late = time.monotonic() > self.deadline
            yield chunk

    def close(self) -> None:
        self.inner.close()
