"""One exception tree, so the CLI can print a one-line error a person can act on.

Every error carries a message and an optional hint. Library errors are wrapped once, at the backend
that raised them (``raise SendError(...) from exc``). Messages never contain secrets.
"""

from __future__ import annotations

from collections.abc import Sequence


class NewsletterError(Exception):
    """Root of every error this package raises on purpose."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.also: Sequence[NewsletterError] = ()  # more problems found with this one (`check` lists them)

    def __str__(self) -> str:
        return self.message


class ConfigError(NewsletterError):
    """Settings or subscribers file is invalid."""


class UsageError(ConfigError):
    """A bad value on the command line (a flag or an argument): the CLI exits with status 2."""


class StdoutError(NewsletterError):
    """stdout cannot take what a command prints (a full disk under cron's `>> run.log`)."""


class SourceError(NewsletterError):
    """A dump could not be read or fetched."""


class ParseError(SourceError):
    """A dump is malformed. The message names the file and line."""

    def __init__(self, source: str, line: int | None, problem: str, hint: str | None = None) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{problem} ({where})", hint)
        self.source = source
        self.line = line
        self.problem = problem


class StoreError(NewsletterError):
    """The state database is unusable, or another run holds its lock."""


class LockedError(StoreError):
    """Another run holds the state folder's lock."""


class RankError(NewsletterError):
    """A ranker could not score papers (e.g. its model is not installed)."""


class RenderError(NewsletterError):
    """A template failed to compile or render. The message names the template and line."""


class SendError(NewsletterError):
    """A transport could not deliver a message.

    ``permanent`` is True when retrying cannot help (SMTP 5xx, an API's 4xx other than 429);
    ``unknown`` is True when the message may or may not have been accepted (connection lost after
    the body was sent); ``transport_down`` is True when nothing can be sent now (server unreachable,
    login refused), so a run should stop and leave the rest queued instead of failing each message.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        permanent: bool = False,
        unknown: bool = False,
        retry_after: float | None = None,
        transport_down: bool = False,
        policy: bool = False,
        mailbox: bool = False,
        gone: bool = False,
        stalled: bool = False,
        refused: bool = False,
    ) -> None:
        super().__init__(message, hint)
        self.permanent = permanent
        self.unknown = unknown
        self.retry_after = retry_after
        self.transport_down = transport_down
        self.policy = policy  # refused whoever the recipient (SMTP 530, 554, 5.7.x): the server's doing
        self.mailbox = mailbox  # the reply blames this recipient (x.1.x address, x.2.1-4 full or disabled)
        self.gone = gone  # and says its mailbox is not there or disabled: the next digest fares no better
        self.refused = refused  # a reply refused this message (not the server's trouble: a 5xx, a stall)
        self.stalled = (
            stalled  # no reply within the timeout: tried again next run, not at once (each try waits it out)
        )


class SendStopped(SendError):
    """Not sent: the run was asked to stop (a signal) while the message waited for its next try (a
    rate limit, a refusal). It is due again at once, as if the wait had not begun."""


class ConnectionRefused(SendError):
    """The server would not open a connection (refused, or a 421 greeting): nothing can be sent over
    it, though another connection may work (a server limiting connections per client)."""
