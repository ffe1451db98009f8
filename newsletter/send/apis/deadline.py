"""A whole reply within the API timeout: httpx's timeouts bound each read, so a server that sends one
byte every few seconds held a run (and its stop) for as long as it liked."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx


class DeadlineTransport(httpx.BaseTransport):
    """``inner`` whose replies' bodies must arrive within ``seconds`` of their headers, else ReadTimeout
    (a reply that came too slowly: what a lost connection after the request means to the API transports)."""

    def __init__(self, inner: httpx.BaseTransport, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if isinstance(response.stream, httpx.SyncByteStream):  # always, from a sync transport
            response.stream = _DeadlineStream(response.stream, time.monotonic() + self.seconds, request)
        return response

    def close(self) -> None:
        self.inner.close()


class _DeadlineStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, deadline: float, request: httpx.Request) -> None:
        self.inner, self.deadline, self.request = inner, deadline, request

    def __iter__(self) -> Iterator[bytes]:
        read = 0
        for chunk in self.inner:
            read += len(chunk)
            if time.monotonic() > self.deadline:
                why = f"the reply took longer than the timeout ({read} bytes read)"
                raise httpx.ReadTimeout(why, request=self.request)
            yield chunk

    def close(self) -> None:
        self.inner.close()
